"""The reference models: the three phases agree with each other and with the equations.

Tolerances (atol = rtol): float32 1e-5 — the worst observed |a-b| / (1+|b|) is 4e-6, on
values up to ~70, from different summation orders; float64 runs of the same comparisons
hold to 1e-12 (worst observed 7e-15)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from mambaflow.errors import MambaflowError
from mambaflow.models import (PRESETS, MambaState, build_model, get_config, num_params,
                              param_shapes, tree_conv_windows)
from mambaflow.models.mamba2 import ssd_chunked

ARCHS = ["tiny-mamba1", "tiny-mamba2"]
TOL32 = dict(atol=1e-5, rtol=1e-5)
TOL64 = dict(atol=1e-12, rtol=1e-12)


def lively(name, seed=0, dtype=torch.float32, **overrides):
    """A tiny model moved away from its gentle init (unit embeddings, large steps, random
    D and conv bias), so states decay and mix visibly and a wrong index shows."""
    cfg = dataclasses.replace(get_config(name), **overrides)
    torch.manual_seed(seed)
    m = build_model(cfg).to(dtype)
    with torch.no_grad():
        m.backbone.embeddings.weight.normal_()
        for layer in m.backbone.layers:
            mx = layer.mixer
            layer.norm.weight.uniform_(0.5, 1.5)
            mx.D.normal_()
            mx.conv1d.bias.normal_(0, 0.5)
            (mx.dt_proj.bias if cfg.arch == "mamba1" else mx.dt_bias).uniform_(-3, 1)
    return m.eval()


def tokens(m, *shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, m.config.vocab_size, shape, generator=g)


def close(a, b, tol=TOL32):
    torch.testing.assert_close(a, b, **tol)


def close_state(s, t, tol=TOL32):
    close(s.conv, t.conv, tol)
    close(s.ssm, t.ssm, tol)


# -- phases agree with each other ----------------------------------------------------

@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("prefix", [2, 11])  # shorter than d_conv; across a chunk border
def test_prefill_then_decode_equals_longer_prefill(name, prefix):
    m, k = lively(name), 6
    toks = tokens(m, 3, prefix + k)
    with torch.no_grad():
        full_logits, full_state = m.prefill(toks)
        logits, state = m.prefill(toks[:, :prefix])
        close(logits, full_logits[:, :prefix])
        steps = []
        for t in range(prefix, prefix + k):
            step_logits, state = m.decode(toks[:, t], state)
            steps.append(step_logits)
        close(torch.stack(steps, 1), full_logits[:, prefix:])
        close_state(state, full_state)
        # prefill can also continue from a state
        more_logits, more_state = m.prefill(toks[:, prefix:], m.prefill(toks[:, :prefix])[1])
        close(more_logits, full_logits[:, prefix:])
        close_state(more_state, full_state)


@pytest.mark.parametrize("name", ARCHS)
def test_forward_is_prefill_from_zero_state(name):
    m = lively(name)
    toks = tokens(m, 2, 9)
    with torch.no_grad():
        logits, state = m.prefill(toks, MambaState.zeros(m.config, 2))
        close(m(toks), logits, dict(atol=0, rtol=0))


@pytest.mark.parametrize("name", ARCHS)
def test_conv_state_holds_last_inputs_zero_padded(name):
    m = lively(name)
    toks = tokens(m, 1, 2)
    with torch.no_grad():
        _, state = m.prefill(toks)
        _, one = m.prefill(toks[:, 1:], m.prefill(toks[:, :1])[1])
    k = m.config.d_conv
    assert torch.all(state.conv[:, :, :, : k - 2] == 0)  # only 2 inputs seen so far
    assert torch.all(state.conv[:, :, :, k - 2:] != 0)
    close_state(one, state)


@pytest.mark.parametrize("name", ARCHS)
def test_decode_leaves_input_state_untouched(name):
    m = lively(name)
    with torch.no_grad():
        _, state = m.prefill(tokens(m, 2, 5))
        before = state.clone()
        m.decode(tokens(m, 2, seed=3), state)
        m.verify(tokens(m, 2, 3), [-1, 0, 0], state)
    assert torch.equal(state.conv, before.conv) and torch.equal(state.ssm, before.ssm)


@pytest.mark.parametrize("name", ["tiny-mamba2"])
@pytest.mark.parametrize("length", [3, 8, 19])  # < chunk, = chunk, ragged last chunk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mamba2_chunked_equals_sequential(name, length, dtype):
    tol = TOL32 if dtype == torch.float32 else TOL64
    m = lively(name, dtype=dtype)
    assert m.config.ngroups == 2
    toks = tokens(m, 2, 5 + length)
    with torch.no_grad():
        _, start = m.prefill(toks[:, :5], scan="sequential")  # a non-zero initial state
        a_logits, a_state = m.prefill(toks[:, 5:], start, scan="chunked")
        b_logits, b_state = m.prefill(toks[:, 5:], start, scan="sequential")
    close(a_logits, b_logits, tol)
    close_state(a_state, b_state, tol)


def test_mamba2_chunked_equals_sequential_with_time_step_limit():
    m = lively("tiny-mamba2", time_step_limit=(0.05, 0.4))
    toks = tokens(m, 2, 13)
    with torch.no_grad():
        a, sa = m.prefill(toks, scan="chunked")
        b, sb = m.prefill(toks, scan="sequential")
        c, _ = lively("tiny-mamba2").prefill(toks)
    close(a, b)
    close_state(sa, sb)
    assert not torch.allclose(a, c, atol=1e-3)  # the clamp does act


def test_ssd_chunked_matches_a_direct_recurrence():
    # The SSD kernel alone, against h = exp(a) h + B x and y = C.h, with a start state.
    g = torch.Generator().manual_seed(0)
    b, length, h, p, n = 2, 13, 3, 4, 5
    X, B, C = (torch.randn(b, length, h, d, generator=g, dtype=torch.float64)
               for d in (p, n, n))
    a = -torch.rand(b, length, h, generator=g, dtype=torch.float64)
    state = torch.randn(b, h, p, n, generator=g, dtype=torch.float64)
    Y, final = ssd_chunked(X, a, B, C, 4, state)
    ys = []
    for t in range(length):
        state = torch.exp(a[:, t, :, None, None]) * state + X[:, t, :, :, None] * B[:, t, :, None]
        ys.append((state * C[:, t, :, None]).sum(-1))
    close(Y, torch.stack(ys, 1), TOL64)
    close(final, state, TOL64)


# -- decode against REFERENCE.md's equations -------------------------------------------

def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def reference_step(m, token, conv, ssm):
    """One decode step straight from REFERENCE.md, reading only the state_dict."""
    cfg, sd = m.config, m.state_dict()
    di, n, k = cfg.d_inner, cfg.d_state, cfg.d_conv
    u = sd["backbone.embeddings.weight"][token]
    convs, ssms = [], []
    for i in range(cfg.n_layer):
        def p(name):
            return sd[f"backbone.layers.{i}.mixer.{name}"]
        xz = rms(u, sd[f"backbone.layers.{i}.norm.weight"], cfg.rms_eps) @ p("in_proj.weight").T
        xin = xz[:, :di] if cfg.arch == "mamba1" else xz[:, di:di + cfg.conv_dim]
        window = torch.cat([conv[i][:, :, 1:], xin[:, :, None]], dim=-1)
        xc = F.silu((window * p("conv1d.weight")[:, 0, :]).sum(-1) + p("conv1d.bias"))
        if cfg.arch == "mamba1":
            z, r = xz[:, di:], cfg.dt_rank
            dbc = xc @ p("x_proj.weight").T
            dt = F.softplus(dbc[:, :r] @ p("dt_proj.weight").T + p("dt_proj.bias"))
            Bv, Cv = dbc[:, r:r + n], dbc[:, r + n:]
            A = -torch.exp(p("A_log"))
            h = ssm[i] * torch.exp(dt[:, :, None] * A) + (dt * xc)[:, :, None] * Bv[:, None, :]
            y = ((h * Cv[:, None, :]).sum(-1) + p("D") * xc) * F.silu(z)
        else:
            H, P, G = cfg.nheads, cfg.headdim, cfg.ngroups
            z, dtr = xz[:, :di], xz[:, di + cfg.conv_dim:]
            x = xc[:, :di].reshape(-1, H, P)
            Bg = xc[:, di:di + G * n].reshape(-1, G, n)
            Cg = xc[:, di + G * n:].reshape(-1, G, n)
            dt = F.softplus(dtr + p("dt_bias"))
            A = -torch.exp(p("A_log"))
            h, y = torch.empty_like(ssm[i]), torch.empty_like(x)
            for hd in range(H):
                g = hd // (H // G)
                h[:, hd] = (torch.exp(dt[:, hd] * A[hd])[:, None, None] * ssm[i][:, hd]
                            + (dt[:, hd, None] * x[:, hd])[:, :, None] * Bg[:, g, None, :])
                y[:, hd] = (h[:, hd] * Cg[:, g, None, :]).sum(-1) + p("D")[hd] * x[:, hd]
            gated = (y.reshape(-1, di) * F.silu(z)).reshape(-1, G, di // G)
            y = rms(gated, 1.0, cfg.rms_eps).reshape(-1, di) * p("norm.weight")
        u = u + y @ p("out_proj.weight").T
        convs.append(window)
        ssms.append(h)
    logits = rms(u, sd["backbone.norm_f.weight"], cfg.rms_eps) @ sd["backbone.embeddings.weight"].T
    return logits, MambaState(torch.stack(convs), torch.stack(ssms))


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_matches_reference_equations(name, dtype):
    tol = TOL32 if dtype == torch.float32 else TOL64
    m = lively(name, dtype=dtype)
    toks = tokens(m, 2, 7)
    state = ref_state = MambaState.zeros(m.config, 2, dtype=dtype)
    with torch.no_grad():
        for t in range(toks.shape[1]):
            logits, state = m.decode(toks[:, t], state)
            ref_logits, ref_state = reference_step(m, toks[:, t], ref_state.conv, ref_state.ssm)
            close(logits, ref_logits, tol)
    close_state(state, ref_state, tol)
    assert ref_logits.abs().max() > 1  # the comparison is not between near-zeros


# -- tree verification ------------------------------------------------------------------

@pytest.mark.parametrize("name", ARCHS)
def test_verify_chain_equals_decode_steps(name):
    m, t = lively(name), 7
    toks = tokens(m, 2, 4 + t)
    with torch.no_grad():
        _, committed = m.prefill(toks[:, :4])
        logits, nodes = m.verify(toks[:, 4:], list(range(-1, t - 1)), committed,
                                 return_states=True)
        state = committed
        for i in range(t):
            step_logits, state = m.decode(toks[:, 4 + i], state)
            close(logits[:, i], step_logits)
            close_state(nodes.select(i), state)


TREE = [-1, 0, 0, 1, 1, 2, 3, 6, -1, 8]  # two roots, branching, and paths longer than d_conv


@pytest.mark.parametrize("name", ARCHS)
def test_verify_tree_equals_decoding_each_path(name):
    m = lively(name)
    toks = tokens(m, 2, 3 + len(TREE))
    tree_toks = toks[:, 3:]
    with torch.no_grad():
        _, committed = m.prefill(toks[:, :3])
        logits, nodes = m.verify(tree_toks, torch.tensor(TREE), committed, return_states=True)
        for i in range(len(TREE)):
            path, j = [], i
            while j >= 0:
                path.insert(0, j)
                j = TREE[j]
            state = committed
            for j in path:
                step_logits, state = m.decode(tree_toks[:, j], state)
            close(logits[:, i], step_logits)
            close_state(nodes.select(i), state)
        # per-row selection, as speculative decoding accepts different nodes per row
        picked = nodes.select(torch.tensor([7, 4]))
        close(picked.ssm[:, 0], nodes.ssm[:, 0, 7], dict(atol=0, rtol=0))
        close(picked.conv[:, 1], nodes.conv[:, 1, 4], dict(atol=0, rtol=0))


def test_tree_conv_windows():
    chain = tree_conv_windows([-1, 0, 1, 2, 3], 4)
    assert chain.tolist() == [[t, t + 1, t + 2, t + 3] for t in range(5)]
    # committed columns are indices 0..2; node k is index 3 + k
    w = tree_conv_windows(torch.tensor([-1, 0, 0, 1, -1, 3]), 4)
    assert w.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 5], [2, 3, 4, 6],
                          [0, 1, 2, 7], [3, 4, 6, 8]]
    assert tree_conv_windows([-1, 0], 1).tolist() == [[0], [1]]


@pytest.mark.parametrize("parents", [[0], [-1, 1], [-1, -2], torch.tensor([[-1]])])
def test_bad_tree_is_rejected(parents):
    with pytest.raises(MambaflowError, match="parent"):
        tree_conv_windows(parents, 4)


# -- structure, init, sizes ---------------------------------------------------------------

@pytest.mark.parametrize("name", ARCHS)
def test_state_dict_is_an_hf_checkpoint(name):
    m = build_model(get_config(name))
    sd = m.state_dict()
    assert m.lm_head.weight is m.backbone.embeddings.weight
    assert set(sd) == set(param_shapes(m.config)) | {"lm_head.weight"}
    for key, shape in param_shapes(m.config).items():
        assert tuple(sd[key].shape) == shape, key
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_init_follows_mamba_ssm():
    torch.manual_seed(0)
    m1 = build_model(get_config("tiny-mamba1"))
    torch.manual_seed(0)
    again = build_model(get_config("tiny-mamba1"))
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), again.state_dict().values()))
    mx = m1.backbone.layers[0].mixer
    n = m1.config.d_state
    assert torch.equal(mx.A_log, torch.log(torch.arange(1, n + 1.0)).expand(m1.config.d_inner, n))
    dt = F.softplus(mx.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert torch.all(mx.D == 1)
    m2 = build_model(get_config("tiny-mamba2"))
    mx = m2.backbone.layers[1].mixer
    assert torch.all((torch.exp(mx.A_log) >= 1) & (torch.exp(mx.A_log) <= 16))
    dt = F.softplus(mx.dt_bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    assert torch.all(mx.D == 1) and torch.all(mx.norm.weight == 1)


def test_published_sizes_have_published_parameter_counts():
    # Exact counts for the 130m models worked out by hand from the shapes.
    assert num_params(PRESETS["mamba-130m"]) == 129_135_360
    assert num_params(PRESETS["mamba2-130m"]) == 128_989_632
    nominal = {"130m": 130e6, "370m": 370e6, "790m": 790e6, "780m": 780e6, "1.4b": 1.4e9,
               "1.3b": 1.3e9, "2.8b": 2.8e9, "2.7b": 2.7e9}
    for name, cfg in PRESETS.items():
        if not name.startswith("tiny"):
            size = nominal[name.split("-")[1]]
            assert abs(num_params(cfg) - size) / size < 0.05, name  # 1.3b is 1.34e9
    assert PRESETS["mamba-2.8b"].dt_rank == 160 and PRESETS["mamba2-2.7b"].nheads == 80
    tiny = build_model(get_config("tiny-mamba2"))
    assert num_params(tiny.config) == sum(p.numel() for p in tiny.parameters())


def test_config_derived_sizes():
    c1, c2 = get_config("tiny-mamba1"), get_config("tiny-mamba2")
    assert (c1.d_inner, c1.dt_rank, c1.conv_dim, c1.in_proj_out) == (64, 2, 64, 128)
    assert (c2.nheads, c2.conv_dim, c2.in_proj_out) == (8, 128 + 64, 256 + 64 + 8)
    assert (c1.pad_vocab_multiple, c2.pad_vocab_multiple) == (8, 16)
    assert c2.time_step_limit == (0.0, math.inf)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(MambaflowError, match="mamba2-2.7b"):
        get_config("mamba-3b")


@pytest.mark.parametrize("kw", [dict(arch="mamba3"), dict(headdim=24), dict(ngroups=3),
                                dict(d_state=0)])
def test_bad_config_is_rejected(kw):
    with pytest.raises(MambaflowError):
        dataclasses.replace(get_config("tiny-mamba2"), **kw)


# -- input errors ------------------------------------------------------------------------

def test_bad_inputs_raise_project_errors():
    m = lively("tiny-mamba1")
    with pytest.raises(MambaflowError, match=r"\(B, L\)"):
        m.prefill(torch.zeros(4, dtype=torch.long))
    with pytest.raises(MambaflowError, match="integer"):
        m.prefill(torch.zeros(1, 4))
    with pytest.raises(MambaflowError, match=r"\[0, 64\)"):
        m.prefill(torch.tensor([[1, 64]]))
    with pytest.raises(MambaflowError, match=r"state.conv has shape \(2, 1, 64, 4\)"):
        m.decode(torch.tensor([1, 2]), MambaState.zeros(m.config, 1))
    with pytest.raises(MambaflowError, match="state.ssm"):
        bad = MambaState.zeros(m.config, 1)
        m.decode(torch.tensor([1]), MambaState(bad.conv, bad.ssm[..., :-1]))
    with pytest.raises(MambaflowError, match="sequential"):
        m.prefill(torch.tensor([[1, 2]]), scan="chunked")
    with pytest.raises(MambaflowError, match="one parent index per token"):
        m.verify(torch.tensor([[1, 2]]), [-1], MambaState.zeros(m.config, 1))
