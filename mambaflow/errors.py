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


# The exit codes of the `mambaflow` command (README, "Exit codes").
EXIT_OK = 0           # everything asked for ran and passed
EXIT_CHECK = 1        # a check failed: llvm vs torch, csim vs PyTorch, the resource fit, a vendor step
EXIT_USAGE = 2        # a usage or input error: a bad flag, model, checkpoint, schedule or directory
EXIT_TOOLS = 3        # everything possible was done; the vendor tools (vitis_hls, v++) are missing
EXIT_INTERNAL = 4     # a bug in mambaflow (MAMBAFLOW_DEBUG=1 shows its traceback)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
