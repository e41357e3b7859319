"""mambaflow: an MLIR-based accelerator flow for Mamba state-space language models."""

from .errors import MambaflowError
from .schedules import customize  # noqa: E402  (the schedule language)

__all__ = ["MambaflowError"]
