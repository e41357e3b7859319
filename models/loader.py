"""Load and save checkpoints: a directory with config.json plus model.safetensors (single
or sharded with an index json) or pytorch_model.bin, in Hugging Face or original mamba_ssm
naming. Every problem raises CheckpointError naming the file or key and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from mambaflow.errors import CheckpointError

from .config import MambaConfig, config_from_hf, config_to_hf, pad_vocab_size, param_shapes

EMBED = "backbone.embeddings.weight"
LM_HEAD = "lm_head.weight"
# mamba_ssm's names that differ from HF's.
_MAMBA_SSM_NAMES = {"backbone.embedding.weight": EMBED}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def load_checkpoint(path) -> nn.Module:
    """The float32 model stored in directory ``path`` (see the module docstring)."""
    from . import build_model  # the package imports this module, so import late

    path = Path(path)
    cfg = _read_config(path)
    weights = _hf_names(_read_weights(path))
    weights = _pad_and_tie(weights, cfg, path)
    _check_keys(weights, cfg, path)
    # Build without allocating or initializing, then adopt the loaded tensors.
    with torch.device("meta"):
        model = build_model(cfg)
    weights[LM_HEAD] = weights[EMBED]
    model.load_state_dict(weights, strict=True, assign=True)
    model.lm_head.weight = model.backbone.embeddings.weight
    return model


def load_model(path) -> nn.Module:
    """The float32 model in checkpoint folder ``path``, Mamba or transformer, by the
    model_type of its config.json: mamba / mamba2 through ``load_checkpoint``, gpt2 /
    llama through transformers (models.transformer); any other architecture is refused
    with a CheckpointError naming it and the supported ones."""
    from .transformer import ARCHS, check_supported, load_transformer, model_type

    kind = model_type(path)
    if kind in ARCHS:
        return load_transformer(path)
    if kind is not None:
        check_supported(path, kind)
    return load_checkpoint(path)


def save_checkpoint(model: nn.Module, path, byte_level: bool = False) -> Path:
    """Write ``model`` as an HF checkpoint: config.json (with model_type) and
    model.safetensors; the tied lm_head.weight is omitted, as HF does. ``byte_level``
    marks a model trained on mambaflow.data's byte tokens (config_to_hf)."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, MambaConfig):
        raise CheckpointError(
            f"save_checkpoint: {type(model).__name__} has no MambaConfig in .config; pass a "
            "model made by build_model or load_checkpoint."
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, byte_level), indent=2, sort_keys=True) + "\n")
    tensors = {k: v.detach().cpu().contiguous()
               for k, v in model.state_dict().items() if k != LM_HEAD}
    safetensors.torch.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _read_config(path: Path) -> MambaConfig:
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is not a directory; pass the folder holding config.json and "
            "the weights."
        )
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint {path} has no config.json; copy the model's config.json next to "
            "the weights (save_checkpoint writes one)."
        )
    try:
        d = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); re-save or copy it again.") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{file} holds a JSON {type(d).__name__}, not a config object; re-save it.")
    try:
        return config_from_hf(d)
    except (TypeError, ValueError) as e:  # a value of the wrong type (a string vocab_size, ...)
        raise CheckpointError(f"{file} has a value of the wrong type ({e}); fix it or re-save the checkpoint.") from e


def _read_weights(path: Path) -> dict[str, Tensor]:
    for name in _WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return _read_file(file)
        try:
            weight_map = json.loads(file.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{file} is not a shard index with a 'weight_map' ({e}); re-save the checkpoint."
            ) from e
        weights = {}
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(
                    f"shard {path / shard} listed in {file} is missing; copy all shards."
                )
            weights.update(_read_file(path / shard))
        return weights
    raise CheckpointError(
        f"checkpoint {path} has no weights: expected one of {', '.join(_WEIGHT_FILES)}."
    )


def _read_file(file: Path) -> dict[str, Tensor]:
    try:
        if file.suffix == ".safetensors":
            weights = safetensors.torch.load_file(file)
        else:
            weights = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # each library has its own error types for a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read weights from {file}: the file is truncated or corrupt ({reason}); "
            "re-save the checkpoint or copy the file again."
        ) from e
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise CheckpointError(
            f"{file} does not hold a flat state_dict of tensors; save model.state_dict()."
        )
    return weights


def _hf_names(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in weights.items():
        name = _MAMBA_SSM_NAMES.get(key, key)
        if name in out:
            raise CheckpointError(
                f"checkpoint holds both {key} and another tensor for {name}; keep only one."
            )
        out[name] = value.to(torch.float32)
    return out


def _pad_and_tie(weights: dict[str, Tensor], cfg: MambaConfig, path: Path) -> dict[str, Tensor]:
    """Pad an unpadded vocabulary with zero rows (the size mamba_ssm would build) and
    drop lm_head.weight, which must equal the embedding it is tied to."""
    for key in (EMBED, LM_HEAD):
        t = weights.get(key)
        if t is not None and t.dim() == 2 and t.shape[0] < cfg.vocab_size == pad_vocab_size(
                t.shape[0], cfg.pad_vocab_multiple):
            weights[key] = torch.cat([t, t.new_zeros(cfg.vocab_size - t.shape[0], t.shape[1])])
    head = weights.pop(LM_HEAD, None)
    emb = weights.get(EMBED)
    if head is not None and emb is not None and not (
            head.shape == emb.shape and torch.equal(head, emb)):
        raise CheckpointError(
            f"checkpoint {path}: {LM_HEAD} differs from {EMBED}; this model has an untied LM "
            "head, which mambaflow does not support (its models tie them as mamba_ssm does)."
        )
    return weights


def _check_keys(weights: dict[str, Tensor], cfg: MambaConfig, path: Path):
    expected = param_shapes(cfg)
    problems = [f"missing key {k} (expected shape {s})"
                for k, s in expected.items() if k not in weights]
    problems += [f"unexpected key {k} (shape {tuple(v.shape)})"
                 for k, v in weights.items() if k not in expected]
    problems += [f"key {k} has shape {tuple(v.shape)}, expected {expected[k]}"
                 for k, v in weights.items() if k in expected and tuple(v.shape) != expected[k]]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CheckpointError(
            f"checkpoint {path} does not match its config.json ({cfg.arch}, d_model "
            f"{cfg.d_model}, n_layer {cfg.n_layer}, vocab {cfg.vocab_size}):\n  "
            + "\n  ".join(shown)
            + "\nCheck that config.json belongs to these weights."
        )
