"""Train a byte-level language model on the CPU: Mamba1 / Mamba2, or a GPT-2 / Llama
transformer (models/transformer.py) for the transformer targets of speculative decoding.

``train(...)`` runs AdamW with linear warmup and a cosine decay, gradient clipping, on
random windows of the train split of ``mambaflow.data``'s corpus; it shows a tqdm progress
bar, writes the checkpoint (HF layout), a JSON log and a loss-curve PNG. ``main_train``
is the command line (``mambaflow train`` / ``python -m mambaflow.train``).

Determinism: the same arguments, the same thread count, the same torch build and the
same stdlib (the corpus fingerprint is logged) give bit-identical weights; the init is
seeded from ``seed``, the batches from their own generator seeded from ``seed``.

Mamba1 trains with ``prefill(scan="fused")`` (models/scan.py), Mamba2 with the chunked
SSD scan; both agree with the sequential inference scan to float32 rounding. A transformer
(a ``TransformerConfig``, or the shipped ``gpt-target`` / ``gpt-draft``) trains through
transformers' own forward on the same windows, with the same optimizer and schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mambaflow.argtypes import OneLineParser, finite_float, int_at_least
from mambaflow.data import VOCAB_SIZE, Corpus, bits_per_byte, load_corpus
from mambaflow.errors import MambaflowError
from mambaflow.models import MambaConfig, PRESETS, build_model, num_params
from mambaflow.models.config import config_to_hf, pad_vocab_size
from mambaflow.models.transformer import TransformerConfig, build_transformer

TRAIN_SCAN = {"mamba1": "fused", "mamba2": "chunked", "gpt2": None, "llama": None}
# Parameters without weight decay (mamba_ssm's _no_weight_decay set plus norms, biases;
# GPT-2's LayerNorms are ln_1 / ln_2 / ln_f).
_NO_DECAY = ("A_log", ".D", "dt_bias", "bias", "norm", ".ln_")
ModelConfig = MambaConfig | TransformerConfig


def build_any(cfg: ModelConfig) -> torch.nn.Module:
    """A fresh model of `cfg`: a Mamba LM or a transformer (seeded by the caller)."""
    return build_transformer(cfg) if isinstance(cfg, TransformerConfig) else build_model(cfg)


def param_count(cfg: ModelConfig) -> int:
    return cfg.num_params if isinstance(cfg, TransformerConfig) else num_params(cfg)


def config_dict(model, cfg: ModelConfig) -> dict:
    """The config.json the checkpoint of `model` gets (for the training log)."""
    if isinstance(cfg, TransformerConfig):
        return dict(model.hf.config.to_dict(), mambaflow_tokenizer="bytes")
    return config_to_hf(cfg, byte_level=True)


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: ModelConfig
    losses: list[float]                     # train loss per step, bits per token
    heldout: list[tuple[int, float]]        # (step, held-out bits per byte)
    seconds: float                          # wall clock of the optimization loop
    cpu_seconds: float = 0.0                # CPU time of this process (all threads) in it
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)


def resolve_config(config: ModelConfig | str) -> ModelConfig:
    """A config from itself, a shipped model name (models.zoo.SHIPPED) or a preset."""
    if isinstance(config, (MambaConfig, TransformerConfig)):
        return config
    from mambaflow.models.zoo import SHIPPED

    if config in SHIPPED:
        return SHIPPED[config]
    if config in PRESETS:
        return PRESETS[config]
    raise MambaflowError(
        f"unknown model {config!r}; use a shipped model name ({', '.join(SHIPPED)}), a "
        f"preset ({', '.join(PRESETS)}) or pass a MambaConfig or TransformerConfig."
    )


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train(config: ModelConfig | str, steps: int = 400, seq_len: int = 256, batch: int = 16,
          lr: float = 3e-3, seed: int = 0, out_dir=None, *, warmup: int | None = None,
          min_lr_ratio: float = 0.1, weight_decay: float = 0.1, grad_clip: float = 1.0,
          threads: int | None = 2, eval_every: int | None = None, eval_windows: int = 32,
          log_dir=None, progress: bool = True, compact: bool = True,
          corpus: Corpus | None = None) -> TrainResult:
    """Train a fresh model and (if ``out_dir``) save it.

    config: MambaConfig / TransformerConfig, shipped model name or preset name. The model's vocabulary must
        hold the byte tokenizer's 259 ids. steps / seq_len / batch: optimizer steps of
        ``batch`` random windows of ``seq_len + 1`` tokens. lr: peak AdamW learning rate
        (betas 0.9/0.95), ``warmup`` steps (default steps // 20), cosine to
        ``min_lr_ratio * lr``; weight decay on matrices only; global-norm clipping at
        ``grad_clip``. threads: torch.set_num_threads for the run (None: leave as is).
        eval_every: held-out bits/byte on ``eval_windows`` windows every that many steps
        (default steps // 10) and at the end. out_dir: checkpoint folder (config.json +
        model.safetensors, float16 matrices when ``compact``). log_dir (default out_dir):
        train_log.json and loss_curve.png.
    """
    cfg = resolve_config(config)
    if cfg.vocab_size < 259:
        raise MambaflowError(
            f"train: the model's vocabulary ({cfg.vocab_size}) cannot hold the byte "
            "tokenizer's 259 ids; use vocab_size >= 259 (e.g. 264 for mamba1, 272 for mamba2)."
        )
    for name, value in (("steps", steps), ("seq_len", seq_len), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise MambaflowError(f"train: {name} must be a positive integer, got {value!r}.")
    warmup = max(1, steps // 20) if warmup is None else warmup
    eval_every = max(1, steps // 10) if eval_every is None else eval_every
    log_dir = Path(log_dir) if log_dir is not None else (Path(out_dir) if out_dir else None)

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        corpus = corpus if corpus is not None else load_corpus()
        stream = corpus.tokens("train")
        held = corpus.tokens("heldout")[: eval_windows * seq_len]
        if stream.numel() < seq_len + 2:
            raise MambaflowError(f"train: the corpus has {stream.numel()} tokens, fewer "
                                 f"than one window of {seq_len + 1}; lower seq_len.")
        torch.manual_seed(seed)
        model = build_any(cfg)
        model.train()
        scan = TRAIN_SCAN[cfg.arch]
        named = list(model.named_parameters())  # the tied LM head appears once
        decay = [p for n, p in named if not any(s in n for s in _NO_DECAY)]
        no_decay = [p for n, p in named if any(s in n for s in _NO_DECAY)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.95), eps=1e-8)
        gen = torch.Generator().manual_seed(seed)
        offsets = torch.arange(seq_len + 1)
        losses, heldout = [], []
        bar = _progress(steps, progress, f"train {cfg.arch} d{cfg.d_model}x{cfg.n_layer}")
        start, cpu_start = time.time(), time.process_time()
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
            starts = torch.randint(0, stream.numel() - seq_len - 1, (batch,), generator=gen)
            window = stream[starts[:, None] + offsets]
            logits = model.prefill(window[:, :-1], scan=scan)[0]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            losses.append(loss.item() / math.log(2))
            if (step + 1) % eval_every == 0 or step + 1 == steps:
                heldout.append((step + 1, bits_per_byte(model, held, window=seq_len, scan=scan)))
            if bar is not None:
                post = {"bits/tok": f"{sum(losses[-20:]) / len(losses[-20:]):.3f}"}
                if heldout:
                    post["heldout bpb"] = f"{heldout[-1][1]:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
        seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
        if bar is not None:
            bar.close()
    finally:
        torch.set_num_threads(old_threads)
    model.eval()

    result = TrainResult(model, cfg, losses, heldout, seconds, cpu_seconds)
    if out_dir is not None:
        out_dir = Path(out_dir)
        _save(model, cfg, out_dir, compact)
        result.out_dir = out_dir
        result.files["checkpoint"] = str(out_dir)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        args = dict(steps=steps, seq_len=seq_len, batch=batch, lr=lr, seed=seed, warmup=warmup,
                    min_lr_ratio=min_lr_ratio, weight_decay=weight_decay, grad_clip=grad_clip,
                    threads=threads, eval_windows=eval_windows, scan=scan)
        log = dict(config=config_dict(model, cfg), params=param_count(cfg), args=args,
                   seconds=round(seconds, 1), cpu_seconds=round(cpu_seconds, 1), torch=torch.__version__,
                   corpus_fingerprint=corpus.fingerprint,
                   heldout_bits_per_byte=[[s, _json_number(v)] for s, v in heldout],
                   train_bits_per_token=[_json_number(v) for v in losses])
        (log_dir / "train_log.json").write_text(json.dumps(log, indent=1, allow_nan=False) + "\n")
        result.files["log"] = str(log_dir / "train_log.json")
        result.files["plot"] = str(plot_losses(result, log_dir / "loss_curve.png"))
    return result


def _save(model, cfg: ModelConfig, out_dir: Path, compact: bool) -> None:
    """The checkpoint folder: float16 large matrices when `compact`, else float32."""
    if isinstance(cfg, TransformerConfig):
        from mambaflow.models.transformer import save_compact as save_transformer

        save_transformer(model, out_dir, half=compact)
        return
    from mambaflow.models import save_checkpoint
    from mambaflow.models.zoo import save_compact

    (save_compact if compact else save_checkpoint)(model, out_dir, byte_level=True)


def _json_number(v: float) -> float | None:
    """A loss for the JSON log: rounded, or null when it diverged (JSON has no inf / nan)."""
    return round(v, 4) if math.isfinite(v) else None


def _progress(total, enabled, desc):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=2.0)


def plot_losses(result: TrainResult, path) -> Path:
    """Loss-curve PNG: train bits/token (raw and smoothed) and held-out bits/byte."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = list(range(1, len(result.losses) + 1))
    ax.plot(steps, result.losses, color="0.8", lw=0.8, label="train (per step)")
    k = max(1, len(result.losses) // 50)
    smooth = [sum(result.losses[max(0, i - k + 1):i + 1]) / len(result.losses[max(0, i - k + 1):i + 1])
              for i in range(len(result.losses))]
    ax.plot(steps, smooth, color="C0", lw=1.5, label=f"train (mean of {k})")
    if result.heldout:
        xs, ys = zip(*result.heldout)
        ax.plot(xs, ys, "o-", color="C3", ms=3, label="held-out bits/byte")
    cfg = result.config
    ax.set_title(f"{cfg.arch} d_model {cfg.d_model} x {cfg.n_layer} layers, "
                 f"{param_count(cfg) / 1e6:.2f}M params: {result.cpu_seconds / 60:.1f} min CPU, "
                 f"{result.seconds / 60:.1f} min wall", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per token (byte)")
    ax.set_ylim(bottom=0, top=min(9.0, max(result.losses) * 1.05))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="mambaflow train",
        description="Train a byte-level Mamba or transformer (gpt-target, gpt-draft) model on the CPython "
                    "text corpus (CPU).")
    p.add_argument("model", help="shipped model name (e.g. mamba1-target) or preset name")
    p.add_argument("--steps", type=int_at_least(1), default=400)
    p.add_argument("--seq-len", type=int_at_least(1), default=256)
    p.add_argument("--batch", type=int_at_least(1), default=16)
    p.add_argument("--lr", type=finite_float(0.0, low_open=True), default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int_at_least(1), default=2)
    p.add_argument("--vocab-size", type=int_at_least(VOCAB_SIZE), default=None,
                   help=f"embedding rows (at least the byte tokenizer's {VOCAB_SIZE}; default: the model's own, "
                        "raised to that padded up when smaller, e.g. 64 -> 264 for tiny-mamba1)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: ./trained/<model>)")
    p.add_argument("--log-dir", default=None, help="train_log.json / loss_curve.png folder "
                   "(default: the checkpoint folder)")
    p.add_argument("--fp32", action="store_true", help="store every tensor as float32")
    p.add_argument("--no-progress", action="store_true")
    return p


def main_train(argv=None) -> int:
    """``mambaflow train MODEL [--steps N --seq-len L --batch B --lr LR --seed S
    --threads T --out DIR --log-dir DIR --fp32 --no-progress]``; returns the exit code."""
    args = build_parser().parse_args(argv)
    out = args.out or str(Path("trained") / args.model)
    cfg = resolve_config(args.model)
    pad = getattr(cfg, "pad_vocab_multiple", 8)  # a transformer's vocab is its own: pad like Mamba1's
    vocab = args.vocab_size or max(cfg.vocab_size, pad_vocab_size(VOCAB_SIZE, pad))
    if vocab != cfg.vocab_size:
        print(f"train: vocabulary {cfg.vocab_size} -> {vocab} rows (the byte tokenizer has {VOCAB_SIZE} ids)")
        cfg = dataclasses.replace(cfg, vocab_size=vocab)
    r = train(cfg, steps=args.steps, seq_len=args.seq_len, batch=args.batch, lr=args.lr,
              seed=args.seed, out_dir=out, threads=args.threads, log_dir=args.log_dir,
              progress=not args.no_progress, compact=not args.fp32)
    print(f"trained {args.model} in {r.seconds:.0f} s: held-out {r.heldout[-1][1]:.3f} "
          f"bits/byte; checkpoint {r.files['checkpoint']}, plot {r.files['plot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_train())
