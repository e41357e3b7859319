"""Byte tokenizer, the CPython text corpus and the bits-per-byte accounting."""

import math

import pytest
import torch

from mambaflow.data import (BOS, EOS, PAD, TOKENIZER, VOCAB_SIZE, Corpus, Document,
                            bits_per_byte, is_heldout, load_corpus, stdlib_documents,
                            topic_documents, unigram_bits_per_byte)
from mambaflow.errors import MambaflowError


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_tokenizer_round_trip_and_specials():
    text = "def f(x):\n    return 'héllo → ✓'\n"
    ids = TOKENIZER.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert TOKENIZER.decode(ids) == text
    framed = TOKENIZER.encode("ab", bos=True, eos=True)
    assert framed == [BOS, 97, 98, EOS]
    assert (BOS, EOS, PAD, VOCAB_SIZE) == (256, 257, 258, 259)
    # Specials, padding rows of a model vocabulary (>= 259) and negatives decode to "".
    assert TOKENIZER.decode([BOS, 104, PAD, 105, 263, 271, EOS, -1]) == "hi"
    assert TOKENIZER.decode(torch.tensor([[72, 105]])) == "Hi"
    assert TOKENIZER.decode([0xE2, 0x86]) == "\ufffd"  # a cut multi-byte char
    t = TOKENIZER("ok", bos=True)
    assert t.dtype == torch.long and t.tolist() == [[BOS, 111, 107]]
    with pytest.raises(MambaflowError, match="needs a str"):
        TOKENIZER.encode(b"bytes")


def test_stdlib_documents_read_sources_without_importing(tmp_path):
    # A module that would fail (and print) if imported: only ast reads it.
    (tmp_path / "zeta.py").write_text(
        '"""Zeta module docstring, long enough to keep."""\n'
        'print("side effect"); raise SystemExit(1)\n'
        'class K:\n    """Class docstring of K, kept as well."""\n'
        '    def m(self):\n        """Short."""\n')
    (tmp_path / "alpha.py").write_text('def f():\n    """Alpha function documentation."""\n')
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "t.py").write_text('"""Tests are skipped entirely, always."""\n')
    docs = stdlib_documents(tmp_path)
    assert [d.name for d in docs] == ["stdlib/alpha.py", "stdlib/zeta.py"]
    assert docs[1].text == ("Zeta module docstring, long enough to keep.\n\n"
                            "Class docstring of K, kept as well.")
    with pytest.raises(MambaflowError, match="does not exist"):
        stdlib_documents(tmp_path / "missing")


def test_split_is_fixed_and_disjoint(corpus):
    names = [d.name for d in corpus.documents]
    assert names == sorted(names) and len(set(names)) == len(names)
    train, held = corpus.split("train"), corpus.split("heldout")
    assert len(train) + len(held) == len(corpus.documents)
    assert {d.name for d in train}.isdisjoint(d.name for d in held)
    # Hash buckets: about 5 % of documents and of bytes are held out.
    assert 0.02 < len(held) / len(names) < 0.12
    assert 0.03 < corpus.num_bytes("heldout") / corpus.num_bytes() < 0.15
    assert all(is_heldout(d.name) for d in held) and not any(is_heldout(d.name) for d in train)
    # Both sources are there: ~465 KB of topics and over a megabyte of docstrings.
    assert len(topic_documents()) > 70
    assert sum(d.name.startswith("stdlib/") for d in corpus.documents) > 300
    assert corpus.num_bytes() > 1_500_000
    with pytest.raises(MambaflowError, match="unknown corpus split"):
        corpus.split("test")


def test_token_stream_framing(corpus):
    held = corpus.tokens("heldout")
    docs = corpus.split("heldout")
    assert held.dtype == torch.long
    assert held.numel() == sum(len(d.text.encode()) + 2 for d in docs)
    assert int((held == BOS).sum()) == int((held == EOS).sum()) == len(docs)
    assert held[0] == BOS and held[-1] == EOS
    first = len(docs[0].text.encode()) + 2
    assert TOKENIZER.decode(held[:first]) == docs[0].text
    assert int(held.max()) <= EOS
    held[0] = 0  # callers get a copy, not the cached stream
    assert corpus.tokens("heldout")[0] == BOS


def test_corpus_is_deterministic():
    a = Corpus(tuple(topic_documents()))
    b = Corpus(tuple(topic_documents()))
    assert a.fingerprint == b.fingerprint and torch.equal(a.tokens("all"), b.tokens("all"))


class _Uniform(torch.nn.Module):
    """Equal logits over V ids: exactly log2(V) bits per predicted token."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def prefill(self, tokens, scan=None):
        return torch.zeros(*tokens.shape, self.vocab), None


def test_bits_per_byte_accounting():
    doc = [BOS, *b"abcdefg", EOS, BOS, *b"hij", EOS]  # 14 tokens
    tokens = torch.tensor(doc * 4)                    # 56 tokens -> 3 windows of 16
    bpb = bits_per_byte(_Uniform(264), tokens, window=16, batch=2)
    rows = tokens[:48].view(3, 16)[:, 1:]
    coded = int((rows != BOS).sum())                  # bytes and EOS cost bits, BOS not
    assert bpb == pytest.approx(math.log2(264) * coded / int((rows < 256).sum()))
    with pytest.raises(MambaflowError, match="less than one window"):
        bits_per_byte(_Uniform(264), tokens[:10], window=16)


def test_unigram_baseline(corpus):
    u = unigram_bits_per_byte(corpus)
    # English text with code: ~5 bits per byte, well under the 8 of raw bytes.
    assert 4.0 < u < 6.0
    tiny = Corpus((Document("x", "aaaa"),))
    with pytest.raises(MambaflowError, match="both the train and the held-out"):
        unigram_bits_per_byte(tiny)


def test_corpus_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAFLOW_CACHE_DIR", str(tmp_path))
    load_corpus.cache_clear()
    try:
        built = load_corpus(("topics",))
        files = list((tmp_path / "corpus").glob("corpus-*.json"))
        assert len(files) == 1
        load_corpus.cache_clear()
        assert load_corpus(("topics",)).fingerprint == built.fingerprint  # read back
        files[0].write_text("{not json")                                  # damaged: rebuilt
        load_corpus.cache_clear()
        assert load_corpus(("topics",)).fingerprint == built.fingerprint
        assert built.fingerprint == Corpus(tuple(topic_documents())).fingerprint
        with pytest.raises(MambaflowError, match="unknown corpus source"):
            load_corpus(("wikipedia",))
    finally:
        load_corpus.cache_clear()
