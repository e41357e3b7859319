"""Plain-PyTorch Mamba1 / Mamba2 language models: the numerical oracle of mambaflow.

Each model has three phases on one set of weights: ``prefill``, ``decode`` and tree
``verify``; ``state_dict()`` uses Hugging Face parameter names."""

from mambaflow.errors import MambaflowError

from .common import MambaState, NodeStates, tree_conv_windows
from .config import (PRESETS, MambaConfig, config_from_hf, config_to_hf, get_config,
                     num_params, pad_vocab_size, param_shapes)
from .mamba1 import Mamba1LM
from .mamba2 import Mamba2LM


def build_model(cfg: MambaConfig):
    """A randomly initialized (mamba_ssm init; seed with torch.manual_seed) model."""
    if not isinstance(cfg, MambaConfig):
        raise MambaflowError(
            f"build_model needs a MambaConfig, got {type(cfg).__name__}; use "
            "get_config(name) or config_from_hf(dict)."
        )
    return Mamba1LM(cfg) if cfg.arch == "mamba1" else Mamba2LM(cfg)


from .loader import load_checkpoint, load_model, save_checkpoint  # noqa: E402  (loader uses build_model)

__all__ = [
    "PRESETS", "MambaConfig", "MambaState", "NodeStates", "Mamba1LM", "Mamba2LM",
    "build_model", "config_from_hf", "config_to_hf", "get_config", "load_checkpoint", "load_model",
    "num_params", "pad_vocab_size", "param_shapes", "save_checkpoint", "tree_conv_windows",
]
