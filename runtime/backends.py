"""Backends: one interface over the PyTorch reference and the llvm JIT of the flow.

A backend runs the three phases of one model for a single sequence (batch 1) and keeps
states as `MambaState` tensors, so generation and speculative decoding code are written
once. Logits come back as float32 torch tensors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

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

    def memory(self, context: int = 0):
        """The model's state memory (runtime.backtrack.StateMemory) at `context` tokens:
        what backtracking budgets with. A Mamba's does not depend on the context."""
        from .backtrack import MambaMemory

        return MambaMemory(self.cfg)

    def prefill(self, tokens: torch.Tensor, state: MambaState | None = None):
        """tokens (L,) -> logits (L, V), state after the last token."""
        raise NotImplementedError

    def decode(self, token: int, state: MambaState):
        """one token -> logits (V,), next state."""
        raise NotImplementedError

    def verify(self, tokens: torch.Tensor, parents, state: MambaState):
        """tree tokens (T,), parents (T,) -> logits (T, V), NodeStates (batch 1)."""
        raise NotImplementedError

    def decode_batch(self, tokens: Sequence[int], states: Sequence[MambaState]):
        """B independent decode steps (a tree level drafted at once): token b from
        states[b] (batch-1 states). Returns logits (B, V) and the B next states. This
        default decodes node by node; the torch and llvm backends run one batched step."""
        logits, nxt = [], []
        for tok, st in zip(tokens, states):
            lg, s = self.decode(tok, st)
            logits.append(lg)
            nxt.append(s)
        return torch.stack(logits), nxt

    def draft_chain(self, token: int, state: MambaState, steps: int, vocab_limit: int | None = None):
        """Greedy drafting: decode `token`, then `steps - 1` times the argmax of the last
        logits (over the first `vocab_limit`). Returns the argmax after each step
        (`steps` tokens), the logits (steps, V) and the state after each step."""
        tokens, logits, states = [], [], []
        for _ in range(steps):
            lg, state = self.decode(token, state)
            token = int(torch.argmax(lg if vocab_limit is None else lg[:vocab_limit]))
            tokens.append(token)
            logits.append(lg)
            states.append(state)
        return tokens, torch.stack(logits), states

    def verify_tree(self, tokens, parents, state: MambaState, replay_layers=(), fifo_depth: int | None = None,
                    out=None):
        """Verify for speculative decoding: logits (T, V) and a `TreeCache` from which
        `state_at` backtracks to any node. Layers in `replay_layers` keep their nodes' SSM
        inputs instead of their states; `fifo_depth` bounds the live states of the tree
        scan (the FIFO tree buffer; the tree must have t - parents[t] < fifo_depth).
        `out`: a TreeCache the caller is done with, whose per-node buffers a backend may
        overwrite instead of allocating (torch's out= idea; the speculative loop passes
        the previous round's)."""
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
    def decode_batch(self, tokens, states):
        """The model's own batched decode over the B states stacked on the batch axis."""
        batch = MambaState(torch.cat([s.conv for s in states], 1), torch.cat([s.ssm for s in states], 1))
        logits, st = self.model.decode(torch.tensor([int(t) for t in tokens]), batch)
        return logits, [MambaState(st.conv[:, b : b + 1], st.ssm[:, b : b + 1]) for b in range(len(tokens))]

    @torch.no_grad()
    def verify(self, tokens, parents, state):
        logits, nodes = self.model.verify(torch.as_tensor(tokens)[None], parents, state, return_states=True)
        return logits[0], nodes

    @torch.no_grad()
    def verify_tree(self, tokens, parents, state, replay_layers=(), fifo_depth=None, out=None):
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
    Calls go through `_Call`s prepared once per design, so a call costs a few
    microseconds of Python on top of the compiled code (speculative decoding makes many
    small ones).
    """

    name = "llvm"

    def __init__(self, model, prefill_chunk: int = 16, schedule=None, progress: bool = True):
        self._setup(model, prefill_chunk, schedule, progress)
        self._compile("decode", 1)
        if prefill_chunk > 1:
            self._compile("prefill", prefill_chunk)

    @classmethod
    def from_compiled(cls, model, compiled: dict, prefill_chunk: int = 1) -> "LLVMBackend":
        """A backend over designs compiled elsewhere: {(phase, T): (design, JitFunction)}."""
        self = cls.__new__(cls)
        self._setup(model, prefill_chunk, None, False)
        for key, (design, fn) in compiled.items():
            self._calls[key] = _Call(design, fn, model)
        return self

    def _setup(self, model, prefill_chunk, schedule, progress) -> None:
        super().__init__(model)
        self.schedule = schedule
        self.progress = progress
        self.prefill_chunk = prefill_chunk
        cfg = self.cfg
        self._calls: dict[tuple, _Call] = {}
        self._trees: dict[tuple, tuple] = {}
        self._conv_shape = (cfg.n_layer, 1, cfg.conv_dim, cfg.d_conv)
        self._ssm_shape = (cfg.n_layer, *cfg.ssm_state_shape(1))
        self._node_state = tuple(cfg.ssm_state_shape(1)[1:])
        self._token = np.zeros(1, np.int64)  # decode's input, rewritten per call
        self._act_widths = {"xc": cfg.d_inner if cfg.arch == "mamba1" else cfg.conv_dim, "delta": cfg.d_inner,
                            "B": cfg.d_state, "dt": cfg.nheads}

    def _compile(self, phase: str, T: int, **opts) -> "_Call":
        # verify designs for speculative decoding also differ by replay layers / FIFO depth
        key = (phase, T, *opts.values()) if any(opts.values()) else (phase, T)
        call = self._calls.get(key)
        if call is None:
            from ..flow.capture import capture
            from ..targets.llvm.jit import JitFunction

            if phase == "draft":  # the scheduled decode design, chained (flow.chain)
                from ..flow.chain import build_draft_chain

                design = build_draft_chain(self.design("decode", 1), T, **opts)
            elif phase == "decode_batch":  # the scheduled decode design, T nodes side by side (flow.batch)
                from ..flow.batch import build_decode_batch

                design = build_decode_batch(self.design("decode", 1), T)
            else:
                design = capture(self.model, phase, T=T, progress=self.progress, **opts)
                if self.schedule is not None:
                    design = self.schedule(design)
            call = self._calls[key] = _Call(design, JitFunction(design.module, design.top, progress=self.progress), self.model)
        return call

    def design(self, phase: str, T: int, **opts):
        """The (scheduled) design this backend runs for a phase and size, compiled on first
        use; `opts` are the verify capture options (replay_layers, fifo_depth)."""
        return self._compile(phase, T, **opts).design

    def _state_ptrs(self, state: MambaState) -> tuple[list[int], tuple]:
        """Pointers of the stacked (conv, ssm) state ports, and the tensors (keep them
        alive through the call)."""
        conv, ssm = _c(state.conv), _c(state.ssm)
        if tuple(conv.shape) != self._conv_shape or tuple(ssm.shape) != self._ssm_shape:
            raise MambaflowError(
                f"llvm backend: a state of shapes conv {tuple(conv.shape)}, ssm {tuple(ssm.shape)} does not fit "
                f"this model (conv {self._conv_shape}, ssm {self._ssm_shape}, batch 1)")
        return [conv.data_ptr(), ssm.data_ptr()], (conv, ssm)

    def _step(self, phase: str, tokens_ptr: int, T: int, state: MambaState):
        call = self._compile(phase, T)
        logits = torch.empty(T, self.cfg.vocab_size)
        conv, ssm = torch.empty(self._conv_shape), torch.empty(self._ssm_shape)
        ins, _keep = self._state_ptrs(state)
        call([tokens_ptr, *ins, logits.data_ptr(), conv.data_ptr(), ssm.data_ptr()])
        return logits, MambaState(conv, ssm)

    def prefill(self, tokens, state=None):
        tokens = torch.as_tensor(tokens, dtype=torch.long).contiguous()
        state = self.zero_state() if state is None else state
        parts = []
        pos, C = 0, self.prefill_chunk
        while len(tokens) - pos >= C and C > 1:
            logits, state = self._step("prefill", tokens[pos:].data_ptr(), C, state)
            parts.append(logits)
            pos += C
        while pos < len(tokens):
            logits, state = self._step("decode", tokens[pos:].data_ptr(), 1, state)
            parts.append(logits)
            pos += 1
        return torch.cat(parts), state

    def decode(self, token, state):
        self._token[0] = token
        logits, st = self._step("decode", self._token.ctypes.data, 1, state)
        return logits[0], st

    def draft_chain(self, token, state, steps, vocab_limit=None):
        """The greedy chain in one call of a compiled chain design (flow.chain), one per
        (steps, vocab_limit); step k's state lands in conv[k], ssm[k] (contiguous)."""
        call = self._compile("draft", steps, vocab_limit=vocab_limit)
        self._token[0] = token
        tokens = torch.empty(steps, dtype=torch.long)
        logits = torch.empty(steps, self.cfg.vocab_size)
        conv, ssm = torch.empty(steps, *self._conv_shape), torch.empty(steps, *self._ssm_shape)
        ins, _keep = self._state_ptrs(state)
        # step k's buffers by address arithmetic (no per-step views: this runs every round)
        lg, c, h = logits.data_ptr(), conv.data_ptr(), ssm.data_ptr()
        lb, cb, hb = 4 * self.cfg.vocab_size, 4 * math.prod(self._conv_shape), 4 * math.prod(self._ssm_shape)
        outs = [p for k in range(steps) for p in (lg + k * lb, c + k * cb, h + k * hb)]
        call([self._token.ctypes.data, *ins, tokens.data_ptr(), *outs])
        return tokens.tolist(), logits, _StepStates(conv, ssm)

    def decode_batch(self, tokens, states):
        """One call of a compiled batched decode (flow.batch) of a BATCH_SIZES width: B is
        padded up to the next one (the padding slots rerun node 0 into scratch rows), and
        a frontier wider than the largest is split. Node b's next state lands in conv[b],
        ssm[b] of one stacked buffer."""
        B = len(tokens)
        if B == 1:  # the decode design itself
            lg, st = self.decode(tokens[0], states[0])
            return lg[None], [st]
        P = next((w for w in BATCH_SIZES if w >= B), BATCH_SIZES[-1])
        if B > P:  # wider than the widest design: in chunks
            parts = [self.decode_batch(tokens[i : i + P], states[i : i + P]) for i in range(0, B, P)]
            return torch.cat([lg for lg, _ in parts]), [s for _, sts in parts for s in sts]
        call = self._compile("decode_batch", P)
        toks = np.zeros(P, np.int64)
        toks[:B] = [int(t) for t in tokens]
        logits = torch.empty(P, self.cfg.vocab_size)
        conv, ssm = torch.empty(P, *self._conv_shape), torch.empty(P, *self._ssm_shape)
        keep, ins = [], []
        for b in range(P):
            ptrs, k = self._state_ptrs(states[b if b < B else 0])
            keep.append(k)
            ins += [toks.ctypes.data + 8 * b, *ptrs]
        lg, c, h = logits.data_ptr(), conv.data_ptr(), ssm.data_ptr()
        lb, cb, hb = 4 * self.cfg.vocab_size, 4 * math.prod(self._conv_shape), 4 * math.prod(self._ssm_shape)
        call(ins + [p for b in range(P) for p in (lg + b * lb, c + b * cb, h + b * hb)])
        return logits[:B], _StepStates(conv[:B], ssm[:B])

    def verify(self, tokens, parents, state):
        logits, cache = self.verify_tree(tokens, parents, state)
        # each node's conv state is its window over [committed columns 1.., node inputs]
        seq = torch.cat([state.conv[:, 0, :, 1:], cache.conv_in.transpose(1, 2)], dim=2)
        conv = seq[:, :, cache.windows]  # (L, C, T, K)
        return logits, NodeStates(conv.permute(0, 2, 1, 3)[:, None].contiguous(), torch.stack(cache.ssm)[:, None])

    def verify_tree(self, tokens, parents, state, replay_layers=(), fifo_depth=None, out=None):
        """Verify through a design compiled for these replay layers and FIFO depth (one per
        combination and tree size, on first use): checkpointing layers write every node's
        SSM state, replaying ones their SSM inputs; conv inputs leave every layer. With
        `out`, its node-state and conv-input buffers are reused when their shapes fit
        (fresh megabytes per round cost page faults)."""
        from .backtrack import REPLAY_ACTIVATIONS, TreeCache

        cfg = self.cfg
        tokens = torch.as_tensor(tokens, dtype=torch.long).contiguous()
        T = len(tokens)
        replay = tuple(sorted(set(int(i) for i in replay_layers))) if replay_layers else ()
        windows, par, parents = self._tree(parents, fifo_depth)
        call = self._compile("verify", T, replay_layers=replay, fifo_depth=fifo_depth)
        L = cfg.n_layer
        logits = torch.empty(T, cfg.vocab_size)
        conv_in = _reuse(out and out.conv_in, (L, T, cfg.conv_dim))
        ins, _keep = self._state_ptrs(state)
        ptrs = [tokens.data_ptr(), windows.data_ptr(), par.data_ptr(), *ins, logits.data_ptr(), conv_in.data_ptr()]
        # the stacked ports span every layer; a layer writes only the slices of its kind
        # (checkpointing: its node states; replaying: its SSM inputs), and pages no
        # layer writes are never touched
        states = None
        if len(replay) < L:
            states = _reuse(out and out.states, (L, T, *self._node_state))
            ptrs.append(states.data_ptr())
        names = REPLAY_ACTIVATIONS[cfg.arch] if replay else ()
        act = {n: torch.empty(L, T, self._act_widths[n]) for n in names}
        ptrs += [act[n].data_ptr() for n in names]
        ssm = [None if i in replay else states[i] for i in range(L)]
        acts = [{n: act[n][i] for n in names} if i in replay else None for i in range(L)]
        call(ptrs)
        return logits, TreeCache(state, parents, windows, conv_in, ssm, acts, fifo_depth, states=states)

    def _tree(self, parents, fifo_depth):
        """(windows, parents tensor, parents list) of a tree, cached: speculative decoding
        verifies the same few shapes (a padded chain, a static tree) over and over."""
        from .backtrack import fifo_ok

        key = (tuple(int(p) for p in parents), fifo_depth)
        hit = self._trees.get(key)
        if hit is None:
            plist = list(key[0])
            if fifo_depth is not None and not fifo_ok(plist, fifo_depth):
                raise MambaflowError(f"verify_tree: the tree does not fit a FIFO tree buffer of depth {fifo_depth}; "
                                     "order its nodes breadth-first or give a deeper buffer")
            hit = (tree_conv_windows(plist, self.cfg.d_conv).contiguous(), torch.tensor(plist, dtype=torch.long),
                   plist)
            if len(self._trees) < 4096:
                self._trees[key] = hit
        return hit


