"""Byte-level tokenizer and a text corpus that ships with CPython, for training and
evaluating mambaflow's own small models without downloading anything.

Tokenizer: ids 0..255 are the bytes of the UTF-8 text; 256 = BOS, 257 = EOS, 258 = PAD
(``VOCAB_SIZE`` = 259 ids; model embeddings are padded up to a multiple of 8 or 16).
Decoding drops every id that is not a byte, so specials and the padding rows of a model's
vocabulary decode to "".

Corpus: the English documentation in ``pydoc_data.topics`` (one document per topic) plus
the docstrings of the pure-Python standard library, read with ``ast`` from the .py sources
(nothing is imported, so no module's side effects run), one document per source file.
Everything is iterated in sorted order. A document is held out when the SHA-256 of its
name falls in the last 1/20 of the hash range, so the split is fixed, does not depend on
the order or number of documents, and stays put when the stdlib gains or loses files. The
token stream of a split is ``BOS document EOS`` for each of its documents in name order.

The stdlib differs between Python versions, so ``Corpus.fingerprint`` (a hash of all
document names and texts) is recorded wherever results are reported.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from mambaflow.errors import MambaflowError

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259
SPECIALS = {"<bos>": BOS, "<eos>": EOS, "<pad>": PAD}
HELDOUT_BUCKETS = 20  # 1 of 20 hash buckets (5 %) is held out

# stdlib folders that are tests, demos, GUIs or vendored code rather than library docs.
_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "turtledemo", "tkinter", "lib2to3",
              "ensurepip", "site-packages", "dist-packages", "__pycache__", "venv",
              "pydoc_data"}
_MIN_DOCSTRING = 20  # characters; shorter ones are mostly "Return x." noise


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus BOS/EOS/PAD (see the module docstring)."""

    bos_id, eos_id, pad_id = BOS, EOS, PAD
    vocab_size = VOCAB_SIZE

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``: its UTF-8 bytes, optionally framed by BOS / EOS."""
        if not isinstance(text, str):
            raise MambaflowError(
                f"ByteTokenizer.encode needs a str, got {type(text).__name__}; decode bytes "
                "to text first (or use list(data) for raw byte ids)."
            )
        ids = list(text.encode("utf-8"))
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def decode(self, ids) -> str:
        """Text of the byte ids in ``ids`` (a list or tensor); ids >= 256 (specials and a
        model's padding rows) and negative ids are dropped, invalid UTF-8 becomes U+FFFD."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __call__(self, text: str, bos: bool = False, eos: bool = False) -> torch.Tensor:
        """``encode`` as a LongTensor of shape (1, L): ready for ``model.prefill``."""
        return torch.tensor([self.encode(text, bos, eos)], dtype=torch.long)


TOKENIZER = ByteTokenizer()


@dataclass(frozen=True)
class Document:
    name: str  # "topics/<topic>" or "stdlib/<relative path>.py"
    text: str

    @property
    def heldout(self) -> bool:
        return is_heldout(self.name)


def is_heldout(name: str) -> bool:
    """Whether the document called ``name`` belongs to the held-out split."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return h % HELDOUT_BUCKETS == 0


@dataclass(frozen=True)
class Corpus:
    documents: tuple[Document, ...]

    def split(self, name: str) -> list[Document]:
        """The documents of split ``name``: "train", "heldout" or "all"."""
        if name == "all":
            return list(self.documents)
        if name not in ("train", "heldout"):
            raise MambaflowError(
                f"unknown corpus split {name!r}; use 'train', 'heldout' or 'all'."
            )
        want = name == "heldout"
        return [d for d in self.documents if d.heldout == want]

    def tokens(self, split: str = "train") -> torch.Tensor:
        """The split's token stream (1-D LongTensor): BOS text EOS per document."""
        return _tokens(self, split).clone()

    def num_bytes(self, split: str = "all") -> int:
        return sum(len(d.text.encode("utf-8")) for d in self.split(split))

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) over every document's name and text."""
        h = hashlib.sha256()
        for d in self.documents:
            h.update(d.name.encode() + b"\0" + d.text.encode("utf-8") + b"\0")
        return h.hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def _tokens(corpus: Corpus, split: str) -> torch.Tensor:
    chunks = []
    for d in corpus.split(split):
        chunks += [BOS, *d.text.encode("utf-8"), EOS]
    return torch.tensor(chunks, dtype=torch.long)


def topic_documents() -> list[Document]:
    """One document per entry of ``pydoc_data.topics`` (Python's help() texts)."""
    from pydoc_data.topics import topics

    return [Document(f"topics/{k}", _clean(topics[k])) for k in sorted(topics)]


def stdlib_documents(root: str | Path | None = None) -> list[Document]:
    """One document per pure-Python stdlib source file under ``root`` (default: this
    interpreter's stdlib): its module, class and function docstrings, in source order,
    separated by blank lines. Files are parsed with ``ast``, never imported."""
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise MambaflowError(f"stdlib folder {root} does not exist; pass the folder that "
                             "holds the standard library's .py files.")
    docs = []
    for path in sorted(_py_files(root), key=lambda p: p.relative_to(root).as_posix()):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # e.g. files kept in the tree for tests of broken syntax
        strings = [s for s in _docstrings(tree) if len(s) >= _MIN_DOCSTRING]
        if strings:
            docs.append(Document(f"stdlib/{path.relative_to(root).as_posix()}",
                                 _clean("\n\n".join(strings))))
    return docs


