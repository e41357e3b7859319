"""Reference inputs and golden outputs of a Mamba design, from the PyTorch model.

The numerical oracle of every csim (and of the XRT host program): the model's own
`decode` / `prefill` / `verify` run in PyTorch on the same weights the design takes as
ports. Verify designs are checked on token trees (`VerifyCase`); `speculative_cases`
drafts real ones: the rounds of a PyTorch speculative run of a target with its draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import MambaflowError
from ...models.common import MambaState, tree_conv_windows
from ...runtime.backends import TorchBackend
from .testbench import TestbenchSpec


#: (state input, state output) ports of decode and prefill designs, stacked by layer
STATE_PORTS = (("conv_state", "conv_state_out"), ("ssm_state", "ssm_state_out"))


def random_state(cfg, seed: int, scale: float = 0.5) -> MambaState:
    g = torch.Generator().manual_seed(seed)
    st = MambaState.zeros(cfg, 1)
    st.conv.copy_(torch.randn(st.conv.shape, generator=g) * scale)
    st.ssm.copy_(torch.randn(st.ssm.shape, generator=g) * scale)
    return st


@torch.no_grad()
def reference_data(model, design, steps: int = 2, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5,
                   *, trees: list[VerifyCase] | None = None):
    """(inputs, golden, spec) for `steps` calls of the design, keyed by design port name.

    verify: one call per tree of `trees` (`steps` is ignored), see `verify_reference_data`.

    decode: `steps` successive tokens from a seeded state, states fed back; prefill: one
    call on T random tokens. Tokens are drawn from the vocabulary with a seeded numpy
    generator. A float design is checked against the PyTorch model from an N(0, 0.5^2)
    state (every path of the conv and the scan exercised from the first step); an
    integer design (`design.quant`, `model` its QuantizedMamba) against the bit-exact
    integer reference from a state a few steps in, every comparison exact.
    """
    cfg = design.cfg
    if design.phase == "verify" and design.top == "verify":
        if trees is None:
            raise MambaflowError(
                f"reference data for the verify design '{design.top}' needs token trees: pass trees=[VerifyCase"
                "(tokens, parents, state), ...] (targets.hls.reference.speculative_cases drafts real ones)")
        return verify_reference_data(model, design, trees, rtol=rtol, atol=atol)
    if design.phase not in ("decode", "prefill") or design.top not in ("decode", "prefill"):
        raise MambaflowError(
            f"csim reference data is generated for whole-model decode, prefill and verify designs; "
            f"'{design.top}' is not one: compare it against the llvm JIT run instead"
        )
    if trees is not None:
        raise MambaflowError(f"trees= is for verify designs; '{design.top}' is a {design.phase} design")
    if design.phase == "prefill":
        steps = 1
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(steps, design.T), dtype=np.int64)
    if design.quant:
        from ...quant.flow import example_env

        _, state = example_env(model, design.T, seed)
        conv, ssm = state.conv, state.ssm  # (L, batch, ...): the ports keep the batch axis
        rtol = atol = 0.0
    else:
        model = model.eval()
        state = random_state(cfg, seed)
        conv, ssm = state.conv[:, 0], state.ssm[:, 0]
    port = {p.name: p for p in design.ports}

    def as_port(name: str, t: torch.Tensor) -> np.ndarray:
        return t.float().numpy().copy() if not design.quant else t.numpy().astype(port[name].np_dtype)

    inputs: dict[str, np.ndarray] = {"tokens": tokens, "conv_state": as_port("conv_state", conv),
                                     "ssm_state": as_port("ssm_state", ssm)}
    inputs.update(zip(design.weight_names, design.weights(model)))
    logits = []
    for s in range(steps):
        tok = torch.from_numpy(tokens[s])
        if design.phase == "decode":
            out, state = model.decode(tok, state)
        else:
            out, state = model.prefill(tok[None], state)
            out = out[0]
        logits.append(as_port("logits", out.reshape(design.T, cfg.vocab_size)))
    conv, ssm = (state.conv, state.ssm) if design.quant else (state.conv[:, 0], state.ssm[:, 0])
    golden = {"logits": np.stack(logits), "conv_state_out": as_port("conv_state_out", conv),
              "ssm_state_out": as_port("ssm_state_out", ssm)}
    spec = TestbenchSpec(steps=steps, per_step={"tokens"}, feedback={o: i for i, o in STATE_PORTS},
                         rtol=rtol, atol=atol)
    return inputs, golden, spec


# ------------------------------------------------------------------- verify


@dataclass
class VerifyCase:
    """One verify call: a token tree (BFS order, tokens[0] the root, parents[0] = -1,
    padded to the design's T with children of the committed state) and the committed
    target state it grows from (batch 1). `path`: the nodes the speculative run
    accepted on it (root first), when it came from one."""

    tokens: list[int]
    parents: list[int]
    state: MambaState
    path: list[int] = field(default_factory=list)
    nodes: int = 0  # real (unpadded) nodes; 0 = all

    @property
    def accepted(self) -> int:
        """Draft tokens accepted on this tree (the path below the root)."""
        return max(len(self.path) - 1, 0)


@torch.no_grad()
def verify_reference_data(model, design, trees: list[VerifyCase], rtol: float = 1e-4, atol: float = 1e-5):
    """(inputs, golden, spec) for one call of a verify design per tree of `trees`.

    Inputs per call: the tree's tokens, conv windows (models.common.tree_conv_windows)
    and parents, and its committed state. Golden per call, from the PyTorch target's own
    `verify` on that tree: the logits of every node, every node's pre-conv input
    (`conv_in`) and every node's SSM state (`ssm_states`) in the layers that checkpoint;
    a replaying layer's slice of `ssm_states` is left unwritten (zero) and its SSM
    inputs (REPLAY_ACTIVATIONS) are its golden instead."""
    from ...runtime.backtrack import torch_replay_activations

    cfg = design.cfg
    if design.quant:
        raise MambaflowError("reference data for integer verify designs is not supported: the integer "
                             "reference (quant.integer_ref) has no tree verify")
    if not trees:
        raise MambaflowError("verify reference data needs at least one token tree")
    T, L = design.T, cfg.n_layer
    names = {p.name for p in design.outputs}
    replay = list(design.replay_layers)
    model = model.eval()
    inputs: dict[str, list] = {k: [] for k in ("tokens", "windows", "parents", "conv_state", "ssm_state")}
    golden: dict[str, list] = {p.name: [] for p in design.outputs}
    for k, case in enumerate(trees):
        if len(case.tokens) != T or len(case.parents) != T:
            raise MambaflowError(f"verify reference data: tree {k} has {len(case.tokens)} tokens and "
                                 f"{len(case.parents)} parents, the design verifies T={T} nodes")
        if design.fifo_depth is not None:
            from ...runtime.backtrack import fifo_need

            if fifo_need(case.parents) > design.fifo_depth:
                raise MambaflowError(f"verify reference data: tree {k} needs a FIFO tree buffer of "
                                     f"{fifo_need(case.parents)} slots, the design has {design.fifo_depth}")
        tokens = torch.tensor(case.tokens, dtype=torch.long)
        grab = torch_replay_activations(model, replay)
        try:
            logits, nodes = model.verify(tokens[None], case.parents, case.state, return_states=True)
        finally:
            acts = grab.close()
        inputs["tokens"].append(tokens.numpy())
        inputs["windows"].append(tree_conv_windows(case.parents, cfg.d_conv).numpy())
        inputs["parents"].append(np.asarray(case.parents, np.int64))
        inputs["conv_state"].append(case.state.conv[:, 0].float().numpy())
        inputs["ssm_state"].append(case.state.ssm[:, 0].float().numpy())
        golden["logits"].append(logits[0].float().numpy())
        golden["conv_in"].append(nodes.conv[:, 0, :, :, -1].float().numpy())  # a window ends with its node
        if "ssm_states" in names:
            st = nodes.ssm[:, 0].float().clone()
            st[replay] = 0.0  # replaying layers write no node states
            golden["ssm_states"].append(st.numpy())
        for a in names - {"logits", "conv_in", "ssm_states"}:
            per_layer = [acts[i][a].float().numpy() if i in acts else
                         np.zeros(design_port_shape(design, a)[1:], np.float32) for i in range(L)]
            golden[a].append(np.stack(per_layer))
    inputs_np = {k: np.stack(v) for k, v in inputs.items()}
    inputs_np.update(zip(design.weight_names, design.weights(model)))
    golden_np = {k: np.stack(v) for k, v in golden.items()}
    spec = TestbenchSpec(steps=len(trees), per_step=set(inputs), rtol=rtol, atol=atol)
    return inputs_np, golden_np, spec


def design_port_shape(design, name: str) -> tuple[int, ...]:
    return next(p.shape for p in design.ports if p.name == name)


class _RecordingTarget(TorchBackend):
    """The PyTorch target, keeping every tree it verifies, the state it verifies it from
    and the logits it gives."""

    def __init__(self, model):
        super().__init__(model)
        self.calls: list[tuple[list[int], list[int], MambaState, torch.Tensor]] = []

    def verify_tree(self, tokens, parents, state, replay_layers=(), fifo_depth=None, out=None):
        logits, cache = super().verify_tree(tokens, parents, state, replay_layers, fifo_depth, out)
        self.calls.append(([int(t) for t in tokens], [int(p) for p in parents],
                           MambaState(state.conv.clone(), state.ssm.clone()), logits))
        return logits, cache


@torch.no_grad()
def speculative_cases(target, draft, tree, prompt: list[int], n_tokens: int, vocab_limit: int | None = None,
                      verify_size: int | None = None, fifo_depth: int | None = None):
    """Real verify trees: greedy speculative decoding of `n_tokens` after `prompt` with
    the PyTorch target and draft (runtime.speculative; the draft checkpoints, the target
    keeps every node's state), recording every tree the target verifies and the
    committed state it verifies it from. Returns (cases, generation): one VerifyCase per
    verify pass, in order, with the path accepted on it, and the SpeculativeGeneration
    (its tokens are the target's own greedy tokens)."""
    from ...runtime.generate import Sampling
    from ...runtime.speculative import accept_greedy, speculative_generate
    from ...runtime.trees import DraftTree, parse_shape

    sampling = Sampling(vocab_limit=vocab_limit)
    rec = _RecordingTarget(target.eval())
    gen = speculative_generate(rec, TorchBackend(draft.eval()), list(prompt), n_tokens, sampling,
                               tree=parse_shape(tree), backtrack="checkpoint", verify_size=verify_size,
                               fifo_depth=fifo_depth)
    cases = []
    for (toks, pars, state, logits), acc in zip(rec.calls, gen.accepted, strict=True):
        real = len(pars) - sum(1 for i, p in enumerate(pars) if i > 0 and p < 0)  # padding hangs off the state
        path, _ = accept_greedy(DraftTree(toks[:real], pars[:real], [0] * real), logits, sampling)
        cases.append(VerifyCase(toks, pars, state, path=path, nodes=real))
        if cases[-1].accepted != acc:
            raise MambaflowError(f"internal: a path of {cases[-1].accepted} accepted drafts, the run accepted {acc}")
    return cases, gen
