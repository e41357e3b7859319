"""mambaflow: an MLIR-based accelerator flow for Mamba state-space language models."""

from .errors import MambaflowError

__all__ = ["MambaflowError"]
