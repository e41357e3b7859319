"""Model configuration: one frozen dataclass for Mamba1 and Mamba2, the published
presets, parameter shapes computed from a config alone, and conversion from and to
Hugging Face / mamba_ssm config.json dictionaries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from mambaflow.errors import CheckpointError, MambaflowError

ARCHS = ("mamba1", "mamba2")
_DEFAULT_PAD = {"mamba1": 8, "mamba2": 16}


def pad_vocab_size(vocab_size: int, multiple: int) -> int:
    """Round the vocabulary up to a multiple, as mamba_ssm does when it builds a model."""
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class MambaConfig:
    """Sizes and options of a Mamba1 or Mamba2 language model.

    ``vocab_size`` is the embedding's row count (already padded). ``dt_rank`` may be
    given as "auto" and is resolved to ceil(d_model / 16) at construction;
    ``pad_vocab_multiple`` defaults to 8 (mamba1) or 16 (mamba2). ``headdim``,
    ``ngroups``, ``chunk_size`` and ``time_step_limit`` only matter for mamba2, ``dt_rank``
    only for mamba1. ``dt_min``, ``dt_max``, ``dt_init_floor`` only shape random init.
    """

    arch: str
    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    rms_eps: float = 1e-5
    pad_vocab_multiple: int | None = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    time_step_limit: tuple[float, float] = field(default=(0.0, math.inf))

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise MambaflowError(
                f"MambaConfig: unknown arch {self.arch!r}; use one of {', '.join(ARCHS)}."
            )
        # Frozen dataclass: resolved defaults are written once, here.
        object.__setattr__(self, "dt_rank", _resolve_dt_rank(self.dt_rank, self.d_model))
        if self.pad_vocab_multiple is None:
            object.__setattr__(self, "pad_vocab_multiple", _DEFAULT_PAD[self.arch])
        object.__setattr__(self, "time_step_limit", tuple(float(v) for v in self.time_step_limit))
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "headdim", "ngroups", "chunk_size", "dt_rank", "pad_vocab_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MambaflowError(
                    f"MambaConfig: {name} must be a positive integer, got {value!r}."
                )
        if self.arch == "mamba2":
            if self.d_inner % self.headdim:
                raise MambaflowError(
                    f"MambaConfig: d_inner = expand*d_model = {self.d_inner} is not a multiple "
                    f"of headdim {self.headdim}; choose a headdim that divides it."
                )
            if self.nheads % self.ngroups:
                raise MambaflowError(
                    f"MambaConfig: {self.nheads} heads cannot be split into ngroups="
                    f"{self.ngroups} equal groups; choose ngroups dividing the head count."
                )

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        """Mamba2 head count H = d_inner / headdim."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv (and rows of the conv state)."""
        if self.arch == "mamba1":
            return self.d_inner
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def in_proj_out(self) -> int:
        """Output width of in_proj: [x; z] (mamba1) or [z | xBC | dt] (mamba2)."""
        if self.arch == "mamba1":
            return 2 * self.d_inner
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    def ssm_state_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of one layer's SSM state."""
        if self.arch == "mamba1":
            return (batch, self.d_inner, self.d_state)
        return (batch, self.nheads, self.headdim, self.d_state)


def _resolve_dt_rank(dt_rank, d_model):
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    return dt_rank


def _m1(d_model, n_layer):
    return MambaConfig("mamba1", d_model, n_layer, vocab_size=50280, d_state=16)


def _m2(d_model, n_layer):
    return MambaConfig("mamba2", d_model, n_layer, vocab_size=50288, d_state=128)


PRESETS: dict[str, MambaConfig] = {
    "mamba-130m": _m1(768, 24),
    "mamba-370m": _m1(1024, 48),
    "mamba-790m": _m1(1536, 48),
    "mamba-1.4b": _m1(2048, 48),
    "mamba-2.8b": _m1(2560, 64),
    "mamba2-130m": _m2(768, 24),
    "mamba2-370m": _m2(1024, 48),
    "mamba2-780m": _m2(1536, 48),
    "mamba2-1.3b": _m2(2048, 48),
    "mamba2-2.7b": _m2(2560, 64),
    # Small enough for sub-second tests, yet every size differs so shape bugs show.
    "tiny-mamba1": MambaConfig("mamba1", d_model=32, n_layer=2, vocab_size=64, d_state=8),
    "tiny-mamba2": MambaConfig("mamba2", d_model=64, n_layer=2, vocab_size=64, d_state=16,
                               headdim=16, ngroups=2, chunk_size=8),
}


