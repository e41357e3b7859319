"""Pieces shared by Mamba1 and Mamba2: decode states, token trees, the causal conv, the
selective-scan recurrence, RMSNorm, and the language-model wrapper that runs the three
phases (prefill, decode, verify) over the mixer layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaflow.errors import MambaflowError

from .config import MambaConfig


@dataclass
class MambaState:
    """Decode state of every layer, stacked on dim 0.

    conv: (n_layer, B, conv_dim, d_conv), the last d_conv pre-conv inputs, oldest first.
    ssm:  (n_layer, B, d_inner, N) for mamba1, (n_layer, B, H, P, N) for mamba2.
    """

    conv: Tensor
    ssm: Tensor

    @classmethod
    def zeros(cls, cfg: MambaConfig, batch: int, dtype=torch.float32, device=None) -> MambaState:
        conv = torch.zeros(cfg.n_layer, batch, cfg.conv_dim, cfg.d_conv, dtype=dtype, device=device)
        ssm = torch.zeros(cfg.n_layer, *cfg.ssm_state_shape(batch), dtype=dtype, device=device)
        return cls(conv, ssm)

    def clone(self) -> MambaState:
        return MambaState(self.conv.clone(), self.ssm.clone())


@dataclass
class NodeStates:
    """The state after each node of a verified token tree (the state decoding would
    reach at that node).

    conv: (n_layer, B, T, conv_dim, d_conv); ssm: (n_layer, B, T, ...ssm state dims).
    """

    conv: Tensor
    ssm: Tensor

    def select(self, nodes: int | Tensor) -> MambaState:
        """The MambaState at one node: ``nodes`` is an int (same node for the whole batch)
        or a LongTensor (B,) with one node per batch row, e.g. the last accepted one."""
        if isinstance(nodes, int):
            return MambaState(self.conv[:, :, nodes], self.ssm[:, :, nodes])
        rows = torch.arange(self.conv.shape[1], device=self.conv.device)
        return MambaState(self.conv[:, rows, nodes], self.ssm[:, rows, nodes])


# Let torch.export / pytree flatten states passed into and out of exported phases.
torch.export.register_dataclass(MambaState, serialized_type_name="mambaflow.MambaState")
torch.export.register_dataclass(NodeStates, serialized_type_name="mambaflow.NodeStates")


def tree_conv_windows(parents, d_conv: int) -> Tensor:
    """Conv windows of the nodes of a token tree.

    ``parents[i]`` is node i's parent (< i) or -1 for a child of the committed state.
    Returns a LongTensor (T, d_conv) of indices into the sequence
    ``[committed conv-state columns 1..d_conv-1, node inputs 0..T-1]``: index j < d_conv-1
    is conv-state column j+1, index d_conv-1+k is node k. Row i lists node i's d_conv-1
    nearest ancestors (oldest first, falling back into the committed columns when the
    path is shorter) and then node i itself; a chain gives rows [t, t+1, ..., t+d_conv-1].
    """
    parents = _parents_list(parents)
    # The committed state's own window is conv-state columns 0..d_conv-1, i.e. indices
    # -1..d_conv-2 (column 0 never enters a child's window, so -1 is never kept).
    root = list(range(-1, d_conv - 1))
    windows = []
    for i, p in enumerate(parents):
        above = root if p < 0 else windows[p]
        windows.append(above[1:] + [d_conv - 1 + i])
    return torch.tensor(windows, dtype=torch.long).reshape(len(parents), d_conv)


def _parents_list(parents) -> list[int]:
    """Validated parent indices as a Python list (the tree shape is static structure)."""
    if isinstance(parents, Tensor):
        if parents.dim() != 1 or parents.dtype not in (torch.int32, torch.int64):
            raise MambaflowError(
                f"tree parents must be a 1-D integer tensor, got dtype {parents.dtype} and "
                f"shape {tuple(parents.shape)}; pass e.g. torch.tensor([-1, 0, 0, 1])."
            )
        parents = parents.tolist()
    parents = [int(p) for p in parents]
    for i, p in enumerate(parents):
        if not -1 <= p < i:
            raise MambaflowError(
                f"tree parents[{i}] = {p} is invalid: a node's parent must come before it "
                f"(-1 <= parent < {i}); order the nodes topologically (e.g. breadth-first)."
            )
    return parents


@dataclass(frozen=True)
class TokenTree:
    """A validated token tree: parent list and each node's conv window."""

    parents: list[int]
    windows: Tensor  # (T, d_conv), see tree_conv_windows

    @classmethod
    def from_parents(cls, parents, d_conv: int) -> TokenTree:
        parents = _parents_list(parents)
        return cls(parents, tree_conv_windows(parents, d_conv))


