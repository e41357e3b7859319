"""The on-disk cache of compiled libraries (targets.llvm) and captured designs (flow.capture).

An entry is a folder `$MAMBAFLOW_CACHE/<kind>/<key>/` holding its data files and a
`meta.json` with each file's sha256 and size, the inputs its key was computed from, and
the caller's small `info` (a design's ports, say). It is written into a temporary
sibling folder and renamed into place when complete, so a reader sees a whole entry or
none, and concurrent writers of one key leave one of their (identical) entries.

`lookup` checks an entry before anything uses it: the meta parses, its key inputs are
the caller's, and every file has its recorded size and checksum. A compiled library is
only dlopen-ed after that check. An entry that fails it is deleted and reported in one
line on stderr; the caller then rebuilds it. `discard` does the same for an entry whose
info the caller finds wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1
KINDS = ("llvm", "capture")
# the layout before entries were folders: <key>.so at the top, designs/<key>.mlir|.json
_LEGACY = ("designs",)


def cache_dir() -> Path:
    return Path(os.environ.get("MAMBAFLOW_CACHE") or Path.home() / ".cache" / "mambaflow")


def key_of(inputs: dict) -> str:
    """The entry name for key inputs (a JSON-able dict)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Entry:
    """A checked cache entry: its folder and the `info` stored with it."""

    path: Path
    info: dict

    def file(self, name: str) -> Path:
        return self.path / name


def _entry_dir(kind: str, key: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r}: one of {KINDS}")
    return cache_dir() / kind / key


def _problem(path: Path, inputs: dict | None, files: tuple[str, ...]) -> str | None:
    """Why the entry at `path` cannot be used, or None when it is whole and matches."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, ValueError) as e:
        return f"meta.json is unreadable ({type(e).__name__})"
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT and isinstance(meta.get("files"), dict)
            and isinstance(meta.get("info", {}), dict)):
        return "meta.json is not a cache entry of this version"
    if inputs is not None and meta.get("inputs") != inputs:
        return "its key inputs differ from this run's"
    recorded = meta["files"]
    for name in files or tuple(recorded):
        rec = recorded.get(name)
        f = path / name
        if not (isinstance(rec, dict) and isinstance(rec.get("size"), int) and isinstance(rec.get("sha256"), str)):
            return f"meta.json has no checksum for {name}"
        try:
            size = f.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != rec["size"]:
            return f"{name} is truncated or grown ({size} bytes, {rec['size']} recorded)"
        if sha256_file(f) != rec["sha256"]:
            return f"{name} fails its checksum"
    return None


def lookup(kind: str, inputs: dict, files: tuple[str, ...]) -> Entry | None:
    """The checked entry for `inputs` holding `files`, or None (a miss, or a bad entry,
    which is deleted and reported)."""
    path = _entry_dir(kind, key_of(inputs))
    if not path.is_dir():
        return None
    why = _problem(path, inputs, files)
    if why is not None:
        discard(path, why)
        return None
    try:
        info = json.loads((path / "meta.json").read_text()).get("info", {})
    except (OSError, ValueError):  # deleted or replaced by a concurrent run since
        return None
    return Entry(path, info)


def discard(path: Path, why: str) -> None:
    """Delete a bad entry (moved aside first, so no reader sees half of it) and say so."""
    print(f"mambaflow: cache entry {path} is damaged ({why}); deleted it, rebuilding", file=sys.stderr)
    _remove(path)


def _remove(path: Path) -> None:
    try:
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=".del-"))
        os.replace(path, aside / "x")
        shutil.rmtree(aside, ignore_errors=True)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def store(kind: str, inputs: dict, files: dict[str, bytes | Path], info: dict | None = None) -> Entry | None:
    """Write an entry atomically: `files` maps names to bytes or to a file to move in.
    Returns the entry in place (ours or a concurrent writer's), or None when the cache
    cannot be written (it only saves time)."""
    final = _entry_dir(kind, key_of(inputs))
    tmp = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        recorded = {}
        for name, data in files.items():
            dst = tmp / name
            if isinstance(data, (bytes, bytearray)):
                dst.write_bytes(data)
            else:
                shutil.move(str(data), dst)
            recorded[name] = {"size": dst.stat().st_size, "sha256": sha256_file(dst)}
        meta = {"format": FORMAT, "kind": kind, "inputs": inputs, "files": recorded, "info": info or {}}
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
        try:
            os.rename(tmp, final)
            tmp = None
        except OSError:  # a concurrent run stored it first (or a damaged one is there)
            if _problem(final, inputs, tuple(files)) is not None:
                _remove(final)
                os.rename(tmp, final)
                tmp = None
        return Entry(final, info or {})
    except OSError:
        return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ `mambaflow cache`


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _legacy(root: Path) -> list[Path]:
    return [p for p in root.glob("*.so")] + [root / d for d in _LEGACY if (root / d).is_dir()]


def info() -> list[str]:
    """Lines describing the cache: per kind, entries, bytes and damaged entries."""
    root = cache_dir()
    lines = [f"cache: {root}" + ("" if root.is_dir() else " (empty)")]
    for kind in KINDS:
        entries = [p for p in (root / kind).glob("*") if p.is_dir() and not p.name.startswith(".")]
        bad = sum(_problem(p, None, ()) is not None for p in entries)
        size = sum(_size(p) for p in entries)
        lines.append(f"  {kind:8} {len(entries):5} entries {size / 1e6:9.1f} MB"
                     + (f", {bad} damaged (rebuilt on next use)" if bad else ""))
    old = _legacy(root)
    if old:
        lines.append(f"  old layout: {len(old)} items {sum(_size(p) for p in old) / 1e6:.1f} MB (unused; clear removes them)")
    return lines


def clear() -> tuple[int, int]:
    """Delete every entry (and the old layout's files); returns (entries, bytes)."""
    root = cache_dir()
    items = [p for k in KINDS for p in (root / k).glob("*")] + _legacy(root)
    n, size = len(items), sum(_size(p) for p in items)
    for p in items:
        p.unlink() if p.is_file() else shutil.rmtree(p, ignore_errors=True)
    return n, size
