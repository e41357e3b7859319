"""The `mambaflow` command line.

    mambaflow run      capture, lower and JIT a model; generate on llvm and on torch; check
    mambaflow build    one shot to a Versal project: HLS C++, csim, Vitis project, reports
    mambaflow estimate how fast a schedule runs on the board: cycles, II, off-chip bytes, tokens/s
    mambaflow train    train a byte-level Mamba on the CPython text corpus
    mambaflow cache    show (info) or empty (clear) the cache of captures and compiled code

Exit codes: 0 ok; 1 a check failed; 2 a usage or input error; 3 vendor tools missing
(everything else was done); 4 an internal error (a bug); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from .argtypes import OneLineParser as _Parser
from .argtypes import finite_float as _finite_float
from .argtypes import int_at_least as _int_at_least
from .errors import EXIT_CHECK, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, MambaflowError

DEFAULT_PROMPT = "The Python language"


class UsageError(MambaflowError):
    """A flag or argument the command cannot use."""


def _load_model(spec: str, seed: int):
    """A shipped model name, a preset name (random weights, seeded) or a checkpoint dir;
    returns the model and its text codec (None: it runs on token ids)."""
    from pathlib import Path

    import torch

    from .models import build_model, load_model, zoo
    from .models.config import PRESETS
    from .models.tokenizer import text_codec

    if spec in zoo.SHIPPED:
        model = zoo.load_shipped(spec)
        return model, text_codec(None, model.config.vocab_size, shipped=True)
    if spec in PRESETS:
        torch.manual_seed(seed)
        return build_model(PRESETS[spec]).eval(), None
    if Path(spec).is_dir():
        model = load_model(spec).eval()
        return model, text_codec(spec, model.config.vocab_size)
    raise UsageError(
        f"unknown model '{spec}': give a shipped model ({', '.join(zoo.SHIPPED)}), a preset "
        f"({', '.join(PRESETS)}) or a directory holding config.json and model.safetensors (Mamba, GPT-2 or Llama)"
    )


def _prompt_ids(args, name: str, codec, vocab: int) -> list[int]:
    """The prompt as token ids: through the model's codec, or given as ids."""
    from .models.config import PRESETS

    if codec is not None:
        ids = codec.encode(args.prompt if args.prompt is not None else DEFAULT_PROMPT)
        if not ids:
            raise UsageError("the prompt encodes to no tokens: give a non-empty --prompt")
        return ids
    if args.prompt is None:
        ids = [0]
    else:
        try:
            ids = [int(t) for t in args.prompt.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"model '{name}' has no tokenizer, so --prompt must be token ids such as '12 7 99'; "
                             "or add the model's tokenizer.json to its folder") from None
        if not ids or not all(0 <= i < vocab for i in ids):
            raise UsageError(f"--prompt token ids must be in [0, {vocab}) and at least one, got {args.prompt!r}")
    why = "a preset with random weights" if name in PRESETS else "no tokenizer.json"
    print(f"model {name} has no tokenizer ({why}): running on token ids, prompt {ids}")
    return ids


