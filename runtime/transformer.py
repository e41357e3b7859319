"""A transformers causal LM (GPT-2, Llama) behind the runtime's `Backend` interface, so
plain and speculative generation run a transformer target (or drafter) as they run a
Mamba one. It runs on PyTorch through transformers' own forward (batch 1).

API (what generation, speculative decoding and benchmarks use):

- `TransformerBackend(model)` for a `models.transformer.TransformerLM`
  (``runtime.backends.make_backend`` picks it for such a model, whatever engine is named:
  the llvm flow builds Mamba models only).
- The state is a `KVState`: the KV cache (per layer, keys and values of shape
  (1, n_kv_head, length, head_dim), float32) and its length. States are values: no call
  changes the state it is given (transformers' cache appends by concatenation into new
  tensors), so a drafter may grow several children from one parent state.
- ``prefill(tokens, state=None) -> (logits (L, V), KVState)``,
  ``decode(token, state) -> (logits (V,), KVState)``.
- ``verify_tree(tokens, parents, state) -> (logits (T, V), KVTree)``: the whole draft tree
  in ONE forward pass over the cached prefix, with a 4D attention mask (node t attends
  to the prefix and to its ancestors, itself included) and position ids prefix length +
  depth, so every node sees what sequential decoding of its path would have seen.
  ``replay_layers`` must be empty (a KV cache has nothing to replay) and ``fifo_depth``
  is ignored (attention reads its ancestors from the cache, not from a FIFO).
- ``state_at(tree, node) -> KVState``: the cache of the prefix plus the path to `node`
  (one gather along the sequence), equal to the cache of decoding those tokens.
- Memory: ``kv_cache_bytes(cfg, tokens)`` is the KV cache of `tokens` tokens of context
  (2 x n_layer x n_kv_head x head_dim x tokens values; 4 bytes each in float32, 2 in
  float16) — the drafter-memory comparison evaluates it at 512 / 2k / 8k tokens, next to
  a Mamba drafter's constant ``MambaMemory(cfg).state_bytes()`` (runtime.backtrack).
  ``backend.memory(context)`` is the `KVMemory` the speculative loop budgets with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MambaflowError
from ..models.transformer import TransformerConfig
from .backends import Backend
from .backtrack import F32, StateMemory
from .trees import path_to


def kv_cache_bytes(cfg: TransformerConfig, tokens: int, bytes_per_value: int = F32) -> int:
    """Bytes of a transformer's KV cache holding `tokens` tokens (batch 1)."""
    return 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * int(tokens) * bytes_per_value


@dataclass(frozen=True)
class KVMemory(StateMemory):
    """The state memory of a transformer at `context` tokens: its KV cache. No layer can
    replay (replayable_layers 0); a verify pass of T nodes holds the committed cache and
    the cache extended by the T nodes."""

    cfg: TransformerConfig
    context: int

    replayable_layers = 0

    def state_bytes(self) -> int:
        return kv_cache_bytes(self.cfg, self.context)

    def verify_bytes(self, T: int, replay_layers=(), fifo_depth: int | None = None) -> int:
        return kv_cache_bytes(self.cfg, self.context) + kv_cache_bytes(self.cfg, self.context + T)

    def checkpoint_cost(self, T: int, fifo_depth: int | None) -> int:
        return 0


@dataclass(frozen=True)
class KVState:
    """A transformer's state for batch 1: per-layer keys and values (1, H_kv, length, D)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[-2]) if self.keys else 0

    def cache(self):
        """A fresh transformers DynamicCache over these tensors (a forward pass appends to
        it by concatenation, so this state is left as it is)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=list(zip(self.keys, self.values))) if self.keys else DynamicCache()

    @classmethod
    def of(cls, cache) -> "KVState":
        return cls(tuple(layer.keys for layer in cache.layers), tuple(layer.values for layer in cache.layers))

    def select(self, positions: Tensor) -> "KVState":
        """The cache of the tokens at `positions` (sequence indices, in order)."""
        return KVState(tuple(k.index_select(-2, positions) for k in self.keys),
                       tuple(v.index_select(-2, positions) for v in self.values))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