def causal_conv_silu(xs: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor,
                     tree: TokenTree | None = None) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv that continues from ``conv_state``, then SiLU.

    xs: (B, T, C) pre-conv inputs; conv_state: (B, C, K) the K inputs before them;
    weight (C, 1, K), bias (C,). Returns the activations (B, T, C) and, for a chain
    (tree None), the new conv state (B, C, K), or for a tree each node's conv state
    (B, T, C, K) — which is exactly that node's window.
    """
    k = conv_state.shape[-1]
    # The committed columns 1..K-1 replace the zero padding of a from-scratch conv.
    seq = torch.cat([conv_state[..., 1:], xs.transpose(1, 2)], dim=-1)  # (B, C, K-1+T)
    if tree is None:
        out = F.conv1d(seq, weight, bias, groups=seq.shape[1])  # (B, C, T)
        return F.silu(out.transpose(1, 2)), seq[..., -k:]
    win = seq[:, :, tree.windows.to(seq.device)]  # (B, C, T, K)
    out = (win * weight[:, None, 0, :]).sum(-1) + bias[:, None]  # (B, C, T)
    return F.silu(out.transpose(1, 2)), win.transpose(1, 2)


def ssm_scan(dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor, h0: Tensor,
             parents: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """The selective-scan recurrence, one token at a time (selective_scan_ref):

        h_t = exp(dt_t * A) * h_prev + (dt_t * x_t) (x) B_t,    y_t = sum_n h_t[..., n] * C_t[..., n]

    with h_prev = h_{t-1} (a chain, ``parents`` None) or h_{parents[t]} (a tree; -1 is h0).
    Shapes are chosen by the caller so that one loop serves both archs (time on dim 1):
      mamba1: dt, x (B, T, D); A (D, N); B, C (B, T, 1, N); h0 (B, D, N); y (B, T, D)
      mamba2: dt (B, T, H, 1); x (B, T, H, P); A (H, 1, 1); B, C (B, T, H, 1, N);
              h0 (B, H, P, N); y (B, T, H, P)
    Returns y and the final state (chain) or every node's state stacked on dim 1 (tree).
    """
    dtx = dt * x
    h, ys, hs = h0, [], []
    for t in range(x.shape[1]):
        if parents is not None:
            h = h0 if parents[t] < 0 else hs[parents[t]]
        h = torch.exp(dt[:, t, ..., None] * A) * h + dtx[:, t, ..., None] * B[:, t]
        ys.append((h * C[:, t]).sum(-1))
        if parents is not None:
            hs.append(h)
    return torch.stack(ys, dim=1), (h if parents is None else torch.stack(hs, dim=1))


def inverse_softplus_dt(n: int, cfg: MambaConfig) -> Tensor:
    """mamba_ssm's dt bias init: softplus^-1 of dt ~ log-uniform in [dt_min, dt_max]."""
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    dt = torch.exp(torch.rand(n) * (hi - lo) + lo).clamp(min=cfg.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """One layer's pre-norm and mixer; MambaLMBase._run applies
    residual += mixer(norm(residual)), keeping the residual stream in float32."""

    def __init__(self, cfg: MambaConfig, mixer: nn.Module):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.mixer = mixer


class Backbone(nn.Module):
    def __init__(self, cfg: MambaConfig, mixer_cls):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, mixer_cls(cfg)) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.rms_eps)


