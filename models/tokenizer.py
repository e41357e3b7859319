"""Which text encoding a model reads: a checkpoint's own tokenizer, the project's byte
tokenizer, or none (the model is run on token ids).

- A checkpoint folder with a ``tokenizer.json`` (what transformers' fast tokenizers
  save) uses it, through the ``tokenizers`` library; ids up to its vocabulary size can
  be generated.
- The byte tokenizer (``mambaflow.data``) is used only for models known to read bytes:
  the shipped ones, and folders whose config.json says ``"mambaflow_tokenizer":
  "bytes"`` (what ``mambaflow train`` writes). Generation is limited to the 256 byte ids.
- Anything else (a folder without a tokenizer, a preset with random weights) has no
  tokenizer: ``text_codec`` returns None and the caller works on token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mambaflow.errors import CheckpointError

from .config import TOKENIZER_KEY

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TextCodec:
    """Text <-> token ids for one model; `vocab_limit`: ids at or above it are never
    generated (None: every row of the model's vocabulary may be)."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    vocab_limit: int | None
    identity: str = ""  # equal for two models exactly when they read the same tokens

    def same_tokens(self, other: "TextCodec | None") -> bool:
        """Whether a model with codec `other` reads and writes the same token ids."""
        return other is not None and self.identity == other.identity


def byte_codec() -> TextCodec:
    from mambaflow.data import TOKENIZER

    return TextCodec("bytes", TOKENIZER.encode, TOKENIZER.decode, 256, "bytes")


def file_codec(file: Path, vocab_size: int) -> TextCodec:
    """The tokenizer saved in `file` (a tokenizers / transformers tokenizer.json)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CheckpointError(f"{file} needs the `tokenizers` package: pip install tokenizers") from None
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # the library raises its own (Rust) exception types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read the tokenizer {file} ({reason}); re-save it with "
                              "tokenizer.save_pretrained() or remove it to run on token ids.") from e
    n = tok.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise CheckpointError(f"the tokenizer {file} has {n} tokens but the model's vocabulary has {vocab_size} "
                              "rows; the tokenizer belongs to another model.")
    import hashlib

    vocab = json.dumps(sorted(tok.get_vocab(with_added_tokens=True).items())).encode()
    return TextCodec(f"{file} ({n} tokens)", lambda text: tok.encode(text).ids,
                     lambda ids: tok.decode(list(ids), skip_special_tokens=False), n,
                     "vocab:" + hashlib.sha256(vocab).hexdigest()[:16])


def text_codec(folder: str | Path | None, vocab_size: int, shipped: bool = False) -> TextCodec | None:
    """The codec of a shipped model (`shipped`), of a checkpoint `folder`, or None."""
    if shipped:
        return byte_codec()
    if folder is None:
        return None
    folder = Path(folder)
    if (folder / TOKENIZER_FILE).is_file():
        return file_codec(folder / TOKENIZER_FILE, vocab_size)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get(TOKENIZER_KEY) == "bytes":
        return byte_codec()
    return None