#: the frontier widths the llvm backend compiles a batched decode for (flow.batch)
BATCH_SIZES = (2, 4, 8, 16)


class _StepStates(Sequence):
    """The state after each step of a draft chain, as views made when asked for (the
    speculative loop reads one or two of them per round)."""

    def __init__(self, conv: torch.Tensor, ssm: torch.Tensor):
        self.conv, self.ssm = conv, ssm

    def __len__(self) -> int:
        return len(self.conv)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return MambaState(self.conv[k], self.ssm[k])


class _Call:
    """A compiled design made ready to call once: every argument's MLIR memref descriptor
    (allocated and aligned pointers, offset, sizes, strides; int64 words) laid out in one
    block from the design's port shapes, the weights bound, and the packed call over the
    block. A call writes its buffers' pointers into the block and runs: nothing is built
    per call, which matters for the many small calls of speculative decoding. Not
    reentrant (one block per design)."""

    def __init__(self, design, fn, model):
        from ..targets.llvm.jit import descriptors

        self.design = design
        self.weights = design.weights(model)  # the weight descriptors point into these
        self._wblock, waddrs = descriptors(self.weights)
        words: list[int] = []
        starts: list[int] = []
        for p in design.ports:
            if p.role == "weight":
                continue
            starts.append(len(words))
            words += (0, 0, 0, *p.shape, *_strides(tuple(p.shape)))
        self._block = np.array(words, dtype=np.int64)
        self._ptr_words = np.array([w for s in starts for w in (s, s + 1)], dtype=np.int64)
        base = self._block.ctypes.data
        addrs = [base + 8 * s for s in starts]
        n_in = sum(p.role in ("input", "state") for p in design.ports)
        self.nbuf = len(starts)
        self._run = fn.bind(addrs[:n_in] + waddrs + addrs[n_in:])

    def __call__(self, ptrs: list[int]) -> None:
        """Run with the data pointers of every non-weight argument, in port order
        (contiguous buffers of the ports' shapes and dtypes, alive through the call)."""
        if len(ptrs) != self.nbuf:
            raise MambaflowError(f"internal: design '{self.design.top}' takes {self.nbuf} buffers, got {len(ptrs)}")
        self._block[self._ptr_words] = [p for p in ptrs for _ in (0, 1)]
        self._run()


