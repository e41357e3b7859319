"""The project's exceptions. Every user mistake raises one of these with a message that
says what went wrong, where, and what to do about it."""


class MambaflowError(Exception):
    """Base class of every error mambaflow raises for bad input or a missing tool."""


class CheckpointError(MambaflowError):
    """A checkpoint is missing keys, has extra or mis-shaped ones, or is truncated."""


class UnsupportedOpError(MambaflowError):
    """The model uses an operator the flow cannot lower."""


class LoweringError(MambaflowError):
    """An MLIR pass pipeline failed on the captured IR."""


class ScheduleError(MambaflowError):
    """A schedule primitive was rejected; the IR is left exactly as before."""
