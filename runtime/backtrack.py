"""Backtracking a model's state to the accepted node of a speculative tree.

After the target verifies a token tree, its state must move to the last accepted node.
Three strategies, one interface (`Backtrack`), chosen per model and, for the target, per
layer:

- checkpoint: the verify pass writes every node's SSM state out; backtracking picks the
  accepted node's. No recompute, T states held per layer.
- replay: the verify pass keeps its live states in the FIFO tree buffer only and writes
  each node's SSM *inputs* out (x after the conv, delta and B for Mamba1; the conv output
  xBC and the raw dt for Mamba2: C and z do not change the state). Backtracking replays
  h <- exp(delta A) h + delta x B along the accepted path from the committed state.
- hybrid (SpecMamba's memory-aware hybrid): a memory budget decides, per model and per
  target layer. The draft, whose states are small and which needs each node's state to
  grow the tree anyway, checkpoints; target layers checkpoint while the budget lasts
  (cheapest first), the rest replay.

Every strategy keeps each node's conv *inputs* (one column per node): a node's conv
state is its window over them (`TreeCache.conv_at`), in all three.

The draft grows the tree level by level, one batched step per level (runtime.trees). For
the draft, "checkpoint" keeps every drafted node's state; "replay" keeps only the states
still needed to grow the tree (the frontier and the level it is stepping to) and re-runs the accepted tokens through the draft at the start
of the next round.

Memory is counted in bytes of float32 state the strategy holds at once: the committed
state, the per-node storage (states or activations), and the live working states (the
FIFO tree buffer of the verify pass, the draft's frontier). `peak_bytes` is the maximum
over a generation, per model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MambaflowError
from ..models.common import MambaState
from ..models.config import MambaConfig

F32 = 4  # bytes per state value

#: the SSM inputs a replaying layer keeps per node (the flow's verify outputs them by these names)
REPLAY_ACTIVATIONS = {"mamba1": ("xc", "delta", "B"), "mamba2": ("xc", "dt")}


# ------------------------------------------------------------------ the cache


@dataclass
class TreeCache:
    """What one verify pass leaves for backtracking to any node of the tree (batch 1).

    base: the committed state the tree grew from; windows (T, K): tree_conv_windows;
    conv_in (n_layer, T, conv_dim): every node's pre-conv input;
    ssm[l]: (T, *ssm state) every node's SSM state (layer l checkpoints) or None;
    acts[l]: {name: (T, width)} the SSM inputs REPLAY_ACTIVATIONS (layer l replays) or None.
    """

    base: MambaState
    parents: list[int]
    windows: Tensor
    conv_in: Tensor
    ssm: list[Tensor | None]
    acts: list[dict[str, Tensor] | None]
    fifo_depth: int | None = None
    # (n_layer, T, *ssm): the stacked node states (a replaying layer leaves its slice
    # unwritten), reused by the next verify pass; state_at reads it when no layer replays
    states: Tensor | None = None

    @property
    def replay_layers(self) -> tuple[int, ...]:
        return tuple(i for i, s in enumerate(self.ssm) if s is None)

    def path_to(self, node: int) -> list[int]:
        """The nodes from the root of the tree down to `node`, in order."""
        from .trees import path_to

        return path_to(self.parents, node)

    def conv_at(self, node: int) -> Tensor:
        """(n_layer, 1, conv_dim, K): the conv state after `node`, its window."""
        # window entry w < K-1: column w+1 of the committed conv state; else node w-(K-1)'s
        # input. Deep nodes read inputs only: one gather (backtracking runs every round).
        K = self.base.conv.shape[-1]
        w = self.windows[node]
        if int(w[0]) >= K - 1:
            return self.conv_in.index_select(1, w - (K - 1)).transpose(1, 2).contiguous().unsqueeze(1)
        cols = [self.base.conv[:, 0, :, v + 1] if v < K - 1 else self.conv_in[:, v - K + 1] for v in w.tolist()]
        return torch.stack(cols, dim=-1).unsqueeze(1)

    def held_bytes(self) -> int:
        """Bytes of per-node storage plus the committed state (what backtracking needs)."""
        n = self.base.conv.numel() + self.base.ssm.numel() + self.conv_in.numel()
        for s, a in zip(self.ssm, self.acts):
            n += s.numel() if s is not None else sum(t.numel() for t in a.values())
        return n * F32


def replay_ssm(model, base_ssm: Tensor, layer: int, acts: dict[str, Tensor], path: list[int]) -> Tensor:
    """Recompute layer `layer`'s SSM state after the nodes `path` (root first) from the
    committed state `base_ssm` (1, *ssm) and the nodes' cached SSM inputs."""
    cfg: MambaConfig = model.config
    mixer = model.backbone.layers[layer].mixer
    h = base_ssm[0]
    if not path:
        return h[None].clone()
    idx = torch.as_tensor(path)
    with torch.no_grad():
        A = -torch.exp(mixer.A_log.detach().float())
        if cfg.arch == "mamba1":
            x, dt, B = acts["xc"][idx], acts["delta"][idx], acts["B"][idx]  # (n, E), (n, E), (n, N)
            for k in range(len(path)):
                h = torch.exp(dt[k, :, None] * A) * h + (dt[k] * x[k])[:, None] * B[k][None, :]
        else:
            E, G, N, H, P = cfg.d_inner, cfg.ngroups, cfg.d_state, cfg.nheads, cfg.headdim
            xbc = acts["xc"][idx]
            x = xbc[:, :E].reshape(-1, H, P)
            B = xbc[:, E : E + G * N].reshape(-1, G, N).repeat_interleave(H // G, dim=1)  # (n, H, N)
            dt = F.softplus(acts["dt"][idx] + mixer.dt_bias.detach().float())
            if cfg.time_step_limit != (0.0, float("inf")):
                dt = dt.clamp(*cfg.time_step_limit)
            for k in range(len(path)):
                h = torch.exp(dt[k] * A)[:, None, None] * h + (dt[k][:, None] * x[k])[:, :, None] * B[k][:, None, :]
    return h[None]


def state_at(model, cache: TreeCache, node: int) -> MambaState:
    """The model's state after `node` of a verified tree: conv from the node's window,
    SSM picked (checkpointed layers) or replayed along the path (replaying layers, all
    of them at once)."""
    replay = cache.replay_layers
    if not replay and cache.states is not None:  # one (n_layer, T, ...) buffer: one copy
        return MambaState(cache.conv_at(node), cache.states[:, node].unsqueeze(1).clone())
    ssm = [None if s is None else s[node] for s in cache.ssm]
    if replay:
        path = cache.path_to(node)
        for layer, h in zip(replay, replay_layers_ssm(model, cache, replay, path)):
            ssm[layer] = h
    return MambaState(cache.conv_at(node), torch.stack(ssm).unsqueeze(1))


def replay_layers_ssm(model, cache: TreeCache, layers: tuple[int, ...], path: list[int]) -> Tensor:
    """`replay_ssm` for several layers in one batch (same shapes in every layer):
    returns (len(layers), *ssm state)."""
    cfg: MambaConfig = model.config
    idx = torch.as_tensor(path, dtype=torch.long)
    mixers = [model.backbone.layers[i].mixer for i in layers]
    h = cache.base.ssm[list(layers), 0]
    with torch.no_grad():
        A = -torch.exp(torch.stack([m.A_log.detach().float() for m in mixers]))
        acts = {k: torch.stack([cache.acts[i][k][idx] for i in layers], dim=1) for k in cache.acts[layers[0]]}
        if cfg.arch == "mamba1":  # acts (n, layers, width); A (layers, E, N); h (layers, E, N)
            x, dt, B = acts["xc"], acts["delta"], acts["B"]
            dA = torch.exp(dt[..., None] * A)
            dBx = (dt * x)[..., None] * B[:, :, None, :]
        else:  # A (layers, H); h (layers, H, P, N)
            E, G, N, H, P = cfg.d_inner, cfg.ngroups, cfg.d_state, cfg.nheads, cfg.headdim
            xbc = acts["xc"]
            x = xbc[..., :E].unflatten(-1, (H, P))
            B = xbc[..., E : E + G * N].unflatten(-1, (G, N)).repeat_interleave(H // G, dim=-2)
            bias = torch.stack([m.dt_bias.detach().float() for m in mixers])
            dt = F.softplus(acts["dt"] + bias)
            if cfg.time_step_limit != (0.0, float("inf")):
                dt = dt.clamp(*cfg.time_step_limit)
            dA = torch.exp(dt * A)[..., None, None]
            dBx = (dt[..., None] * x)[..., None] * B[..., None, :]
        for k in range(len(path)):
            h = dA[k] * h + dBx[k]
    return h


class torch_replay_activations:
    """Forward hooks that collect, during one PyTorch verify pass, the SSM inputs of the
    layers in `layers` (batch row 0): {layer: {name: (T, width)}}; `close()` removes the
    hooks and returns them. Mamba2's post-conv xBC is no module's input or output, so it
    is rebuilt from in_proj's output with the model's own conv (causal_conv_silu)."""

    def __init__(self, model, layers):
        self.model, self.acts, self.hooks = model, {i: {} for i in layers}, []
        cfg = model.config
        for i in layers:
            mixer = model.backbone.layers[i].mixer
            got = self.acts[i]
            if cfg.arch == "mamba1":
                R, N = cfg.dt_rank, cfg.d_state

                def x_proj_hook(mod, inp, out, got=got):
                    got["xc"] = inp[0][0].detach().clone()
                    got["B"] = out[0, :, R : R + N].detach().clone()

                def dt_proj_hook(mod, inp, out, got=got):
                    got["delta"] = F.softplus(out[0]).detach().clone()

                self.hooks += [mixer.x_proj.register_forward_hook(x_proj_hook),
                               mixer.dt_proj.register_forward_hook(dt_proj_hook)]
            else:
                E, CD = cfg.d_inner, cfg.conv_dim

                def in_proj_hook(mod, inp, out, got=got):
                    got["xBC_in"] = out[0, :, E : E + CD].detach().clone()
                    got["dt"] = out[0, :, E + CD :].detach().clone()

                def mixer_pre_hook(mod, args, got=got):
                    got["conv_state"] = args[1][0].detach().clone()
                    got["tree"] = args[3]

                self.hooks += [mixer.in_proj.register_forward_hook(in_proj_hook),
                               mixer.register_forward_pre_hook(mixer_pre_hook)]

    def close(self) -> dict[int, dict[str, Tensor]]:
        from ..models.common import causal_conv_silu

        for h in self.hooks:
            h.remove()
        if self.model.config.arch == "mamba2":
            for i, got in self.acts.items():
                if "xBC_in" not in got:
                    continue
                conv = self.model.backbone.layers[i].mixer.conv1d
                with torch.no_grad():
                    xc, _ = causal_conv_silu(got.pop("xBC_in")[None], got.pop("conv_state")[None],
                                             conv.weight, conv.bias, got.pop("tree"))
                got["xc"] = xc[0]
        return self.acts


# ------------------------------------------------------------ memory model


def state_bytes(cfg: MambaConfig) -> tuple[int, int]:
    """Bytes of one layer's (conv state, SSM state), batch 1."""
    ssm = 1
    for d in cfg.ssm_state_shape(1):
        ssm *= d
    return cfg.conv_dim * cfg.d_conv * F32, ssm * F32


def act_bytes(cfg: MambaConfig) -> int:
    """Bytes one node's cached SSM inputs take in a replaying layer."""
    if cfg.arch == "mamba1":
        return (2 * cfg.d_inner + cfg.d_state) * F32
    return (cfg.conv_dim + cfg.nheads) * F32


def verify_bytes(cfg: MambaConfig, T: int, replay_layers, fifo_depth: int | None, breakdown: bool = False):
    """Peak bytes of state the target holds around one verify pass of T nodes:
    committed: the state the tree grows from;
    per_node: every node's conv input, and per layer the T node states (checkpoint) or the
      T nodes' SSM inputs (replay): what backtracking reads;
    live: the FIFO tree buffer, `fifo_depth` states per layer (on chip; without a FIFO a
      replaying layer needs all T), plus one state being replayed.
    Returns the total, or the dict of parts with `breakdown`."""
    conv, ssm = state_bytes(cfg)
    replay = set(replay_layers)
    L = cfg.n_layer
    per_node = L * T * cfg.conv_dim * F32
    live = 0
    for layer in range(L):
        per_node += T * (act_bytes(cfg) if layer in replay else ssm)
        if fifo_depth is not None:
            live += fifo_depth * ssm
        elif layer in replay:
            live += T * ssm
    if replay:
        live += ssm
    parts = dict(committed=L * (conv + ssm), per_node=per_node, live=live)
    parts["total"] = sum(parts.values())
    return parts if breakdown else parts["total"]


# ------------------------------------------------ memory per model kind


class StateMemory:
    """What the backtracking strategies budget with, per model (whatever its kind):

    replayable_layers: layers that may replay instead of checkpointing (0: none);
    state_bytes(): one whole-model state (what the committed state and every kept draft
      node cost);
    verify_bytes(T, replay_layers, fifo_depth): the target's peak around a verify pass;
    checkpoint_cost(T, fifo_depth): the extra bytes of one replayable layer checkpointing.

    `MambaMemory` is a Mamba model's; runtime.transformer.KVMemory a transformer's (its
    KV cache at a context length). `Backend.memory(context)` gives a backend's."""

    replayable_layers: int = 0

    def state_bytes(self) -> int:
        raise NotImplementedError

    def verify_bytes(self, T: int, replay_layers=(), fifo_depth: int | None = None) -> int:
        raise NotImplementedError

    def checkpoint_cost(self, T: int, fifo_depth: int | None) -> int:
        raise NotImplementedError

    def draft_bytes(self, checkpoint: bool, nodes: int, live: int | None = None) -> int:
        """Bytes a draft holds: its committed state plus every drafted node's state
        (checkpoint) or only the `live` frontier states (replay)."""
        held = nodes if checkpoint else (live if live is not None else 1)
        return self.state_bytes() * (1 + held)


@dataclass(frozen=True)
class MambaMemory(StateMemory):
    """A Mamba model's state memory: constant in the context length."""

    cfg: MambaConfig

    @property
    def replayable_layers(self) -> int:
        return self.cfg.n_layer

    def state_bytes(self) -> int:
        return self.cfg.n_layer * sum(state_bytes(self.cfg))

    def verify_bytes(self, T: int, replay_layers=(), fifo_depth: int | None = None) -> int:
        return verify_bytes(self.cfg, T, replay_layers, fifo_depth)

    def checkpoint_cost(self, T: int, fifo_depth: int | None) -> int:
        _, ssm = state_bytes(self.cfg)
        return T * (ssm - act_bytes(self.cfg)) - (0 if fifo_depth else T * ssm)  # checkpoint - replay


def as_memory(model) -> StateMemory:
    """A StateMemory from itself or from a MambaConfig."""
    return MambaMemory(model) if isinstance(model, MambaConfig) else model


# ---------------------------------------------------------------- strategies


@dataclass
class Plan:
    """What one model does: the draft's node-state policy, the target's replay layers."""

    draft_checkpoint: bool
    replay_layers: tuple[int, ...]


@dataclass
class Backtrack:
    """One backtracking strategy for a (target, draft) pair; `name` is checkpoint,
    replay or hybrid. `plan(...)` fixes the per-model and per-layer choices for a tree
    size, `peak` collects the bytes held at peak per model during a generation."""

    name: str
    budget_bytes: int | None = None
    peak: dict[str, int] = field(default_factory=lambda: {"target": 0, "draft": 0})
    chosen: Plan | None = None

    def plan(self, target: MambaConfig | StateMemory, draft: MambaConfig | StateMemory, T: int, draft_nodes: int,
             fifo_depth: int | None) -> Plan:
        """target, draft: MambaConfigs or StateMemory (Backend.memory) of the two models."""
        target, draft = as_memory(target), as_memory(draft)
        L = target.replayable_layers
        if self.name == "checkpoint":
            p = Plan(True, ())
        elif self.name == "replay":
            p = Plan(False, tuple(range(L)))
        elif self.name == "hybrid":
            p = self._hybrid(target, draft, T, draft_nodes, fifo_depth)
        else:
            raise MambaflowError(f"unknown backtracking strategy '{self.name}': use checkpoint, replay or hybrid")
        self.chosen = p
        return p

    def _hybrid(self, target: StateMemory, draft: StateMemory, T, draft_nodes, fifo_depth) -> Plan:
        """Start from the least memory (draft re-runs, every target layer replays), then
        buy, while the budget allows: the draft's checkpoints (they save a draft pass over
        the accepted tokens) and target layers' checkpoints (each saves a replay). With no
        budget given: SpecMamba's split, the draft checkpoints and the target replays."""
        L = target.replayable_layers
        if self.budget_bytes is None:
            return Plan(True, tuple(range(L)))
        draft_extra = (draft_nodes - 1) * draft.state_bytes()  # all nodes vs one
        used = target.verify_bytes(T, range(L), fifo_depth) + draft.draft_bytes(False, draft_nodes)
        ckpt_draft = used + draft_extra <= self.budget_bytes
        used += draft_extra if ckpt_draft else 0
        replay = list(range(L))
        per_layer = target.checkpoint_cost(T, fifo_depth)
        # layers are alike in cost: checkpoint the last ones first (a deterministic choice)
        while replay and used + per_layer <= self.budget_bytes:
            replay.pop()
            used += per_layer
        return Plan(ckpt_draft, tuple(replay))

    def record(self, model: str, nbytes: int) -> None:
        self.peak[model] = max(self.peak[model], int(nbytes))


def draft_peak_bytes(cfg: MambaConfig, checkpoint: bool, nodes: int, live: int | None = None) -> int:
    """Bytes a Mamba draft holds (StateMemory.draft_bytes)."""
    return MambaMemory(cfg).draft_bytes(checkpoint, nodes, live)


STRATEGIES = ("checkpoint", "replay", "hybrid")


def fifo_need(parents) -> int:
    """The smallest FIFO tree buffer depth S a tree fits: every node's parent must still
    be in the ring when the node is computed, t - parents[t] < S (1 for a tree whose
    nodes all hang off the committed state)."""
    return max([t - int(p) + 1 for t, p in enumerate(parents) if int(p) >= 0], default=1)


def fifo_ok(parents, depth: int) -> bool:
    return fifo_need(parents) <= depth
