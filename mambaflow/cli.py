"""The `mambaflow` command line.

    mambaflow run      capture, lower and JIT a model; generate on llvm and on torch; check
    mambaflow build    one shot to a Versal project: HLS C++, csim, Vitis project, reports
    mambaflow train    train a byte-level Mamba on the CPython text corpus
"""

from __future__ import annotations

import argparse
import sys
import time

from .errors import MambaflowError

DEFAULT_PROMPT = "The Python language"


def _load_model(spec: str, seed: int):
    """A shipped model name, a preset name (random weights, seeded) or a checkpoint dir."""
    import torch
    from pathlib import Path

    from .models import build_model, load_checkpoint
    from .models.config import PRESETS

    try:
        from .models import zoo
    except ImportError:
        zoo = None
    if zoo is not None and spec in getattr(zoo, "SHIPPED", {}):
        return zoo.load_shipped(spec), True
    if spec in PRESETS:
        torch.manual_seed(seed)
        return build_model(PRESETS[spec]).eval(), False
    if Path(spec).is_dir():
        return load_checkpoint(spec).eval(), (Path(spec) / "config.json").exists()
    known = list(getattr(zoo, "SHIPPED", {})) + list(PRESETS)
    raise MambaflowError(
        f"unknown model '{spec}': give a shipped model, a preset ({', '.join(known)}) "
        "or a directory holding config.json and model.safetensors"
    )


def _default_model_name() -> str:
    try:
        from .models import zoo

        return zoo.DEFAULT_MODEL
    except (ImportError, AttributeError):
        return "tiny-mamba1"


def _encode(text: str, vocab: int) -> list[int]:
    try:
        from .data import encode

        ids = encode(text)
    except ImportError:
        ids = list(text.encode())
    return [i % vocab for i in ids]


def _decode(ids: list[int]) -> str:
    try:
        from .data import decode

        return decode(ids)
    except ImportError:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def cmd_run(args) -> int:
    import torch

    from .runtime.backends import LLVMBackend, TorchBackend
    from .runtime.generate import Sampling, generate

    torch.set_num_threads(args.threads)
    name = args.model or _default_model_name()
    model, text_model = _load_model(name, args.seed)
    cfg = model.config
    prompt = _encode(args.prompt, cfg.vocab_size)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                        vocab_limit=256 if text_model else None)
    print(f"model {name}: {cfg.arch}, d_model {cfg.d_model}, {cfg.n_layer} layers, vocab {cfg.vocab_size}")
    if args.speculative:  # draft + target: runtime.speculative prints and checks the run
        from .runtime.speculative import print_speculative_run

        if args.draft is None:
            from .models import zoo

            if name not in getattr(zoo, "PAIRS", {}):
                raise MambaflowError(f"'{name}' has no shipped draft: give one with --draft")
            args.draft = zoo.draft_for(name)
        draft, _ = _load_model(args.draft, args.seed + 1)
        return print_speculative_run(model, draft, (name, args.draft), prompt, args.tokens, sampling, args.tree,
                                     args.backtrack, args.prefill_chunk, _decode if text_model else None)
    t0 = time.perf_counter()
    llvm = LLVMBackend(model, prefill_chunk=args.prefill_chunk, progress=True)
    build_s = time.perf_counter() - t0
    print(f"captured, lowered and compiled decode + prefill({args.prefill_chunk}) in {build_s:.1f} s")
    runs = {}
    for backend in (llvm, TorchBackend(model)):
        runs[backend.name] = generate(backend, prompt, args.tokens, sampling)
    a, b = runs["llvm"], runs["torch"]
    same = a.tokens == b.tokens
    err = max(float((x - y).abs().max()) for x, y in zip(a.logits, b.logits))
    print(f"\nprompt: {args.prompt!r}")
    for nm, g in runs.items():
        shown = _decode(g.tokens) if text_model else " ".join(map(str, g.tokens))
        print(f"[{nm:5}] {shown!r}")
    print()
    print(f"{'backend':8} {'prefill s':>10} {'decode tok/s':>13}")
    for nm, g in runs.items():
        print(f"{nm:8} {g.prefill_s:10.3f} {g.decode_tokens_per_s:13.1f}")
    mode = "greedy" if args.temperature == 0 else "sampled (same seed)"
    print(f"\ncheck: {mode} tokens identical: {same}; max |logit llvm - torch| = {err:.2e}")
    if not same:
        print("MISMATCH: the llvm design and PyTorch disagree", file=sys.stderr)
        return 1
    return 0


def cmd_build(args) -> int:
    from .targets.versal import build_main

    name = args.model or _default_model_name()
    model, _ = _load_model(name, args.seed)
    return build_main(model, args.board, args.schedule, args.mode, args.out, steps=args.steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mambaflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="generate with the llvm build of a model and check it against PyTorch")
    run.add_argument("--model", help="shipped model, preset name or checkpoint directory (default: the shipped Mamba1 target)")
    run.add_argument("--prompt", default=DEFAULT_PROMPT)
    run.add_argument("--tokens", type=int, default=48, help="tokens to generate")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    run.add_argument("--top-k", type=int, default=0)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--prefill-chunk", type=int, default=16, help="tokens per compiled prefill call")
    run.add_argument("--threads", type=int, default=1, help="torch threads (the llvm build is single-threaded)")
    run.add_argument("--speculative", action="store_true",
                     help="speculative decoding: a draft proposes a token tree, the target verifies it in one pass")
    run.add_argument("--draft", help="draft model (default: the shipped draft of the shipped target)")
    run.add_argument("--tree", default="chain:7", help="draft tree: chain:K, widths per depth (4,2,1,1) or dynNwW")
    run.add_argument("--backtrack", default="hybrid", choices=["checkpoint", "replay", "hybrid"],
                     help="how states return to the accepted node")
    run.set_defaults(fn=cmd_run)

    from .schedules.registry import describe
    from .targets.versal import MODES
    from .targets.versal.boards import BOARDS

    build = sub.add_parser("build", help="emit Vitis HLS C++, run csim, write the Versal project and run the vendor steps it can",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="schedule recipes (--schedule NAME):\n" + describe())
    build.add_argument("--model", help="shipped model, preset name or checkpoint directory (default: the shipped Mamba1 target)")
    build.add_argument("--board", choices=sorted(BOARDS), default="vck190")
    build.add_argument("--schedule", metavar="RECIPE|FILE.py|LOG.json",
                       help="a recipe name (listed below), a FILE.py defining schedule(s), or a saved schedule .json "
                            "(as the build writes to OUT/schedule.json)")
    build.add_argument("--mode", choices=MODES, default="csim")
    build.add_argument("--out", default="build", help="project directory")
    build.add_argument("--steps", type=int, default=2, help="decode steps the testbench checks")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(fn=cmd_build)

    # `train` has its own parser (mambaflow.train); listed here for --help
    sub.add_parser("train", add_help=False, help="train a byte-level model (mambaflow train --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from .train import main_train

        try:
            return main_train(argv[1:])
        except MambaflowError as e:
            print(f"mambaflow train: error: {e}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except MambaflowError as e:
        print(f"mambaflow {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
