"""Held-out bits per byte of every shipped model, next to a unigram baseline.

    python benchmarks/eval_models.py            # full held-out split (~191 KB)
    python benchmarks/eval_models.py --windows 32 --prompt "The Python language"
    python benchmarks/eval_models.py --only gpt-target gpt-draft   # merged into the JSON

The held-out split of ``mambaflow.data`` (5 % of documents by name hash) is cut into
windows of 256 tokens, each run from the zero state (as in training); see
``mambaflow.data.bits_per_byte`` for the accounting. Mamba1 runs the fused scan, Mamba2
the chunked one (both equal the sequential inference scan to float32 rounding; tests
check it); the transformers (gpt-target, gpt-draft) run transformers' forward. Prints a table with a greedy continuation of a prompt per model and writes
benchmarks/results/eval_models.json: top-level ``bits_per_byte`` (model name -> value),
``baseline_bits_per_byte`` (``unigram``), plus sizes, samples and the corpus fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mambaflow.data import TOKENIZER, bits_per_byte, load_corpus, unigram_bits_per_byte
from mambaflow.models.zoo import PAIRS, SHIPPED, checkpoint_dir, load_shipped
from mambaflow.train import TRAIN_SCAN, param_count

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW = 256


@torch.no_grad()
def greedy(model, prompt: str, n: int = 80) -> str:
    """Greedy continuation with the reference decode step (no runtime dependency)."""
    tokens = TOKENIZER(prompt)
    logits, state = model.prefill(tokens, scan="sequential")
    out = []
    nxt = logits[:, -1].argmax(-1)
    for _ in range(n):
        out.append(int(nxt))
        logits, state = model.decode(nxt, state)
        nxt = logits.argmax(-1)
    return TOKENIZER.decode(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=None,
                   help="evaluate only the first N windows of 256 tokens (default: all)")
    p.add_argument("--prompt", default="The Python language")
    p.add_argument("--sample-tokens", type=int, default=80)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "eval_models.json"))
    p.add_argument("--only", nargs="*", choices=list(SHIPPED),
                   help="evaluate only these models; the others' results are kept from --out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    corpus = load_corpus()
    held = corpus.tokens("heldout")
    if args.windows:
        held = held[: args.windows * WINDOW]
    n_bytes = int((held < 256).sum())
    unigram = unigram_bits_per_byte(corpus)

    out = Path(args.out)
    old = json.loads(out.read_text()) if args.only and out.is_file() else {}
    if old and (old.get("heldout", {}).get("windows") != held.numel() // WINDOW
                or old.get("corpus_fingerprint") != corpus.fingerprint):
        old = {}  # other windows or another corpus: nothing to merge with
    bpb, info = dict(old.get("bits_per_byte", {})), dict(old.get("models", {}))
    for name in args.only or SHIPPED:
        t0 = time.time()
        model = load_shipped(name)
        bpb[name] = round(bits_per_byte(model, held, window=WINDOW,
                                        scan=TRAIN_SCAN[model.config.arch]), 4)
        info[name] = dict(arch=model.config.arch, params=param_count(model.config),
                          d_model=model.config.d_model, n_layer=model.config.n_layer,
                          checkpoint_bytes=(checkpoint_dir(name) / "model.safetensors").stat().st_size,
                          sample=greedy(model, args.prompt, args.sample_tokens),
                          eval_seconds=round(time.time() - t0, 1))

    print(f"held-out: {n_bytes} bytes in {held.numel() // WINDOW} windows of {WINDOW}; "
          f"corpus {corpus.fingerprint}\n")
    print(f"{'model':15s} {'arch':7s} {'params':>9s} {'file MB':>8s} {'bits/byte':>10s}")
    names = [n for n in SHIPPED if n in bpb]
    for name in names:
        i = info[name]
        print(f"{name:15s} {i['arch']:7s} {i['params']:9d} {i['checkpoint_bytes'] / 1e6:8.2f} "
              f"{bpb[name]:10.3f}")
    print(f"{'unigram':15s} {'-':7s} {'-':>9s} {'-':>8s} {unigram:10.3f}")
    for target, draft in [*PAIRS.items(), ("gpt-target", "gpt-draft"), ("mamba1-draft", "gpt-draft")]:
        if target in bpb and draft in bpb:
            print(f"{target} vs {draft}: {bpb[draft] - bpb[target]:+.3f} bits/byte for the {target}")
    print(f"\ngreedy continuations of {args.prompt!r}:")
    for name in names:
        print(f"  {name}: {info[name]['sample']!r}")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        bits_per_byte=bpb, baseline_bits_per_byte={"unigram": round(unigram, 4)},
        heldout=dict(bytes=n_bytes, windows=held.numel() // WINDOW, window=WINDOW),
        corpus_fingerprint=corpus.fingerprint, prompt=args.prompt, models=info,
        torch=torch.__version__), indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
