"""Backends: one interface over the PyTorch reference and the llvm JIT of the flow.

A backend runs the three phases of one model for a single sequence (batch 1) and keeps
states as `MambaState` tensors, so generation and speculative decoding code are written
once. Logits come back as float32 torch tensors.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..errors import MambaflowError
from ..models.common import MambaState, NodeStates, tree_conv_windows


class Backend:
    """The phases of one model on one engine, batch 1."""

    name = "backend"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.cfg = model.config

    def zero_state(self) -> MambaState:
        return MambaState.zeros(self.cfg, 1)

    def prefill(self, tokens: torch.Tensor, state: MambaState | None = None):
        """tokens (L,) -> logits (L, V), state after the last token."""
        raise NotImplementedError

    def decode(self, token: int, state: MambaState):
        """one token -> logits (V,), next state."""
        raise NotImplementedError

    def verify(self, tokens: torch.Tensor, parents, state: MambaState):
        """tree tokens (T,), parents (T,) -> logits (T, V), NodeStates (batch 1)."""
        raise NotImplementedError

    def verify_tree(self, tokens, parents, state: MambaState, replay_layers=(), fifo_depth: int | None = None):
        """Verify for speculative decoding: logits (T, V) and a `TreeCache` from which
        `state_at` backtracks to any node. Layers in `replay_layers` keep their nodes' SSM
        inputs instead of their states; `fifo_depth` bounds the live states of the tree
        scan (the FIFO tree buffer; the tree must have t - parents[t] < fifo_depth)."""
        from .backtrack import TreeCache

        if replay_layers:
            raise MambaflowError(f"the {self.name} backend cannot keep replay activations")
        logits, nodes = self.verify(tokens, parents, state)
        conv_in = nodes.conv[:, 0, :, :, -1]  # a node's window ends with its own input
        ssm = [nodes.ssm[i, 0] for i in range(self.cfg.n_layer)]
        return logits, TreeCache(state, [int(p) for p in parents], tree_conv_windows(parents, self.cfg.d_conv),
                                 conv_in, ssm, [None] * self.cfg.n_layer, fifo_depth)

    def state_at(self, cache, node: int) -> MambaState:
        """The state after tree node `node` of a `verify_tree` result (replaying the
        accepted path through the layers that kept activations)."""
        from .backtrack import state_at

        return state_at(self.model, cache, node)


class TorchBackend(Backend):
    """PyTorch eager: the numerical oracle."""

    name = "torch"

    @torch.no_grad()
    def prefill(self, tokens, state=None):
        logits, st = self.model.prefill(torch.as_tensor(tokens)[None], state)
        return logits[0], st

    @torch.no_grad()
    def decode(self, token, state):
        logits, st = self.model.decode(torch.tensor([int(token)]), state)
        return logits[0], st

    @torch.no_grad()
    def verify(self, tokens, parents, state):
        logits, nodes = self.model.verify(torch.as_tensor(tokens)[None], parents, state, return_states=True)
        return logits[0], nodes

    @torch.no_grad()
    def verify_tree(self, tokens, parents, state, replay_layers=(), fifo_depth=None):
        from .backtrack import TreeCache, torch_replay_activations

        replay = sorted(set(int(i) for i in replay_layers))
        grab = torch_replay_activations(self.model, replay)
        try:
            logits, nodes = self.model.verify(torch.as_tensor(tokens)[None], parents, state, return_states=True)
        finally:
            acts = grab.close()
        cfg = self.cfg
        windows = tree_conv_windows(parents, cfg.d_conv)
        conv_in = nodes.conv[:, 0, :, :, -1].contiguous()
        ssm, kept = [], []
        for i in range(cfg.n_layer):
            if i in replay:
                ssm.append(None)
                kept.append(acts[i])
            else:
                ssm.append(nodes.ssm[i, 0])
                kept.append(None)
        return logits[0], TreeCache(state, [int(p) for p in parents], windows, conv_in, ssm, kept, fifo_depth)


class LLVMBackend(Backend):
    """The captured, lowered and JIT-compiled design on the CPU.

    Prefill runs in chunks of `prefill_chunk` tokens through one compiled prefill design
    (the state carries across chunks, so chunking is exact) and the rest token by token
    through the decode design. Verify compiles one design per tree size on first use.
    """

    name = "llvm"

    def __init__(self, model, prefill_chunk: int = 16, schedule=None, progress: bool = True):
        super().__init__(model)
        self.schedule = schedule
        self.progress = progress
        self.prefill_chunk = prefill_chunk
        self._designs: dict[tuple[str, int], tuple] = {}
        self._compile("decode", 1)
        if prefill_chunk > 1:
            self._compile("prefill", prefill_chunk)

    @classmethod
    def from_compiled(cls, model, compiled: dict, prefill_chunk: int = 1) -> "LLVMBackend":
        """A backend over designs compiled elsewhere: {(phase, T): (design, JitFunction)}."""
        self = cls.__new__(cls)
        Backend.__init__(self, model)
        self.schedule, self.progress, self.prefill_chunk = None, False, prefill_chunk
        self._designs = {}
        for key, (design, fn) in compiled.items():
            self._bind(key, design, fn)
        return self

    def _bind(self, key, design, fn):
        from ..targets.llvm.jit import descriptors

        weights = design.weights(self.model)  # kept alive: the descriptors point into them
        self._designs[key] = (design, fn, (weights, *descriptors(weights)))

    def _compile(self, phase: str, T: int, **opts):
        # verify designs for speculative decoding also differ by replay layers / FIFO depth
        key = (phase, T, *opts.values()) if any(opts.values()) else (phase, T)
        if key not in self._designs:
            from ..flow.capture import capture
            from ..targets.llvm.jit import JitFunction

            design = capture(self.model, phase, T=T, progress=self.progress, **opts)
            if self.schedule is not None:
                design = self.schedule(design)
            self._bind(key, design, JitFunction(design.module, design.top))
        return self._designs[key]

    def _run(self, phase: str, T: int, inputs: list, state: MambaState, outs: list, **opts):
        """Call a design. `inputs` and `outs` are (pointer, shape) pairs of contiguous
        buffers (see `_layers`); the state's layers are passed the same way. Descriptors
        are packed into one int64 block from pointers and shapes: no per-array numpy or
        ctypes objects, which dominated small calls."""
        _design, fn, (_weights, _wblock, waddrs) = self._compile(phase, T, **opts)
        conv, ssm = _c(state.conv), _c(state.ssm)
        states = [spec for pair in zip(_layers(conv), _layers(ssm)) for spec in pair]
        # states are only read (outputs go to fresh buffers), so in-place is never aliased
        n_in = len(inputs) + len(states)
        block, addrs = _pack(inputs + states + outs)
        fn.invoke_prepared(addrs[:n_in] + waddrs + addrs[n_in:])
        del block, conv, ssm  # alive until the call returned

    def _step(self, phase: str, tokens: np.ndarray, state: MambaState):
        T = len(tokens)
        cfg = self.cfg
        toks = torch.from_numpy(tokens)
        logits = torch.zeros(T, cfg.vocab_size)
        conv = torch.zeros(cfg.n_layer, 1, cfg.conv_dim, cfg.d_conv)
        ssm = torch.zeros(cfg.n_layer, *cfg.ssm_state_shape(1))
        outs = [_spec(logits)] + [x for pair in zip(_layers(conv), _layers(ssm)) for x in pair]
        self._run(phase, T, [_spec(toks)], state, outs)
        return logits, MambaState(conv, ssm)

    def prefill(self, tokens, state=None):
        tokens = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
        state = self.zero_state() if state is None else state
        parts = []
        pos, C = 0, self.prefill_chunk
        while len(tokens) - pos >= C and C > 1:
            logits, state = self._step("prefill", tokens[pos : pos + C], state)
            parts.append(logits)
            pos += C
        while pos < len(tokens):
            logits, state = self._step("decode", tokens[pos : pos + 1], state)
            parts.append(logits)
            pos += 1
        return torch.cat(parts), state

    def decode(self, token, state):
        logits, st = self._step("decode", np.array([int(token)], np.int64), state)
        return logits[0], st

    def verify(self, tokens, parents, state):
        tokens = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
        T = len(tokens)
        windows = tree_conv_windows(parents, self.cfg.d_conv)
        cfg = self.cfg
        logits = np.zeros((T, cfg.vocab_size), np.float32)
        conv_in = np.zeros((cfg.n_layer, T, cfg.conv_dim), np.float32)
        ssm = np.zeros((cfg.n_layer, T, *cfg.ssm_state_shape(1)[1:]), np.float32)
        outs = [_spec(logits)]
        for i in range(cfg.n_layer):
            outs += [_spec(conv_in[i]), _spec(ssm[i])]
        par = np.asarray([int(p) for p in parents], np.int64)
        ins = [_spec(tokens), _spec(np.ascontiguousarray(windows.numpy())), _spec(par)]
        self._run("verify", T, ins, state, outs)
        # each node's conv state is its window over [committed columns 1.., node inputs]
        seq = torch.cat([state.conv[:, 0, :, 1:], torch.from_numpy(conv_in).transpose(1, 2)], dim=2)
        conv = seq[:, :, windows]  # (L, C, T, K)
        nodes = NodeStates(conv.permute(0, 2, 1, 3)[:, None].contiguous(), torch.from_numpy(ssm)[:, None])
        return torch.from_numpy(logits), nodes

    def verify_tree(self, tokens, parents, state, replay_layers=(), fifo_depth=None):
        """Verify through a design compiled for these replay layers and FIFO depth (one per
        combination and tree size, on first use): checkpointing layers write every node's
        SSM state, replaying ones their SSM inputs; conv inputs leave every layer."""
        from .backtrack import REPLAY_ACTIVATIONS, TreeCache

        cfg = self.cfg
        tokens = torch.as_tensor(tokens, dtype=torch.long).contiguous()
        T = len(tokens)
        replay = tuple(sorted(set(int(i) for i in replay_layers)))
        windows, par, parents = self._tree(parents, fifo_depth)
        if not hasattr(self, "_tree_shapes"):  # config properties are slow to call per step
            self._tree_shapes = (cfg.n_layer, cfg.conv_dim, tuple(cfg.ssm_state_shape(1)[1:]), {
                "xc": cfg.d_inner if cfg.arch == "mamba1" else cfg.conv_dim, "delta": cfg.d_inner,
                "B": cfg.d_state, "dt": cfg.nheads})
        n_layer, conv_dim, ssm_shape, widths = self._tree_shapes
        names = REPLAY_ACTIVATIONS[cfg.arch]
        logits = torch.zeros(T, cfg.vocab_size)
        conv_in = torch.zeros(n_layer, T, conv_dim)
        ckpt = [i for i in range(n_layer) if i not in replay]
        states = torch.zeros(len(ckpt), T, *ssm_shape)  # every node's state, checkpointing layers
        act = {n: torch.zeros(len(replay), T, widths[n]) for n in names}  # SSM inputs, replaying layers
        conv_l, state_l = _layers(conv_in), _layers(states)
        act_l = {n: _layers(a) for n, a in act.items()}
        ssm, acts, outs = [], [], [_spec(logits)]
        for i in range(n_layer):
            outs.append(conv_l[i])
            if i in replay:
                r = replay.index(i)
                outs += [act_l[n][r] for n in names]
                ssm.append(None)
                acts.append({n: act[n][r] for n in names})
            else:
                c = ckpt.index(i)
                outs.append(state_l[c])
                ssm.append(states[c])
                acts.append(None)
        self._run("verify", T, [_spec(tokens), _spec(windows), _spec(par)], state, outs,
                  replay_layers=replay, fifo_depth=fifo_depth)
        return logits, TreeCache(state, parents, windows, conv_in, ssm, acts, fifo_depth)

    def _tree(self, parents, fifo_depth):
        """(windows, parents tensor, parents list) of a tree, cached: speculative decoding
        verifies the same few shapes (a padded chain, a static tree) over and over."""
        from .backtrack import fifo_ok

        key = (tuple(int(p) for p in parents), fifo_depth)
        cache = self.__dict__.setdefault("_trees", {})
        hit = cache.get(key)
        if hit is None:
            plist = list(key[0])
            if fifo_depth is not None and not fifo_ok(plist, fifo_depth):
                raise MambaflowError(f"verify_tree: the tree does not fit a FIFO tree buffer of depth {fifo_depth}; "
                                     "order its nodes breadth-first or give a deeper buffer")
            hit = (tree_conv_windows(plist, self.cfg.d_conv).contiguous(), torch.tensor(plist, dtype=torch.long),
                   plist)
            if len(cache) < 4096:
                cache[key] = hit
        return hit


@functools.lru_cache(maxsize=None)
def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, n = [], 1
    for d in reversed(shape):
        out.append(n)
        n *= d
    return tuple(reversed(out))


def _spec(a) -> tuple[int, tuple[int, ...]]:
    """(data pointer, shape) of a contiguous CPU tensor or numpy array."""
    if isinstance(a, torch.Tensor):
        if not a.is_contiguous():
            raise MambaflowError("internal: llvm call buffers must be contiguous")
        return a.data_ptr(), tuple(a.shape)
    if not a.flags["C_CONTIGUOUS"]:
        raise MambaflowError("internal: llvm call buffers must be contiguous")
    return a.ctypes.data, a.shape


def _layers(t: torch.Tensor) -> list[tuple[int, tuple[int, ...]]]:
    """Specs of t[i] (with a batch-1 dim dropped: t[i, 0]) for every i, by pointer
    arithmetic on one contiguous tensor."""
    full = tuple(t.shape)
    shape = full[2:] if len(full) > 2 and full[1] == 1 else full[1:]
    step = t.element_size() * math.prod(full[1:])
    p = t.data_ptr()
    return [(p + i * step, shape) for i in range(full[0])]


def _pack(specs) -> tuple[np.ndarray, list[int]]:
    """MLIR ranked memref descriptors (allocated, aligned, offset, sizes, strides in
    elements; int64 words on 64-bit hosts) of contiguous buffers, in one block; returns
    the block (keep it alive through the call) and each descriptor's address."""
    words: list[int] = []
    offsets = []
    for p, shape in specs:
        offsets.append(len(words))
        words += (p, p, 0, *shape, *_strides(shape))
    block = np.array(words, dtype=np.int64)
    base = block.ctypes.data
    return block, [base + 8 * o for o in offsets]


def _c(t: torch.Tensor) -> torch.Tensor:
    """A contiguous float32 CPU tensor (the tensor itself when it already is one)."""
    t = t.detach()
    if t.dtype != torch.float32 or not t.is_contiguous():
        t = t.to(torch.float32).contiguous()
    return t


def make_backend(name: str, model, **kw) -> Backend:
    if name == "torch":
        return TorchBackend(model)
    if name == "llvm":
        return LLVMBackend(model, **kw)
    raise MambaflowError(f"unknown backend '{name}': choose 'torch' or 'llvm'")