def get_config(name: str) -> MambaConfig:
    """The preset called ``name`` (see PRESETS)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise MambaflowError(
            f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}."
        ) from None


def param_shapes(cfg: MambaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's HF name and shape, computed from the config alone.

    The tied ``lm_head.weight`` is left out (it is ``backbone.embeddings.weight``)."""
    d, di, n = cfg.d_model, cfg.d_inner, cfg.d_state
    shapes = {"backbone.embeddings.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layer):
        m = f"backbone.layers.{i}.mixer."
        shapes[f"backbone.layers.{i}.norm.weight"] = (d,)
        shapes[m + "in_proj.weight"] = (cfg.in_proj_out, d)
        shapes[m + "conv1d.weight"] = (cfg.conv_dim, 1, cfg.d_conv)
        shapes[m + "conv1d.bias"] = (cfg.conv_dim,)
        if cfg.arch == "mamba1":
            shapes[m + "x_proj.weight"] = (cfg.dt_rank + 2 * n, di)
            shapes[m + "dt_proj.weight"] = (di, cfg.dt_rank)
            shapes[m + "dt_proj.bias"] = (di,)
            shapes[m + "A_log"] = (di, n)
            shapes[m + "D"] = (di,)
        else:
            shapes[m + "dt_bias"] = (cfg.nheads,)
            shapes[m + "A_log"] = (cfg.nheads,)
            shapes[m + "D"] = (cfg.nheads,)
            shapes[m + "norm.weight"] = (di,)
        shapes[m + "out_proj.weight"] = (d, di)
    shapes["backbone.norm_f.weight"] = (d,)
    return shapes


def num_params(cfg: MambaConfig) -> int:
    """Parameter count (tied LM head counted once), without allocating anything."""
    return sum(math.prod(s) for s in param_shapes(cfg).values())


# ---------------------------------------------------------------------------------------
# config.json conversion

# Keys whose value changes the model's math; each must have the value we implement.
_HF_REQUIRED = {"use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True,
                "hidden_act": "silu", "rms_norm": True}
_SSM_CFG_REQUIRED = {"bias": False, "conv_bias": True, "D_has_hdim": False,
                     "rmsnorm": True, "norm_before_gate": False, "d_ssm": None}
# ssm_cfg keys that only affect init or speed.
_SSM_CFG_IGNORED = {"layer", "dt_init", "dt_scale", "use_fast_path", "conv_init",
                    "A_init_range", "use_mem_eff_path", "learnable_init_states",
                    "activation", "process_group", "sequence_parallel"}


def read_float(value, key: str, default: float) -> float:
    """A float as config.json writers encode it: a number, null (the default), the strings
    "Infinity" / "-Infinity" / "NaN" (Python's json), or transformers 5's
    {"__float__": "Infinity"}."""
    raw = value
    if isinstance(value, dict) and set(value) == {"__float__"}:
        value = value["__float__"]
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() in ("infinity", "+infinity", "-infinity", "inf", "+inf",
                                                             "-inf", "nan"):
        return float(value.strip().lower().replace("infinity", "inf"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise CheckpointError(
        f"config.json: {key} = {json.dumps(raw)} is not a number; write a number, null, \"Infinity\" "
        'or {"__float__": "Infinity"}.'
    )


def _read_limit(value, key: str) -> tuple[float, float]:
    """time_step_limit / dt_limit: two floats (null = no limit on that side)."""
    if value is None:
        return (0.0, math.inf)
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise CheckpointError(f"config.json: {key} = {json.dumps(value)} is not a pair [low, high]; "
                              'write e.g. [0.0, {"__float__": "Infinity"}].')
    return (read_float(value[0], f"{key}[0]", 0.0), read_float(value[1], f"{key}[1]", math.inf))


def _json_float(v: float):
    """A float as transformers 5 writes it to config.json (valid JSON for inf / nan)."""
    if math.isfinite(v):
        return v
    return {"__float__": "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")}


def config_from_hf(d: dict) -> MambaConfig:
    """A MambaConfig from a config.json dictionary: HF MambaConfig (model_type "mamba"),
    HF Mamba2Config ("mamba2"), or mamba_ssm's own format (d_model, n_layer, ssm_cfg).
    The vocabulary is padded to the pad multiple as mamba_ssm does."""
    if "d_model" in d:
        return _from_mamba_ssm(d)
    model_type = d.get("model_type")
    if model_type not in ("mamba", "mamba2"):
        raise CheckpointError(
            f"config.json: model_type {model_type!r} is not a Mamba model; expected 'mamba' "
            "or 'mamba2' (HF format) or a mamba_ssm config with d_model/n_layer."
        )
    arch = "mamba1" if model_type == "mamba" else "mamba2"
    for key, want in _HF_REQUIRED.items():
        if key in d and d[key] != want:
            raise CheckpointError(
                f"config.json: {key}={d[key]!r} is not supported (mambaflow implements "
                f"{key}={want!r}); convert the checkpoint or use a supported model."
            )
    for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if key not in d:
            raise CheckpointError(f"config.json: required key {key!r} is missing; add it.")
    pad = d.get("pad_vocab_size_multiple", _DEFAULT_PAD[arch])
    common = dict(
        d_model=d["hidden_size"], n_layer=d["num_hidden_layers"],
        vocab_size=pad_vocab_size(d["vocab_size"], pad), pad_vocab_multiple=pad,
        d_conv=d.get("conv_kernel", 4), expand=d.get("expand", 2),
        rms_eps=read_float(d.get("layer_norm_epsilon"), "layer_norm_epsilon", 1e-5),
        dt_min=read_float(d.get("time_step_min"), "time_step_min", 0.001),
        dt_max=read_float(d.get("time_step_max"), "time_step_max", 0.1),
        dt_init_floor=read_float(d.get("time_step_floor"), "time_step_floor", 1e-4),
    )
    if arch == "mamba1":
        cfg = MambaConfig("mamba1", d_state=d.get("state_size", 16),
                          dt_rank=d.get("time_step_rank", "auto"), **common)
        if "intermediate_size" in d and d["intermediate_size"] != cfg.d_inner:
            raise CheckpointError(
                f"config.json: intermediate_size {d['intermediate_size']} != expand*hidden_size"
                f" = {cfg.d_inner}; fix one of them."
            )
        return cfg
    cfg = MambaConfig("mamba2", d_state=d.get("state_size", 128),
                      headdim=d.get("head_dim", 64), ngroups=d.get("n_groups", 1),
                      chunk_size=d.get("chunk_size", 256),
                      time_step_limit=_read_limit(d.get("time_step_limit"), "time_step_limit"),
                      **common)
    if "num_heads" in d and d["num_heads"] != cfg.nheads:
        raise CheckpointError(
            f"config.json: num_heads {d['num_heads']} * head_dim {cfg.headdim} != "
            f"expand*hidden_size = {cfg.d_inner}; fix num_heads or head_dim."
        )
    return cfg


def _from_mamba_ssm(d: dict) -> MambaConfig:
    if not d.get("rms_norm", True) or not d.get("tie_embeddings", True):
        raise CheckpointError(
            "config.json (mamba_ssm format): rms_norm=False or tie_embeddings=False is not "
            "supported; mambaflow implements RMSNorm with a tied LM head."
        )
    if d.get("d_intermediate", 0) or d.get("attn_layer_idx"):
        raise CheckpointError(
            "config.json (mamba_ssm format): MLP (d_intermediate>0) or attention layers "
            "(attn_layer_idx) are not supported; only pure Mamba stacks are."
        )
    ssm = dict(d.get("ssm_cfg") or {})
    layer = ssm.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise CheckpointError(
            f"config.json: ssm_cfg.layer={layer!r} is not supported; use Mamba1 or Mamba2."
        )
    arch = layer.lower()
    for key, want in _SSM_CFG_REQUIRED.items():
        if key in ssm and ssm[key] != want:
            raise CheckpointError(
                f"config.json: ssm_cfg.{key}={ssm[key]!r} is not supported (mambaflow "
                f"implements {key}={want!r})."
            )
    known = set(_SSM_CFG_REQUIRED) | _SSM_CFG_IGNORED | {
        "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init_floor",
        "headdim", "ngroups", "chunk_size", "dt_limit"}
    unknown = sorted(set(ssm) - known)
    if unknown:
        raise CheckpointError(
            f"config.json: ssm_cfg options {unknown} are not supported by mambaflow; "
            "remove them if they only affect training, else the model cannot be loaded."
        )
    pad = d.get("pad_vocab_size_multiple", _DEFAULT_PAD[arch])
    kw = dict(d_model=d["d_model"], n_layer=d["n_layer"],
              vocab_size=pad_vocab_size(d.get("vocab_size", 50277), pad),
              pad_vocab_multiple=pad, d_conv=ssm.get("d_conv", 4),
              expand=ssm.get("expand", 2), rms_eps=read_float(d.get("norm_epsilon"), "norm_epsilon", 1e-5),
              dt_min=read_float(ssm.get("dt_min"), "ssm_cfg.dt_min", 0.001),
              dt_max=read_float(ssm.get("dt_max"), "ssm_cfg.dt_max", 0.1),
              dt_init_floor=read_float(ssm.get("dt_init_floor"), "ssm_cfg.dt_init_floor", 1e-4))
    if arch == "mamba1":
        return MambaConfig("mamba1", d_state=ssm.get("d_state", 16),
                           dt_rank=ssm.get("dt_rank", "auto"), **kw)
    return MambaConfig("mamba2", d_state=ssm.get("d_state", 128),
                       headdim=ssm.get("headdim", 64), ngroups=ssm.get("ngroups", 1),
                       chunk_size=ssm.get("chunk_size", 256),
                       time_step_limit=_read_limit(ssm.get("dt_limit"), "ssm_cfg.dt_limit"), **kw)


#: config.json key naming the tokenizer of a model that has no tokenizer.json: "bytes"
#: for this project's byte-level models (mambaflow.data's tokenizer)
TOKENIZER_KEY = "mambaflow_tokenizer"


def config_to_hf(cfg: MambaConfig, byte_level: bool = False) -> dict:
    """The HF config.json dictionary (MambaConfig or Mamba2Config) for ``cfg``; infinite
    floats are written as transformers 5 does (valid JSON). ``byte_level`` records that
    the model reads mambaflow.data's byte tokens (see TOKENIZER_KEY)."""
    d = {
        "model_type": "mamba" if cfg.arch == "mamba1" else "mamba2",
        "architectures": ["MambaForCausalLM" if cfg.arch == "mamba1" else "Mamba2ForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "pad_vocab_size_multiple": cfg.pad_vocab_multiple,
        "hidden_size": cfg.d_model,
        "state_size": cfg.d_state,
        "num_hidden_layers": cfg.n_layer,
        "expand": cfg.expand,
        "conv_kernel": cfg.d_conv,
        "time_step_rank": cfg.dt_rank,
        "layer_norm_epsilon": cfg.rms_eps,
        "time_step_min": cfg.dt_min,
        "time_step_max": cfg.dt_max,
        "time_step_floor": cfg.dt_init_floor,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "tie_word_embeddings": True,
    }
    if cfg.arch == "mamba1":
        d["intermediate_size"] = cfg.d_inner
    else:
        d.update(num_heads=cfg.nheads, head_dim=cfg.headdim, n_groups=cfg.ngroups,
                 chunk_size=cfg.chunk_size, time_step_limit=[_json_float(v) for v in cfg.time_step_limit],
                 rms_norm=True)
    if byte_level:
        d[TOKENIZER_KEY] = "bytes"
    return d