def _py_files(root: Path):
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if not any(p in _SKIP_DIRS or p.startswith(".") for p in parts[:-1]):
            yield path


def _docstrings(tree: ast.AST):
    """Docstrings of the module, classes and functions, in source order."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        stack.extend(reversed([c for c in ast.iter_child_nodes(node)
                               if isinstance(c, (ast.ClassDef, ast.FunctionDef,
                                                 ast.AsyncFunctionDef))]))


def _clean(text: str) -> str:
    """Unix newlines, no trailing spaces, no runs of more than one blank line."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip("\n")


@functools.lru_cache(maxsize=2)
def load_corpus(sources: tuple[str, ...] = ("topics", "stdlib")) -> Corpus:
    """The corpus from ``sources`` ("topics", "stdlib"). Building it parses ~560 stdlib
    files (seconds), so it is cached per process and on disk under
    ``$MAMBAFLOW_CACHE_DIR/corpus`` (default ~/.cache/mambaflow/corpus), keyed by the
    builder version, the Python version and every source file's path, size and mtime."""
    builders = {"topics": topic_documents, "stdlib": stdlib_documents}
    unknown = [s for s in sources if s not in builders]
    if unknown:
        raise MambaflowError(f"unknown corpus source(s) {unknown}; use 'topics' and/or 'stdlib'.")
    cache = _cache_file(sources)
    if cache is not None and cache.is_file():
        try:
            docs = [Document(n, t) for n, t in json.loads(cache.read_text("utf-8"))]
            return Corpus(tuple(docs))
        except (OSError, ValueError, TypeError):
            pass  # unreadable or damaged: rebuild below
    docs = sorted((d for s in sources for d in builders[s]()), key=lambda d: d.name)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps([[d.name, d.text] for d in docs]), "utf-8")
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home is fine: the corpus is just rebuilt next time
    return Corpus(tuple(docs))


_BUILDER_VERSION = 1  # bump when the corpus builder's output changes


def _cache_file(sources) -> Path | None:
    root = os.environ.get("MAMBAFLOW_CACHE_DIR") or Path.home() / ".cache" / "mambaflow"
    h = hashlib.sha256(repr((_BUILDER_VERSION, sys.version, tuple(sources))).encode())
    if "topics" in sources:
        import pydoc_data.topics as topics_module

        _stat_into(h, Path(topics_module.__file__))
    if "stdlib" in sources:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for path in sorted(_py_files(stdlib)):
            _stat_into(h, path)
    return Path(root) / "corpus" / f"corpus-{h.hexdigest()[:16]}.json"


def _stat_into(h, path: Path):
    st = path.stat()
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


def unigram_bits_per_byte(corpus: Corpus | None = None) -> float:
    """Held-out bits per byte of a unigram model of the train split (add-one smoothed
    over the 257 symbols bytes + EOS, in the same accounting as ``bits_per_byte``):
    the baseline every trained model must beat by far."""
    corpus = corpus if corpus is not None else load_corpus()
    train, held = corpus.tokens("train"), corpus.tokens("heldout")
    if train.numel() == 0 or held.numel() == 0:
        raise MambaflowError("unigram_bits_per_byte: the corpus needs documents in both the "
                             "train and the held-out split.")
    counts = torch.bincount(train, minlength=VOCAB_SIZE)[:EOS + 1].double() + 1
    logp = torch.log2(counts / counts.sum())
    targets = held[held != BOS]  # BOS always follows EOS; it costs nothing in either model
    return float(-logp[targets].sum() / (targets < 256).sum())


@torch.no_grad()
def bits_per_byte(model, tokens: torch.Tensor, window: int = 256, batch: int = 16,
                  scan: str | None = None) -> float:
    """Bits per byte of ``model`` on a token stream (1-D), cut into windows of ``window``
    tokens each run from the zero state. Every token after a window's first is predicted;
    the total code length (bits) of byte and EOS targets is divided by the number of byte
    targets. BOS targets are skipped: a BOS always follows an EOS."""
    tokens = tokens.reshape(-1)
    n = (tokens.numel() // window) * window
    if n == 0:
        raise MambaflowError(f"bits_per_byte: {tokens.numel()} tokens is less than one "
                             f"window of {window}; pass more tokens or a smaller window.")
    rows = tokens[:n].view(-1, window)
    total_bits, total_bytes = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for i in range(0, rows.shape[0], batch):
            chunk = rows[i:i + batch]
            logits = model.prefill(chunk, scan=scan)[0][:, :-1].float()
            targets = chunk[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
            keep = targets.reshape(-1) != BOS
            total_bits += float(nll[keep].sum()) / math.log(2)
            total_bytes += int((targets < 256).sum())
    finally:
        model.train(was_training)
    return total_bits / max(total_bytes, 1)
