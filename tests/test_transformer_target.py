"""Transformer targets (runtime/transformer.py) with Mamba drafters (issue 15).

Tree verification in one pass must give, for every node, the logits of decoding its path
token by token, and backtracking must leave exactly the KV cache of decoding the accepted
tokens; greedy speculative decoding of a transformer target with a Mamba draft (torch and
llvm) must give the target's own greedy tokens, and sampling must keep the target's
distribution. Tiny configs are built here; the shipped gpt-target / mamba1-draft pair is
the real one.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mambaflow.errors import CheckpointError, MambaflowError
from mambaflow.models import MambaConfig, build_model, load_model
from mambaflow.models.transformer import TransformerLM, build_transformer, transformer_config
from mambaflow.models.zoo import load_shipped
from mambaflow.runtime.backends import LLVMBackend, TorchBackend, make_backend
from mambaflow.runtime.generate import Sampling, generate
from mambaflow.runtime.speculative import speculative_generate
from mambaflow.runtime.transformer import KVMemory, TransformerBackend, kv_cache_bytes
from test_speculative import _chi2, _chi2_sf  # the distribution test's statistics, shared

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PROMPT = [3, 14, 15, 9, 26, 5]
TOL = dict(atol=1e-4, rtol=1e-4)  # float32: one tree pass vs T decode steps (other matmul shapes)


def tiny(arch: str, vocab: int = 64, seed: int = 0, noise: float = 0.2) -> TransformerLM:
    torch.manual_seed(seed)
    cfg = transformer_config(arch, d_model=32, n_layer=2, n_head=4, vocab_size=vocab, max_positions=128,
                             n_kv_head=2 if arch == "llama" else None)  # Llama with grouped KV heads
    model = build_transformer(cfg)
    with torch.no_grad():  # off the init: peakier, varied next-token distributions
        for p in model.parameters():
            p.add_(noise * torch.randn(p.shape))
    return model


def _decode_path(be, tokens, state):
    logits = []
    for t in tokens:
        lg, state = be.decode(int(t), state)
        logits.append(lg)
    return torch.stack(logits), state


# ------------------------------------------------------------ verify / backtrack


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tree_verify_equals_sequential_decoding_and_backtrack_equals_decoded_cache(arch):
    be = TransformerBackend(tiny(arch))
    _, state = be.prefill(torch.tensor(PROMPT))
    toks = torch.tensor([4, 8, 15, 16, 23, 42, 7, 1, 2, 0])
    parents = [-1, 0, 0, 1, 1, 2, 3, 5, 6, -1]  # the last: a padding node off the committed state
    logits, tree = be.verify_tree(toks, parents, state)
    assert logits.shape == (len(toks), be.cfg.vocab_size)
    for node in range(len(toks)):
        path = tree.path_to(node)
        ref_logits, ref_state = _decode_path(be, toks[path], state)
        torch.testing.assert_close(logits[node], ref_logits[-1], **TOL)
        got = be.state_at(tree, node)
        assert got.length == len(PROMPT) + len(path)
        for a, b in zip(got.keys + got.values, ref_state.keys + ref_state.values):
            torch.testing.assert_close(a, b, **TOL)
    # the committed state is a value: verifying from it left it as it was
    assert state.length == len(PROMPT)
    # and decoding on from a backtracked cache is decoding on from the decoded one
    node = 8
    ref_logits, ref_state = _decode_path(be, toks[tree.path_to(node)], state)
    torch.testing.assert_close(be.decode(5, be.state_at(tree, node))[0], be.decode(5, ref_state)[0], **TOL)


def test_kv_memory_grows_with_context():
    cfg = transformer_config("llama", d_model=192, n_layer=4, n_head=6, vocab_size=264)
    assert kv_cache_bytes(cfg, 512) == 2 * 4 * 6 * 32 * 512 * 4
    assert kv_cache_bytes(cfg, 8192, bytes_per_value=2) == 8 * kv_cache_bytes(cfg, 512)
    be = TransformerBackend(tiny("llama"))
    _, state = be.prefill(torch.tensor(PROMPT))
    assert be.state_bytes(state) == kv_cache_bytes(be.cfg, len(PROMPT)) == KVMemory(be.cfg, 6).state_bytes()


# ------------------------------------------------------------ speculative decoding


@pytest.fixture(scope="module")
def shipped_pair():
    return load_shipped("gpt-target"), load_shipped("mamba1-draft")


@pytest.mark.parametrize("tree", ["chain:4", "2,2,1"])
def test_greedy_speculative_equals_target_greedy_torch_draft(shipped_pair, tree):
    target_model, draft_model = shipped_pair
    target = make_backend("torch", target_model)
    assert isinstance(target, TransformerBackend)
    prompt = list(b"The Python language ")
    sampling = Sampling(vocab_limit=256)
    ref = generate(target, prompt, 32, sampling)
    got = speculative_generate(target, TorchBackend(draft_model), prompt, 32, sampling, tree=tree)
    assert got.tokens == ref.tokens
    assert len(set(ref.tokens)) > 5
    assert got.mean_accepted > 0.5 and got.target_passes < len(ref.tokens) - 1  # the draft helps
    for a, b in zip(got.logits, ref.logits):
        torch.testing.assert_close(a, b, **TOL)
    assert got.replay_layers == () and got.peak_state_bytes["target"] > 0


def test_greedy_speculative_equals_target_greedy_llvm_draft(shipped_pair):
    target_model, draft_model = shipped_pair
    target = make_backend("llvm", target_model)  # the transformer runs on transformers; the draft on llvm
    draft = LLVMBackend(draft_model, prefill_chunk=1, progress=False)
    prompt = list(b"def ")
    sampling = Sampling(vocab_limit=256)
    ref = generate(target, prompt, 24, sampling)
    got = speculative_generate(target, draft, prompt, 24, sampling, tree="chain:4", verify_size=8)
    assert got.tokens == ref.tokens and got.mean_accepted > 0.5


def test_sampling_preserves_transformer_target_distribution():
    """Tokens 2 and 3 of a tiny Llama target drafted by a tiny Mamba1 (V = 5) under
    sampling at temperature 1 must follow the target's joint distribution, computed
    exactly by enumerating its forward passes. N = 800 seeds (smallest expected count
    14); Pearson's chi-square over the 25 cells, failing below p = 1e-3 (about one seed
    set in a thousand for a correct sampler; these seeds are fixed). The same counts are
    checked against the distribution of sampling from the draft (target's token 1,
    draft's tokens 2 and 3; total variation 0.56 from the target's): the test asserts it
    is rejected (p < 1e-6), so it can fail."""
    V, N = 5, 800
    target = TransformerBackend(tiny("llama", vocab=V, seed=3, noise=0.05))
    torch.manual_seed(4)
    dm = build_model(MambaConfig("mamba1", 16, 1, vocab_size=V, d_state=4, pad_vocab_multiple=1))
    with torch.no_grad():
        for p in dm.parameters():
            p.add_(0.5 * torch.randn(p.shape))
    draft = TorchBackend(dm.eval())
    prompt = [1]
    probs, probs_draft = _joint_23(target, draft, prompt, V)
    assert min(probs.values()) * N > 10
    counts, accepted = Counter(), 0
    for seed in range(N):
        out = speculative_generate(target, draft, prompt, 3, Sampling(temperature=1.0, seed=seed), tree="2,2",
                                   backtrack="checkpoint")
        counts[tuple(out.tokens[1:3])] += 1
        accepted += sum(out.accepted)
    stat, dof = _chi2(counts, probs, N)
    assert _chi2_sf(stat, dof) > 1e-3, f"chi2 {stat:.1f} on {dof} dof"
    assert accepted > N * 0.3  # drafts were accepted often (the acceptance path ran)
    assert _chi2_sf(_chi2(counts, probs_draft, N)[0], dof) < 1e-6  # power: the draft's law is told apart


def _joint_23(target, draft, prompt, V):
    """{(t2, t3): P} for the target, and for token 1 from the target then 2, 3 from the draft."""
    def dist(be, seq):
        return torch.softmax(be.prefill(torch.tensor(seq))[0][-1].double(), -1)

    p1 = dist(target, prompt)
    probs, probs_draft = Counter(), Counter()
    for x in range(V):
        pt2, qt2 = dist(target, prompt + [x]), dist(draft, prompt + [x])
        for a in range(V):
            pt3, qt3 = dist(target, prompt + [x, a]), dist(draft, prompt + [x, a])
            for b in range(V):
                probs[(a, b)] += float(p1[x] * pt2[a] * pt3[b])
                probs_draft[(a, b)] += float(p1[x] * qt2[a] * qt3[b])
    return dict(probs), dict(probs_draft)


# ------------------------------------------------------------ checkpoints and errors


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_transformers_checkpoints_load_from_their_folder(tmp_path, arch):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if arch == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64))
    hf.eval().save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert isinstance(model, TransformerLM) and model.config.arch == arch and model.config.vocab_size == 50
    tokens = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(model.prefill(tokens)[0], hf(tokens).logits, atol=1e-5, rtol=1e-5)
    be = make_backend("torch", model)
    ref = generate(be, PROMPT, 6)
    with torch.no_grad():
        full = hf.generate(tokens, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, len(PROMPT):]
    assert ref.tokens == full.tolist()
    # a weight missing from the file is refused (transformers alone would init it randomly)
    import safetensors.torch

    file = tmp_path / "model.safetensors"
    weights = safetensors.torch.load_file(file)
    gone = next(k for k in weights if ".1." in k and k.endswith("weight"))
    safetensors.torch.save_file({k: v for k, v in weights.items() if k != gone}, file, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lacks or mis-shapes weights") as e:
        load_model(tmp_path)
    assert gone in str(e.value)


def test_unsupported_architecture_is_refused_naming_it(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64)
    transformers.BertForMaskedLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"architecture 'bert'.*gpt2, llama") as e:
        load_model(tmp_path)
    assert "\n" not in str(e.value) and "convert" in str(e.value)


def test_draft_with_another_vocabulary_is_refused_with_both_sizes(shipped_pair):
    target_model, _ = shipped_pair
    other = TorchBackend(load_shipped("mamba2-draft"))
    with pytest.raises(MambaflowError, match=r"target has 264 rows, the draft 272") as e:
        speculative_generate(make_backend("torch", target_model), other, PROMPT, 4)
    assert "\n" not in str(e.value) and "tokenizer" in str(e.value)


@pytest.mark.parametrize("args, code, expect", [
    (("run", "--model", "gpt-target", "--tokens", "8"), 0, "check: KV-cached decoding vs one full forward pass"),
    (("run", "--speculative", "--model", "gpt-target", "--draft", "mamba2-draft"), 2, "vocabulary 272, the target 264"),
    (("build", "--model", "gpt-target", "--out", "never"), 2, "is a transformer (llama)"),
])
def test_cli_with_the_transformer_target(tmp_path, monkeypatch, capsys, args, code, expect):
    from mambaflow.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(list(args)) == code
    out, err = capsys.readouterr()
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0] and lines[0].startswith(f"mambaflow {args[0]}: error:")
        assert not (tmp_path / "never").exists()
    else:
        assert expect in out


def test_train_transformer_writes_a_checkpoint_that_loads_back(tmp_path):
    from mambaflow.train import train
    from test_train import _tiny_corpus  # the training tests' small corpus

    cfg = transformer_config("llama", d_model=32, n_layer=1, n_head=2, vocab_size=264, max_positions=64)
    args = dict(steps=3, seq_len=32, batch=2, lr=1e-2, seed=3, progress=False, threads=None, eval_windows=2,
                corpus=_tiny_corpus())
    a = train(cfg, out_dir=tmp_path / "a", **args)
    b = train(cfg, **args)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))  # deterministic
    assert len(a.losses) == 3 and a.heldout[-1][0] == 3
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, TransformerLM) and loaded.config == cfg
    for n, p in loaded.hf.state_dict().items():  # 2-D matrices rounded to float16, the rest exact
        ref = a.model.hf.state_dict()[n]
        torch.testing.assert_close(p, ref.half().float() if ref.dim() == 2 else ref, atol=0, rtol=0)
