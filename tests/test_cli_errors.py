"""The `mambaflow` command as a user sees it: run as a subprocess, each bad input gives
one clear line on stderr and its documented exit code (README, "Exit codes"); damaged
caches heal; build directories are never reused unsafely or left looking finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_checkpoints import VOCAB, WORDS, save_hf_checkpoint

OK, CHECK, USAGE, TOOLS, INTERRUPTED = 0, 1, 2, 3, 130
RUN = ("run", "--model", "tiny-mamba1", "--tokens", "2", "--prefill-chunk", "2")
BUILD = ("build", "--model", "tiny-mamba1", "--steps", "1")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ, MAMBAFLOW_CACHE=str(tmp_path_factory.mktemp("cache")), PYTHONUNBUFFERED="1")
    e.pop("MAMBAFLOW_DEBUG", None)
    return e


def cli(env, *args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "mambaflow.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def last_line(p) -> str:
    """The last line the user sees on stderr (a progress bar's carriage returns removed)."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in p.stderr.splitlines()]
    return [ln for ln in lines if ln][-1] if any(lines) else ""


def assert_one_line_error(p, code: int, *parts: str):
    line = last_line(p)
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for part in parts:
        assert part in line, (part, line)


# --------------------------------------------------------------------------- bad flags

FLAGS = [  # (arguments, exit code, words of the message)
    (RUN + ("--temperature", "nan"), USAGE, ["--temperature", "not a finite number"]),
    (RUN + ("--temperature", "inf"), USAGE, ["--temperature", "not a finite number"]),
    (RUN + ("--temperature", "-1"), USAGE, ["--temperature", ">= 0"]),
    (RUN + ("--threads", "0"), USAGE, ["--threads", "at least 1"]),
    (RUN + ("--prefill-chunk", "0"), USAGE, ["--prefill-chunk", "at least 1"]),
    (RUN + ("--prefill-chunk", "-4"), USAGE, ["--prefill-chunk", "at least 1"]),
    (RUN + ("--top-p", "0"), USAGE, ["--top-p", "(0, 1]"]),
    (RUN + ("--tree", "chain:3"), USAGE, ["--tree only applies with --speculative"]),
    (RUN + ("--prompt", "some text"), USAGE, ["no tokenizer", "token ids"]),
    (RUN + ("--prompt", "1 2 999"), USAGE, ["token ids must be in [0, 64)"]),
    (("run", "--model", "no-such-model"), USAGE, ["unknown model 'no-such-model'", "tiny-mamba1"]),
    (BUILD[:-2] + ("--steps", "0"), USAGE, ["--steps", "at least 1"]),
    (BUILD[:-2] + ("--steps", "-2"), USAGE, ["--steps", "at least 1"]),
    (BUILD + ("--out", "/proc/x"), USAGE, ["cannot write the build directory /proc/x"]),
    (BUILD + ("--schedule", "_kind"), USAGE, ["unknown schedule recipe '_kind'", "accelerator"]),
    (BUILD + ("--schedule", "no_such_recipe"), USAGE, ["unknown schedule recipe"]),
    (BUILD + ("--schedule", "missing.json"), USAGE, ["missing.json does not exist"]),
    (("cache", "wipe"), USAGE, ["invalid choice: 'wipe'"]),
    (("train", "tiny-mamba1", "--steps", "0"), USAGE, ["--steps", "at least 1"]),
    (("train", "tiny-mamba1", "--vocab-size", "64"), USAGE, ["--vocab-size", "at least 259"]),
]


@pytest.mark.parametrize("args,code,parts", FLAGS, ids=[" ".join(a) for a, _, _ in FLAGS])
def test_bad_flag(env, tmp_path, args, code, parts):
    assert_one_line_error(cli(env, *args, cwd=tmp_path), code, *parts)


def test_out_naming_a_file_or_a_foreign_folder_is_refused(env, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    assert_one_line_error(cli(env, *BUILD, "--out", f), USAGE, "is an existing file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Makefile").write_text("all:\n")
    assert_one_line_error(cli(env, *BUILD, "--out", mine), USAGE, "not made by mambaflow build", "--force")
    assert (mine / "Makefile").read_text() == "all:\n"  # untouched


# ------------------------------------------------------------------- bad schedule files

SCHEDULES = [  # (file name, content, words of the message)
    ("trunc.json", '[{"op": "split", "loop": "in_proj:S_i_j.j"', ["trunc.json:1:", "not valid JSON"]),
    ("nofactor.json", '[{"op": "split", "loop": "in_proj:S_i_j.j"}]',
     ["nofactor.json: entry 0 (split) lacks the argument 'factor'"]),
    ("notlist.json", '{"op": "split"}', ["notlist.json: a schedule log is a list of entries"]),
    ("number.json", "3", ["number.json: a schedule log is a list", "not a JSON number"]),
    ("noop.json", '[{"loop": "x"}]', ["noop.json: entry 0 is not an object with an \"op\""]),
    ("unknown.json", '[{"op": "teleport"}]', ["unknown.json: entry 0 (teleport)", "unknown primitive"]),
    ("syntax.py", 'def schedule(s):\n    s.split("in_proj:S_i_j.j", 8\n',
     ["syntax.py:2: SyntaxError", "in your schedule file"]),
    ("raises.py", 'def helper(s):\n    raise ValueError("my own bug")\n\ndef schedule(s):\n    helper(s)\n',
     ["raises.py:2: in helper: ValueError: my own bug", "in your schedule file"]),
    ("rejected.py", 'def schedule(s):\n    s.split("in_proj:nosuch.j", 8)\n',
     ["rejected.py:2: in schedule: rejected: split: no loop 'nosuch.j'"]),
    ("nofn.py", "x = 1\n", ["nofn.py must define a function `schedule(s)`"]),
]


@pytest.mark.parametrize("name,text,parts", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_bad_schedule(env, tmp_path, name, text, parts):
    (tmp_path / name).write_text(text)
    p = cli(env, *BUILD, "--schedule", name, "--out", tmp_path / "out", cwd=tmp_path)
    assert_one_line_error(p, USAGE, *parts)
    assert "mambaflow/" not in last_line(p).split("(in your")[0].replace(str(tmp_path), "")  # no flow internals


# --------------------------------------------------------------------- corrupt caches


def _halve(f: Path):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garbage(f: Path):
    data = bytearray(f.read_bytes())
    data[4096:8192] = os.urandom(4096)
    f.write_bytes(bytes(data))


CORRUPTIONS = [  # (entry kind, file, damage, words of the report)
    ("llvm", "lib.so", _halve, "lib.so is truncated"),
    ("llvm", "lib.so", _garbage, "lib.so fails its checksum"),
    ("llvm", "lib.so", Path.unlink, "lib.so is missing"),
    ("llvm", "meta.json", lambda f: f.write_text("{"), "meta.json is unreadable"),
    ("capture", "meta.json", lambda f: f.write_text("{}"), "not a cache entry of this version"),
    ("capture", "design.mlir", lambda f: f.write_text("{}"), "design.mlir is truncated"),
    ("capture", "meta.json", lambda f: f.write_text(f.read_text().replace('"ports"', '"porst"')),
     "its design does not read back"),
    ("capture", "meta.json", lambda f: f.write_text(f.read_text().replace('"phase": "', '"phase": "x')),
     "its key inputs differ"),
]


@pytest.mark.parametrize("kind,name,damage,why", CORRUPTIONS,
                         ids=[f"{k}/{n}:{getattr(d, '__name__', 'edit')}" for k, n, d, _ in CORRUPTIONS])
def test_damaged_cache_entry_is_reported_deleted_and_rebuilt(env, tmp_path, kind, name, damage, why):
    first = cli(env, *RUN, cwd=tmp_path)
    assert first.returncode == OK, first.stderr[-2000:]
    entries = sorted(Path(env["MAMBAFLOW_CACHE"], kind).glob("*/meta.json"))
    assert entries, list(Path(env["MAMBAFLOW_CACHE"]).rglob("*"))
    for meta in entries:
        damage(meta.parent / name)
    p = cli(env, *RUN, cwd=tmp_path)
    assert p.returncode == OK and "Traceback" not in p.stderr, p.stderr[-3000:]
    reports = [ln for ln in p.stderr.replace("\r", "\n").splitlines() if "cache entry" in ln]
    assert len(reports) == len(entries) and all(why in r and "deleted it, rebuilding" in r for r in reports), reports
    again = cli(env, *RUN, cwd=tmp_path)
    assert again.returncode == OK and "cache entry" not in again.stderr, again.stderr[-2000:]
    assert "tokens identical: True" in again.stdout


def test_cache_info_and_clear(env, tmp_path):
    assert cli(env, *RUN, cwd=tmp_path).returncode == OK
    info = cli(env, "cache", "info")
    assert info.returncode == OK and env["MAMBAFLOW_CACHE"] in info.stdout
    assert "llvm" in info.stdout and "capture" in info.stdout and " 0 entries" not in info.stdout
    meta = next(Path(env["MAMBAFLOW_CACHE"], "llvm").glob("*/meta.json"))
    _halve(meta.parent / "lib.so")
    assert "1 damaged" in cli(env, "cache", "info").stdout
    cleared = cli(env, "cache", "clear")
    assert cleared.returncode == OK and "removed" in cleared.stdout
    assert not any(p.is_file() for p in Path(env["MAMBAFLOW_CACHE"]).rglob("*"))
    assert "    0 entries" in cli(env, "cache", "info").stdout


def test_concurrent_runs_on_an_empty_cache(tmp_path):
    e = dict(os.environ, MAMBAFLOW_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "mambaflow.cli", *RUN], env=e, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [OK, OK], [err[-2000:] for _, err in outs]
    assert all("tokens identical: True" in out and "cache entry" not in err for out, err in outs)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]  # no temp leftovers


# ------------------------------------------------------------------------- checkpoints


def _folder(tmp_path, files: dict) -> Path:
    """A transformers-saved Mamba1 folder (saved once per test) with `files` changed."""
    d = tmp_path / "ckpt"
    if not d.exists():
        save_hf_checkpoint(d, "mamba1", tokenizer=False)
    for name, text in files.items():
        if text is None:
            (d / name).unlink()
        else:
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def _cfg(tmp_path, **change):
    cfg = json.loads((_folder(tmp_path, {}) / "config.json").read_text())
    return {"config.json": json.dumps({**cfg, **change})}


BAD_CHECKPOINTS = [  # (what is wrong, files changed (None: deleted), words of the message)
    ("no config", lambda t: {"config.json": None}, ["has no config.json"]),
    ("config not JSON", lambda t: {"config.json": "{vocab"}, ["config.json is not valid JSON"]),
    ("config a list", lambda t: {"config.json": "[]"}, ["holds a JSON list, not a config object"]),
    ("vocab a string", lambda t: _cfg(t, vocab_size="many"), ["config.json has a value of the wrong type"]),
    ("unsupported architecture", lambda t: _cfg(t, model_type="bert"),
     ["architecture 'bert'", "is not supported", "mamba, mamba2, gpt2, llama"]),
    ("llama config, mamba weights", lambda t: _cfg(t, model_type="llama"), ["lacks or mis-shapes weights of its llama"]),
    ("bad float", lambda t: _cfg(t, time_step_min={"__float__": "tiny"}), ["time_step_min", "is not a number"]),
    ("no weights", lambda t: {"model.safetensors": None}, ["has no weights"]),
    ("truncated weights", lambda t: {"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{"},
     ["truncated or corrupt"]),
    ("wrong shapes", lambda t: _cfg(t, hidden_size=48, intermediate_size=96), ["does not match its config.json"]),
    ("bad tokenizer", lambda t: {"tokenizer.json": "{not json"}, ["cannot read the tokenizer"]),
]


@pytest.mark.parametrize("what,files,parts", BAD_CHECKPOINTS, ids=[b[0] for b in BAD_CHECKPOINTS])
def test_bad_checkpoint(env, tmp_path, what, files, parts):
    d = _folder(tmp_path, files(tmp_path))
    assert_one_line_error(cli(env, "run", "--model", d, "--tokens", "2", cwd=tmp_path), USAGE, *parts)


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_transformers_folder_runs_with_its_own_tokenizer(env, tmp_path, arch, one_thread):
    """A folder saved by transformers with its tokenizer: the prompt goes through
    tokenizer.json, ids past 255 are generated, and the text is transformers' own greedy
    continuation."""
    import torch

    d = tmp_path / arch
    hf = save_hf_checkpoint(d, arch, tokenizer=True, seed=3)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    prompt = " ".join(WORDS[i] for i in (7, 40, 250, 281))  # ids 8 41 251 282
    ids = torch.tensor([tok.encode(prompt).ids])
    with torch.no_grad():
        want = hf.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:].tolist()
    assert max(want) >= 256 and max(want) < VOCAB  # a byte-level limit would have cut these off
    p = cli(env, "run", "--model", d, "--prompt", prompt, "--tokens", 4, "--prefill-chunk", 2, cwd=tmp_path)
    assert p.returncode == OK, p.stderr[-3000:]
    assert f"tokenizer {d / 'tokenizer.json'} ({VOCAB} tokens)" in p.stdout
    text = tok.decode(want, skip_special_tokens=False)
    assert f"[llvm ] {text!r}" in p.stdout and f"[torch] {text!r}" in p.stdout, (text, p.stdout)


def test_folder_without_tokenizer_runs_on_token_ids(env, tmp_path):
    d = _folder(tmp_path, {})
    p = cli(env, "run", "--model", d, "--tokens", 2, "--prefill-chunk", 2, cwd=tmp_path)
    assert p.returncode == OK, p.stderr[-2000:]
    assert "has no tokenizer (no tokenizer.json): running on token ids" in p.stdout
    assert "tokens identical: True" in p.stdout


def test_byte_level_folder_uses_the_byte_tokenizer(env, tmp_path):
    """`mambaflow train` marks its checkpoints byte-level (also a preset whose vocabulary
    is too small for bytes: --vocab-size defaults up); its log is strict JSON."""
    out = tmp_path / "trained"
    t = cli(env, "train", "tiny-mamba1", "--steps", 1, "--seq-len", 8, "--batch", 1, "--no-progress",
            "--out", out, cwd=tmp_path)
    assert t.returncode == OK, t.stderr[-2000:]
    assert "vocabulary 64 -> 264" in t.stdout

    def strict(c):
        raise ValueError(f"bare {c} in train_log.json")

    json.loads((out / "train_log.json").read_text(), parse_constant=strict)
    p = cli(env, "run", "--model", out, "--tokens", 2, "--prefill-chunk", 2, cwd=tmp_path)
    assert p.returncode == OK and "tokenizer bytes" in p.stdout, p.stderr[-2000:]


# ----------------------------------------------------------------- build directories


@pytest.mark.skipif(shutil.which("vitis_hls") is not None, reason="exit 3 needs vitis_hls to be missing")
def test_build_directory_lifecycle_and_sigint(env, tmp_path):
    """Ctrl-C mid-build: exit 130, one line, the folder marked incomplete and without
    build.json. Rebuilding there replaces it (nothing stale stays) and finishes it."""
    out = tmp_path / "proj"
    p = subprocess.Popen([sys.executable, "-m", "mambaflow.cli", *BUILD, "--out", out], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "hls" / "tb.cpp").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert (out / "BUILD_INCOMPLETE").exists()
    time.sleep(0.2)  # g++ is compiling the C simulation
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == INTERRUPTED and "Traceback" not in err, err[-3000:]
    assert err.replace("\r", "\n").strip().splitlines()[-1] == "mambaflow build: interrupted"
    assert (out / "BUILD_INCOMPLETE").exists() and not (out / "build.json").exists()

    (out / "stale.dat").write_text("from an older build")
    r = cli(env, *BUILD, "--out", out, cwd=tmp_path)
    assert r.returncode == TOOLS, r.stderr[-3000:]  # everything done but vendor tools missing
    assert "build: incomplete (vendor tools missing)" in r.stdout
    assert (r.stdout + r.stderr).count("csim PASS") == 1  # the csim report once
    assert (out / "build.json").exists() and not (out / "BUILD_INCOMPLETE").exists()
    assert not (out / "stale.dat").exists()
    info = json.loads((out / "build.json").read_text())
    assert info["exit_code"] == TOOLS
    # the QoR estimate of the built design, in the report and in build.json
    assert info["estimate"]["tokens_per_s"] > 0 and info["estimate"]["bound"] in ("compute", "memory")
    assert "estimate: decode on vck190" in r.stdout

    forced = tmp_path / "theirs"
    forced.mkdir()
    (forced / "README.md").write_text("theirs")
    f = cli(env, *BUILD, "--out", forced, "--force", cwd=tmp_path)
    assert f.returncode == TOOLS and "theirs" not in (forced / "README.md").read_text()
