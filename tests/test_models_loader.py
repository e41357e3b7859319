"""Checkpoints: save/load round trips, HF and mamba_ssm formats, and the errors a user
sees for a damaged or mismatched checkpoint."""

import json
import math

import pytest
import safetensors.torch
import torch

from mambaflow.errors import CheckpointError
from mambaflow.models import (PRESETS, build_model, config_from_hf, config_to_hf, get_config,
                              load_checkpoint, save_checkpoint)

ARCHS = ["tiny-mamba1", "tiny-mamba2"]


def model(name, seed=0):
    torch.manual_seed(seed)
    m = build_model(get_config(name))
    with torch.no_grad():  # unit-scale embeddings so logits differ visibly between models
        m.backbone.embeddings.weight.normal_()
    return m


def logits(m, toks=None):
    toks = torch.arange(12).reshape(2, 6) if toks is None else toks
    with torch.no_grad():
        return m.prefill(toks)[0]


def hf_weights(m):
    return {k: v.clone() for k, v in m.state_dict().items() if k != "lm_head.weight"}


def write(path, cfg_dict, weights, file="model.safetensors"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg_dict))
    if file.endswith(".safetensors"):
        safetensors.torch.save_file(weights, path / file)
    else:
        torch.save(weights, path / file)
    return path


# -- round trips and formats ----------------------------------------------------------------

@pytest.mark.parametrize("name", ARCHS)
def test_save_then_load_gives_identical_logits(name, tmp_path):
    m = model(name)
    save_checkpoint(m, tmp_path)
    on_disk = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in on_disk and "backbone.embeddings.weight" in on_disk
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] in ("mamba", "mamba2")
    loaded = load_checkpoint(tmp_path)
    assert type(loaded) is type(m) and loaded.config == m.config
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight
    assert torch.equal(logits(loaded), logits(m))


@pytest.mark.parametrize("name", ARCHS)
def test_mamba_ssm_checkpoint_loads(name, tmp_path):
    # mamba_ssm: its own config.json with the unpadded vocab, "embedding" (no s), and a
    # pytorch_model.bin that stores the tied lm_head.weight too.
    m = model(name)
    cfg = m.config
    weights = hf_weights(m)
    weights["backbone.embedding.weight"] = weights.pop("backbone.embeddings.weight")
    weights["lm_head.weight"] = weights["backbone.embedding.weight"]
    ssm_cfg = ({"d_state": cfg.d_state} if cfg.arch == "mamba1" else
               {"layer": "Mamba2", "d_state": cfg.d_state, "headdim": cfg.headdim,
                "ngroups": cfg.ngroups, "chunk_size": cfg.chunk_size})
    config = {"d_model": cfg.d_model, "n_layer": cfg.n_layer, "vocab_size": cfg.vocab_size - 3,
              "ssm_cfg": ssm_cfg, "rms_norm": True, "residual_in_fp32": True,
              "fused_add_norm": True, "pad_vocab_size_multiple": cfg.pad_vocab_multiple,
              "tie_embeddings": True, "d_intermediate": 0, "attn_layer_idx": []}
    loaded = load_checkpoint(write(tmp_path, config, weights, "pytorch_model.bin"))
    assert loaded.config == cfg
    assert torch.equal(logits(loaded), logits(m))


def test_unpadded_vocab_is_padded_with_zero_rows(tmp_path):
    m = model("tiny-mamba1")
    weights = hf_weights(m)
    weights["backbone.embeddings.weight"] = weights["backbone.embeddings.weight"][:60].clone()
    config = {**config_to_hf(m.config), "vocab_size": 60}
    loaded = load_checkpoint(write(tmp_path, config, weights))
    assert loaded.config.vocab_size == 64
    with torch.no_grad():
        m.backbone.embeddings.weight[60:] = 0
    toks = torch.randint(0, 60, (2, 5))
    assert torch.equal(logits(loaded, toks), logits(m, toks))


def test_sharded_safetensors_load(tmp_path):
    m = model("tiny-mamba2")
    weights = hf_weights(m)
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for file, names in shards.items():
        safetensors.torch.save_file({k: weights[k] for k in names}, tmp_path / file)
    index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(m.config)))
    assert torch.equal(logits(load_checkpoint(tmp_path)), logits(m))


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    m = model("tiny-mamba1")
    weights = {k: v.to(torch.bfloat16) for k, v in hf_weights(m).items()}
    loaded = load_checkpoint(write(tmp_path, config_to_hf(m.config), weights))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(logits(loaded), logits(m), atol=0.05, rtol=0.05)


# -- errors ------------------------------------------------------------------------------------

def damaged(tmp_path, change, name="tiny-mamba2"):
    m = model(name)
    weights = hf_weights(m)
    change(weights)
    return write(tmp_path, config_to_hf(m.config), weights)