def cmd_run(args) -> int:
    import torch

    from .runtime.backends import LLVMBackend, TorchBackend
    from .runtime.generate import Sampling, generate

    if not args.speculative:
        given = [f for f, v in (("--tree", args.tree), ("--draft", args.draft), ("--backtrack", args.backtrack))
                 if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'only applies' if len(given) == 1 else 'only apply'} with "
                             "--speculative: add --speculative or drop it")
    if args.tree is not None:  # a bad tree spec fails before any model is loaded
        from .runtime.trees import parse_shape

        parse_shape(args.tree)
    torch.set_num_threads(args.threads)
    name = args.model or _default_model_name()
    model, codec = _load_model(name, args.seed)
    cfg = model.config
    print(f"model {name}: {cfg.arch}, d_model {cfg.d_model}, {cfg.n_layer} layers, vocab {cfg.vocab_size}"
          + (f", tokenizer {codec.name}" if codec is not None else ""))
    prompt = _prompt_ids(args, name, codec, cfg.vocab_size)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                        vocab_limit=codec.vocab_limit if codec is not None else None)
    show = codec.decode if codec is not None else (lambda ids: " ".join(map(str, ids)))
    shown_prompt = args.prompt if args.prompt is not None else (DEFAULT_PROMPT if codec is not None else str(prompt))
    if args.speculative:  # draft + target: runtime.speculative prints and checks the run
        from .models import zoo
        from .runtime.speculative import print_speculative_run

        if args.draft is None:
            if name not in zoo.PAIRS:
                raise UsageError(f"'{name}' has no shipped draft: give one with --draft")
            args.draft = zoo.draft_for(name)
        draft, draft_codec = _load_model(args.draft, args.seed + 1)
        if draft.config.vocab_size != cfg.vocab_size:
            raise UsageError(f"draft '{args.draft}' has vocabulary {draft.config.vocab_size}, the target "
                             f"{cfg.vocab_size}: a draft must share its target's tokens; pick a draft trained with "
                             "the target's tokenizer")
        if codec is not None and not codec.same_tokens(draft_codec):
            raise UsageError(f"draft '{args.draft}' reads {draft_codec.name if draft_codec else 'token ids only'}, "
                             f"the target '{name}' {codec.name} (vocabulary {cfg.vocab_size} both): a draft must "
                             "share its target's tokenizer; pick a draft trained with it")
        return print_speculative_run(model, draft, (name, args.draft), prompt, args.tokens, sampling,
                                     args.tree or "chain:7", args.backtrack or "hybrid", args.prefill_chunk,
                                     codec.decode if codec is not None else None)
    from .models.transformer import is_transformer

    if is_transformer(model):
        return _run_transformer(model, prompt, args, sampling, show, shown_prompt)
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
    print(f"\nprompt: {shown_prompt!r}")
    for nm, g in runs.items():
        print(f"[{nm:5}] {show(g.tokens)!r}")
    print()
    print(f"{'backend':8} {'prefill s':>10} {'decode tok/s':>13}")
    for nm, g in runs.items():
        print(f"{nm:8} {g.prefill_s:10.3f} {g.decode_tokens_per_s:13.1f}")
    mode = "greedy" if args.temperature == 0 else "sampled (same seed)"
    print(f"\ncheck: {mode} tokens identical: {same}; max |logit llvm - torch| = {err:.2e}")
    if not same:
        print("MISMATCH: the llvm design and PyTorch disagree", file=sys.stderr)
        return EXIT_CHECK
    return 0


def _run_transformer(model, prompt, args, sampling, show, shown_prompt) -> int:
    """`run` of a transformer: the llvm flow builds Mamba models, so it generates on
    transformers (KV cache) and checks the cached decoding against one full forward pass
    over the prompt and the generated tokens (no cache)."""
    import torch

    from .runtime.backends import make_backend
    from .runtime.generate import generate

    g = generate(make_backend("torch", model), prompt, args.tokens, sampling)
    with torch.no_grad():
        full = model.prefill(torch.tensor([prompt + g.tokens]))[0][0, len(prompt) - 1 : -1]
    err = float((torch.stack(g.logits) - full).abs().max())
    print(f"\nprompt: {shown_prompt!r}\n[transformers] {show(g.tokens)!r}\n")
    print(f"prefill {g.prefill_s:.3f} s, decode {g.decode_tokens_per_s:.1f} tok/s (transformers on PyTorch; the llvm "
          "flow builds Mamba models: use --speculative for a Mamba draft on llvm)")
    print(f"check: KV-cached decoding vs one full forward pass, max |logit difference| = {err:.2e}")
    if err > 1e-3:
        print("MISMATCH: the KV-cached decoding differs from the full forward pass", file=sys.stderr)
        return EXIT_CHECK
    return 0


def _refuse_transformer(name: str, model) -> None:
    from .models.transformer import is_transformer

    if is_transformer(model):
        raise UsageError(f"'{name}' is a transformer ({model.config.arch}): mambaflow build makes accelerators of "
                         f"Mamba models only; build a Mamba model, or run this one with `mambaflow run --model {name}`")


def _default_model_name() -> str:
    from .models import zoo

    return zoo.DEFAULT_MODEL