@dataclass
class KVTree:
    """What one tree verification leaves for backtracking: the committed length, the
    tree's parents and the cache over prefix + every node (in node order)."""

    prefix: int
    parents: list[int]
    kv: KVState

    def path_to(self, node: int) -> list[int]:
        return path_to(self.parents, node)


def tree_attention(parents: Sequence[int], prefix: int, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """The additive 4D mask (1, 1, T, prefix + T) — 0 where node t may attend (the whole
    prefix, its ancestors and itself), the dtype's minimum elsewhere — and the position
    ids (1, T): prefix + depth."""
    T = len(parents)
    anc = torch.eye(T, dtype=torch.bool)
    depth = [0] * T
    for t, p in enumerate(parents):
        p = int(p)
        if p >= t:
            raise MambaflowError(f"verify_tree: node {t} has parent {p}; parents must come before their children")
        if p >= 0:
            anc[t] |= anc[p]
            depth[t] = depth[p] + 1
    allowed = torch.cat([torch.ones(T, prefix, dtype=torch.bool), anc], dim=1)
    mask = torch.zeros(T, prefix + T, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None], torch.tensor(depth, dtype=torch.long)[None] + prefix


class TransformerBackend(Backend):
    """A TransformerLM (transformers GPT-2 / Llama) on PyTorch; see the module docstring."""

    name = "transformers"

    def __init__(self, model):
        super().__init__(model)
        self.hf = model.hf

    def zero_state(self) -> KVState:
        return KVState((), ())

    def memory(self, context: int = 0) -> KVMemory:
        return KVMemory(self.cfg, context)

    def state_bytes(self, state: KVState) -> int:
        return state.nbytes()

    def _forward(self, tokens: Tensor, state: KVState, **kw):
        if state.length + len(tokens) > self.cfg.max_positions:
            raise MambaflowError(
                f"{self.cfg.arch} model: {state.length + len(tokens)} tokens of context exceed its "
                f"{self.cfg.max_positions} positions; generate fewer tokens or use a shorter prompt")
        out = self.hf(input_ids=tokens[None], cache=state.cache(), use_cache=True, **kw)
        return out.logits[0].float(), KVState.of(out.cache)

    @torch.no_grad()
    def prefill(self, tokens, state: KVState | None = None):
        return self._forward(torch.as_tensor(tokens, dtype=torch.long), state or self.zero_state())

    @torch.no_grad()
    def decode(self, token, state: KVState):
        logits, st = self._forward(torch.tensor([int(token)]), state)
        return logits[0], st

    @torch.no_grad()
    def verify_tree(self, tokens, parents, state: KVState, replay_layers=(), fifo_depth=None, out=None):
        if replay_layers:
            raise MambaflowError("the transformers backend keeps a KV cache, which has no layers to replay; "
                                 "pass no replay_layers (use backtrack 'checkpoint' or 'hybrid')")
        parents = [int(p) for p in parents]
        mask, positions = tree_attention(parents, state.length, self.hf.dtype)
        logits, kv = self._forward(torch.as_tensor(tokens, dtype=torch.long), state, attention_mask=mask,
                                   position_ids=positions)
        return logits, KVTree(state.length, parents, kv)

    def verify(self, tokens, parents, state):
        """Logits per node and the state after each node (a KVState per node)."""
        logits, tree = self.verify_tree(tokens, parents, state)
        return logits, [self.state_at(tree, n) for n in range(len(parents))]

    def state_at(self, tree: KVTree, node: int) -> KVState:
        path = torch.tensor(tree.path_to(node), dtype=torch.long) + tree.prefix
        return tree.kv.select(torch.cat([torch.arange(tree.prefix), path]))


__all__ = ["KVMemory", "KVState", "KVTree", "TransformerBackend", "kv_cache_bytes", "tree_attention"]