def test_missing_key_is_named_with_its_shape(tmp_path):
    path = damaged(tmp_path, lambda w: w.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(CheckpointError, match=r"missing key backbone\.layers\.1\.mixer\.D "
                                              r"\(expected shape \(8,\)\)"):
        load_checkpoint(path)


def test_unexpected_key_is_named(tmp_path):
    path = damaged(tmp_path, lambda w: w.update({"backbone.layers.0.mixer.bogus": torch.ones(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected key backbone\.layers\.0\.mixer\.bogus"):
        load_checkpoint(path)


def test_misshaped_key_is_named_with_both_shapes(tmp_path):
    key = "backbone.layers.0.mixer.in_proj.weight"
    path = damaged(tmp_path, lambda w: w.update({key: w[key][:-1].clone()}))
    with pytest.raises(CheckpointError, match=rf"{key} has shape \(327, 64\), expected \(328, 64\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_file_is_named(tmp_path, file, keep):
    path = write(tmp_path, config_to_hf(get_config("tiny-mamba1")),
                 hf_weights(model("tiny-mamba1")), file)
    data = (path / file).read_bytes()
    (path / file).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=rf"{file}: the file is truncated or corrupt"):
        load_checkpoint(path)


def test_missing_config_json(tmp_path):
    save_checkpoint(model("tiny-mamba1"), tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_missing_weights_and_shards(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config_to_hf(get_config("tiny-mamba1"))))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path)
    index = {"weight_map": {"backbone.norm_f.weight": "model-00001-of-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00001-of-00001.safetensors .* is missing"):
        load_checkpoint(tmp_path)


def test_untied_lm_head_is_rejected(tmp_path):
    path = damaged(tmp_path, lambda w: w.update(
        {"lm_head.weight": w["backbone.embeddings.weight"] + 1}))
    with pytest.raises(CheckpointError, match="untied"):
        load_checkpoint(path)


def test_tied_lm_head_in_file_is_accepted(tmp_path):
    path = damaged(tmp_path, lambda w: w.update(
        {"lm_head.weight": w["backbone.embeddings.weight"].clone()}))
    load_checkpoint(path)


# -- config.json -------------------------------------------------------------------------------

def test_hf_config_round_trips_for_every_preset():
    for name, cfg in PRESETS.items():
        assert config_from_hf(json.loads(json.dumps(config_to_hf(cfg)))) == cfg, name


def test_published_hf_config_reads():
    # the fields of state-spaces/mamba-130m-hf's config.json that matter
    hf = {"model_type": "mamba", "vocab_size": 50280, "hidden_size": 768, "state_size": 16,
          "num_hidden_layers": 24, "expand": 2, "conv_kernel": 4, "time_step_rank": 48,
          "intermediate_size": 1536, "layer_norm_epsilon": 1e-5, "use_bias": False,
          "use_conv_bias": True, "hidden_act": "silu", "tie_word_embeddings": True}
    assert config_from_hf(hf) == PRESETS["mamba-130m"]
    m2 = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"},
          "rms_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True,
          "d_intermediate": 0, "attn_layer_idx": [], "attn_cfg": {}}
    assert config_from_hf(m2) == PRESETS["mamba2-130m"]
    assert config_from_hf({**config_to_hf(PRESETS["mamba2-130m"]),
                           "time_step_limit": [0.0, 0.5]}).time_step_limit == (0.0, 0.5)
    assert PRESETS["mamba2-130m"].time_step_limit == (0.0, math.inf)


@pytest.mark.parametrize("change, words", [
    (dict(use_bias=True), "use_bias"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    (dict(model_type="llama"), "model_type"),
    (dict(num_heads=7), "num_heads"),
    (dict(hidden_size=None), "hidden_size"),
])
def test_unsupported_hf_options_are_rejected(change, words):
    d = {**config_to_hf(get_config("tiny-mamba2")), **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(CheckpointError, match=words):
        config_from_hf(d)


@pytest.mark.parametrize("change, words", [
    (dict(ssm_cfg={"layer": "Mamba2", "D_has_hdim": True}), "D_has_hdim"),
    (dict(ssm_cfg={"layer": "Mamba3"}), "Mamba3"),
    (dict(ssm_cfg={"frobnicate": 1}), "frobnicate"),
    (dict(d_intermediate=256), "MLP"),
    (dict(tie_embeddings=False), "tie_embeddings"),
])
def test_unsupported_mamba_ssm_options_are_rejected(change, words):
    d = {"d_model": 64, "n_layer": 2, "vocab_size": 60, **change}
    with pytest.raises(CheckpointError, match=words):
        config_from_hf(d)


# ------------------------------------------------------------- checkpoints saved by transformers


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_transformers_checkpoint_reproduces_transformers_logits(tmp_path, arch, one_thread):
    """A folder written by transformers 5 (Mamba2: time_step_limit [0.0, {"__float__":
    "Infinity"}]) loads, and the model gives transformers' own logits."""
    from hf_checkpoints import VOCAB, save_hf_checkpoint

    hf = save_hf_checkpoint(tmp_path, arch, tokenizer=False)
    if arch == "mamba2":
        assert '"__float__": "Infinity"' in (tmp_path / "config.json").read_text()
    ours = load_checkpoint(tmp_path).eval()
    if arch == "mamba2":
        assert ours.config.time_step_limit == (0.0, math.inf)
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(tokens).logits
        got = ours.prefill(tokens)[0]
    assert got.shape[-1] >= VOCAB and torch.allclose(got[..., :VOCAB], want, atol=1e-4, rtol=1e-4), \
        float((got[..., :VOCAB] - want).abs().max())


@pytest.mark.parametrize("limit,want", [
    ([0.0, {"__float__": "Infinity"}], (0.0, math.inf)),
    ([0.0, "Infinity"], (0.0, math.inf)),
    ([0.0, None], (0.0, math.inf)),
    (None, (0.0, math.inf)),
    ([0.001, 100.0], (0.001, 100.0)),
])
def test_time_step_limit_encodings(limit, want):
    d = {**config_to_hf(get_config("tiny-mamba2")), "time_step_limit": limit}
    assert config_from_hf(d).time_step_limit == want
    # and what we write is valid JSON that reads back the same
    text = json.dumps(config_to_hf(config_from_hf(d)), allow_nan=False)
    assert config_from_hf(json.loads(text)).time_step_limit == want


@pytest.mark.parametrize("limit", [[0.0, "lots"], [0.0], 5, [0.0, {"__float__": "big"}]])
def test_time_step_limit_bad_values_name_the_key(limit):
    with pytest.raises(CheckpointError, match="time_step_limit"):
        config_from_hf({**config_to_hf(get_config("tiny-mamba2")), "time_step_limit": limit})