def cmd_build(args) -> int:
    from .targets.versal import build_main

    spec_only = (("--draft", args.draft), ("--tree", args.tree), ("--prompt", args.prompt), ("--tokens", args.tokens))
    if not args.speculative:
        given = [f for f, v in spec_only if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'only applies' if len(given) == 1 else 'only apply'} with "
                             "--speculative: add --speculative or drop it")
    elif args.quant:
        raise UsageError("--quant with --speculative: the speculative build is a float design; drop one of them")
    name = args.model or _default_model_name()
    model, codec = _load_model(name, args.seed)
    _refuse_transformer(name, model)
    platform = args.platform
    if args.speculative:
        return _build_speculative(args, name, model, codec, platform)
    return build_main(model, args.board, args.schedule, args.mode, args.out, steps=args.steps, force=args.force,
                      quant=args.quant, platform=platform)


def _build_speculative(args, name: str, model, codec, platform) -> int:
    """`build --speculative`: the target's verify and the draft's decode in one project."""
    from .models import zoo
    from .targets.versal.speculative_build import build_speculative, check_pair

    draft_name = args.draft
    if draft_name is None:
        if name not in zoo.PAIRS:
            raise UsageError(f"'{name}' has no shipped draft: give one with --draft")
        draft_name = zoo.draft_for(name)
    draft, _ = _load_model(draft_name, args.seed + 1)
    _refuse_transformer(draft_name, draft)
    check_pair(model, draft, (name, draft_name))  # before any prompt is printed or directory touched
    prompt = _prompt_ids(args, name, codec, model.config.vocab_size)
    r = build_speculative(model, draft, args.tree or "chain:7", args.board, args.schedule, args.mode, args.out,
                          prompt=prompt, tokens=args.tokens or 32, draft_steps=args.steps,
                          vocab_limit=codec.vocab_limit if codec is not None else None, names=(name, draft_name),
                          seed=args.seed, platform=platform, force=args.force)
    print(r.report())
    return r.exit_code