def _reuse(buf: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """`buf` when it is a float32 buffer of `shape`, else a new one."""
    if buf is not None and tuple(buf.shape) == shape and buf.dtype is torch.float32 and buf.is_contiguous():
        return buf
    return torch.empty(shape)


@functools.lru_cache(maxsize=None)
def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, n = [], 1
    for d in reversed(shape):
        out.append(n)
        n *= d
    return tuple(reversed(out))


def _c(t: torch.Tensor) -> torch.Tensor:
    """A contiguous float32 CPU tensor (the tensor itself when it already is one)."""
    if t.dtype is torch.float32 and t.is_contiguous() and not t.requires_grad:
        return t
    return t.detach().to(torch.float32).contiguous()


def make_backend(name: str, model, **kw) -> Backend:
    """The backend `name` ('torch' or 'llvm') of a Mamba model; a transformer
    (models.transformer.TransformerLM) always gets runtime.transformer's backend, whose
    engine is transformers on PyTorch (the llvm flow builds Mamba models only)."""
    from ..models.transformer import is_transformer

    if name not in ("torch", "llvm"):
        raise MambaflowError(f"unknown backend '{name}': choose 'torch' or 'llvm'")
    if is_transformer(model):
        from .transformer import TransformerBackend

        return TransformerBackend(model)
    if name == "torch":
        return TorchBackend(model)
    if name == "llvm":
        return LLVMBackend(model, **kw)
    raise MambaflowError(f"unknown backend '{name}': choose 'torch' or 'llvm'")