class MambaLMBase(nn.Module):
    """A Mamba language model: embeddings, mixer blocks, final norm, tied LM head.

    Parameter names are Hugging Face's, so ``state_dict()`` is an HF checkpoint (with
    ``lm_head.weight`` the very Parameter ``backbone.embeddings.weight``). Subclasses give
    ``mixer_cls`` (whose ``forward(u, conv_state, ssm_state, tree, scan)`` returns the
    output and the new or per-node states) and ``scans`` (the first is the default).
    """

    mixer_cls: type
    scans: tuple[str, ...]

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg, self.mixer_cls)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.backbone.embeddings.weight
        self._init_weights()

    def _init_weights(self):
        """mamba_ssm's _init_weights: N(0, 0.02) embeddings and out_proj rescaled by
        1/sqrt(n_layer) (one residual branch per layer). The mixers set up their own SSM
        parameters (dt bias, A_log, D) when built."""
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        for layer in self.backbone.layers:
            out_proj = layer.mixer.out_proj
            nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                out_proj.weight /= math.sqrt(self.config.n_layer)

    # -- the three phases -----------------------------------------------------------

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits (B, L, V) of a sequence from the zero state (training / evaluation)."""
        return self.prefill(tokens)[0]

    def prefill(self, tokens: Tensor, state: MambaState | None = None,
                scan: str | None = None) -> tuple[Tensor, MambaState]:
        """Run tokens (B, L) from ``state`` (zeros if None): logits (B, L, V) and the
        state after the last token. ``scan`` picks the SSM algorithm (see ``scans``)."""
        tokens = self._check_tokens(tokens, 2, "prefill", "(B, L)")
        scan = self.scans[0] if scan is None else scan
        if scan not in self.scans:
            raise MambaflowError(
                f"{type(self).__name__}.prefill: scan={scan!r} is not available for "
                f"{self.config.arch}; use one of {', '.join(self.scans)}."
            )
        state = self._check_state(state, tokens.shape[0], "prefill")
        logits, conv, ssm = self._run(tokens, state, None, scan)
        return logits, MambaState(conv, ssm)

    def decode(self, token: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One step: token (B,) from ``state`` gives logits (B, V) and a new state (the
        input state is left untouched)."""
        token = self._check_tokens(token, 1, "decode", "(B,)")
        state = self._check_state(state, token.shape[0], "decode")
        logits, conv, ssm = self._run(token[:, None], state, None, "sequential")
        return logits[:, 0], MambaState(conv, ssm)

    def verify(self, tokens: Tensor, parents, state: MambaState | None = None,
               return_states: bool = False):
        """Score a token tree from the committed ``state``.

        tokens (B, T) are the nodes, ``parents`` (T,) their parent indices (parents[i] < i,
        -1 = child of the committed state). Returns logits (B, T, V): node i's logits are
        those decoding its root-to-node path would give. With ``return_states`` also
        returns NodeStates (the state after each node) for picking the accepted one.
        """
        tokens = self._check_tokens(tokens, 2, "verify", "(B, T)")
        tree = TokenTree.from_parents(parents, self.config.d_conv)
        if len(tree.parents) != tokens.shape[1]:
            raise MambaflowError(
                f"verify: {len(tree.parents)} parents for {tokens.shape[1]} tree tokens; "
                "give exactly one parent index per token."
            )
        state = self._check_state(state, tokens.shape[0], "verify")
        logits, conv, ssm = self._run(tokens, state, tree, "sequential")
        return (logits, NodeStates(conv, ssm)) if return_states else logits

    def _run(self, tokens, state, tree, scan):
        h = self.backbone.embeddings(tokens)
        convs, ssms = [], []
        for i, layer in enumerate(self.backbone.layers):
            out, conv, ssm = layer.mixer(layer.norm(h), state.conv[i], state.ssm[i], tree, scan)
            h = h + out
            convs.append(conv)
            ssms.append(ssm)
        logits = self.lm_head(self.backbone.norm_f(h))
        return logits, torch.stack(convs), torch.stack(ssms)

    # -- input checks ---------------------------------------------------------------

    def _check_tokens(self, tokens, ndim, phase, shape):
        if not isinstance(tokens, Tensor) or tokens.dim() != ndim or tokens.dtype not in (
                torch.int32, torch.int64):
            got = (f"{tokens.dtype} tensor of shape {tuple(tokens.shape)}"
                   if isinstance(tokens, Tensor) else type(tokens).__name__)
            raise MambaflowError(
                f"{phase}: tokens must be an integer tensor of shape {shape}, got {got}."
            )
        if tokens.shape[-1] == 0 or tokens.shape[0] == 0:
            raise MambaflowError(f"{phase}: tokens {tuple(tokens.shape)} is empty; pass at "
                                 "least one token per batch row.")
        # Value checks read the data, which an exporting tracer cannot do.
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise MambaflowError(
                    f"{phase}: token ids must lie in [0, {self.config.vocab_size}), got "
                    f"min {lo}, max {hi}; check the tokenizer matches the model."
                )
        return tokens

    def _check_state(self, state, batch, phase):
        w = self.backbone.embeddings.weight
        if state is None:
            return MambaState.zeros(self.config, batch, dtype=w.dtype, device=w.device)
        want = MambaState.zeros(self.config, batch, device="meta")
        for name in ("conv", "ssm"):
            got = getattr(state, name)
            if not isinstance(got, Tensor) or got.shape != getattr(want, name).shape:
                shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
                raise MambaflowError(
                    f"{phase}: state.{name} has shape {shape}, expected "
                    f"{tuple(getattr(want, name).shape)} for batch {batch}; build it with "
                    f"MambaState.zeros(cfg, {batch}) or take it from prefill/decode."
                )
        return state