def cmd_cache(args) -> int:
    from . import cache

    if args.action == "info":
        print("\n".join(cache.info()))
    else:
        n, size = cache.clear()
        print(f"cache: removed {n} entries ({size / 1e6:.1f} MB) from {cache.cache_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mambaflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="generate with the llvm build of a model and check it against PyTorch")
    run.add_argument("--model", help="shipped model, preset name or checkpoint directory (default: the shipped Mamba1 target)")
    run.add_argument("--prompt", default=None,
                     help=f"text (default {DEFAULT_PROMPT!r}); token ids ('12 7 99') for a model without a tokenizer")
    run.add_argument("--tokens", type=_int_at_least(1), default=48, help="tokens to generate")
    run.add_argument("--temperature", type=_finite_float(0.0), default=0.0, help="0 = greedy")
    run.add_argument("--top-k", type=_int_at_least(0), default=0, help="0 = off")
    run.add_argument("--top-p", type=_finite_float(0.0, 1.0, low_open=True), default=1.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--prefill-chunk", type=_int_at_least(1), default=16, help="tokens per compiled prefill call")
    run.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads (the llvm build is single-threaded)")
    run.add_argument("--speculative", action="store_true",
                     help="speculative decoding: a draft proposes a token tree, the target verifies it in one pass")
    run.add_argument("--draft", help="with --speculative: draft model (default: the shipped draft of the shipped target)")
    run.add_argument("--tree", help="with --speculative: draft tree: chain:K, widths per depth (4,2,1,1), dynNwW, or "
                          "search:N (test-time tree search: width and depth chosen per round by a bandit, at most "
                          "N draft nodes; search:N:thompson) (default chain:7)")
    run.add_argument("--backtrack", choices=["checkpoint", "replay", "hybrid"],
                     help="with --speculative: how states return to the accepted node (default hybrid)")
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
    build.add_argument("--platform", metavar="NAME|PATH.xpfm",
                       help="the Vitis platform your board runs: a name (looked up in $PLATFORM_REPO_PATHS and the "
                            "Vitis install) or the path of its .xpfm; default: AMD's published base platform for the "
                            "board and the Vitis found (vck190); the vhk158 has none, so it needs --platform")
    build.add_argument("--out", default="build", help="project directory: new, empty, or made by an earlier build")
    build.add_argument("--force", action="store_true", help="empty --out first even if mambaflow did not make it")
    build.add_argument("--steps", type=_int_at_least(1), default=2, help="decode steps the testbench checks")
    build.add_argument("--quant", choices=["w8a8", "w4a4"],
                       help="build the integer (FastMamba / LightMamba) accelerator: PTQ, the integer layer engine, "
                            "csim bit for bit against the integer reference")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--speculative", action="store_true",
                       help="SpecMamba's accelerator: the target's tree verify (FIFO tree buffer) and the draft's "
                            "decode in one project, both checked by csim on real trees, and the XRT host loop")
    build.add_argument("--draft", help="with --speculative: draft model (default: the shipped draft of the shipped target)")
    build.add_argument("--tree", help="with --speculative: chain:K or static widths (4,2,1,1) (default chain:7)")
    build.add_argument("--prompt", default=None,
                       help=f"with --speculative: the host's prompt (default {DEFAULT_PROMPT!r}; token ids for a "
                            "model without a tokenizer)")
    build.add_argument("--tokens", type=_int_at_least(2), default=None,
                       help="with --speculative: tokens the host generates and checks against PyTorch (default 32)")
    build.set_defaults(fn=cmd_build)

    est = sub.add_parser("estimate", help="analytic QoR estimate of a scheduled design on a board: cycles per kernel, "
                         "achieved II and why, dataflow stalls, off-chip bytes per token, tokens/s",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="schedule recipes (--schedule NAME):\n" + describe())
    est.add_argument("--model", default="mamba2-130m",
                     help="preset name, shipped model or checkpoint directory (default mamba2-130m)")
    est.add_argument("--quant", choices=["w8a8", "w4a4"], help="estimate the integer design (captured with one layer, "
                     "estimated with the model's layer count)")
    est.add_argument("--board", choices=sorted(BOARDS), default="vck190")
    est.add_argument("--schedule", metavar="RECIPE|FILE.py|LOG.json", default="accelerator",
                     help="as for build (default accelerator)")
    est.add_argument("--phase", choices=["decode", "verify", "prefill"], default="decode")
    est.add_argument("--nodes", type=_int_at_least(1), default=None,
                     help="verify: tree nodes T (default 8); prefill: the chunk length (default 16)")
    est.add_argument("--accepted", type=_finite_float(0.0, low_open=True), default=None,
                     help="verify: tokens accepted per pass (default 1; benchmarks/speculative.py measures it)")
    est.add_argument("--clock", type=_finite_float(0.0, low_open=True), default=None, help="kernel clock in MHz")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.set_defaults(fn=cmd_estimate)

    cache = sub.add_parser("cache", help="show or clear the cache of captures and compiled code ($MAMBAFLOW_CACHE)")
    cache.add_argument("action", choices=["info", "clear"])
    cache.set_defaults(fn=cmd_cache)

    # `train` has its own parser (mambaflow.train); listed here for --help
    sub.add_parser("train", add_help=False, help="train a byte-level model (mambaflow train --help)")
    return parser


def cmd_estimate(args) -> int:
    from .models import zoo
    from .targets.estimate import estimate_model

    model = args.model
    if model in zoo.SHIPPED or os.path.isdir(model):
        model, _ = _load_model(model, 0)
    if args.accepted is not None and args.phase != "verify":
        raise UsageError("--accepted is the accepted length of a verify pass: add --phase verify or drop it")
    e = estimate_model(model, board=args.board, quant=args.quant, schedule=args.schedule, phase=args.phase,
                       T=args.nodes if args.phase != "decode" else None, clock_mhz=args.clock,
                       tokens_per_pass=args.accepted, progress=not args.json)
    print(e.to_json() if args.json else e.table())
    return 0


def _one_line(msg: str) -> str:
    """A message listing several problems on lines of its own, as one line."""
    msg = re.sub(r":\s*\n\s*", ": ", msg.strip())
    return re.sub(r"\s*\n\s*", "; ", msg)


def _guarded(cmd: str, fn) -> int:
    """Run `fn()`, turning every failure into one line on stderr and an exit code."""
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"mambaflow {cmd}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MambaflowError as e:
        print(f"mambaflow {cmd}: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - a bug: one line unless asked for the traceback
        if os.environ.get("MAMBAFLOW_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"mambaflow {cmd}: internal error: {type(e).__name__}: {first} (a bug in mambaflow; "
              "MAMBAFLOW_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        def train() -> int:
            from .train import main_train

            return main_train(argv[1:])

        return _guarded("train", train)
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("mambaflow: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _guarded(args.cmd, lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
