"""benchmarks/drafters.py's memory table: the Mamba drafter's constant state against the
transformer drafter's KV cache (runtime.transformer.kv_cache_bytes) and the saving."""

import importlib.util
from pathlib import Path

import pytest

from mambaflow.models.config import get_config
from mambaflow.models.transformer import transformer_config
from mambaflow.runtime.backtrack import MambaMemory
from mambaflow.runtime.transformer import kv_cache_bytes
from mambaflow.train import param_count


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "drafters.py"
    spec = importlib.util.spec_from_file_location("drafters_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_memory_table_against_the_runtime_memory_models(bench):
    mcfg = get_config("mamba-130m")
    tcfg = transformer_config("llama", d_model=96, n_layer=2, n_head=3, vocab_size=264)
    tab = bench.memory_table(("m", mcfg), ("t", tcfg), contexts=(512, 2048, 8192))
    m, t = tab["mamba"], tab["transformer"]
    state = MambaMemory(mcfg).state_bytes()
    # mamba1: per layer conv (d_inner x d_conv) and SSM (d_inner x d_state) float32
    assert state == mcfg.n_layer * mcfg.d_inner * (mcfg.d_conv + mcfg.d_state) * 4
    for n in (512, 2048, 8192):
        k = str(n)
        assert m["state_bytes"][k] == state  # constant in the context
        assert t["state_bytes"][k] == kv_cache_bytes(tcfg, n) == 2 * 2 * 3 * 32 * n * 4
        assert m["total_bytes"][k] == state + 4 * param_count(mcfg)
        assert t["total_bytes"][k] == kv_cache_bytes(tcfg, n) + 4 * param_count(tcfg)
        for key in ("state_bytes", "total_bytes"):
            assert tab["saving_pct"][key][k] == pytest.approx(100 * (1 - m[key][k] / t[key][k]))
    # the KV cache grows linearly: the saving on state + weights grows with the context
    s = tab["saving_pct"]["total_bytes"]
    assert s["512"] < s["2048"] < s["8192"]


def test_published_pair_and_policy_spelling(bench):
    pub = bench.published_pair()
    assert pub["mamba"]["name"] == "mamba-130m"
    assert pub["transformer"]["state_bytes"]["2048"] == 2 * 12 * 768 * 2048 * 4
    assert 120e6 < pub["transformer"]["params"] < 130e6  # GPT-2 small's 124M
    assert bench.parse("mamba/search:16") == ("mamba", "search:16")
    assert bench.parse("mamba/search:8@tokens") == ("mamba", "search:8")
    with pytest.raises(Exception, match="reward"):
        bench.parse("mamba/chain:4@tokens")
    with pytest.raises(Exception, match="DRAFTER/TREE"):
        bench.parse("llama/chain:4")
    with pytest.raises(Exception, match="search"):
        bench.parse("mamba/search:0")


def test_context_for_saving_is_the_crossover(bench):
    mcfg = get_config("mamba-130m")
    tcfg = transformer_config("gpt2", d_model=768, n_layer=12, n_head=12, vocab_size=50257)
    x = bench.context_for_saving(mcfg, tcfg, 30.0)
    tab = bench.memory_table(("m", mcfg), ("t", tcfg), contexts=(x - 1, x))
    assert tab["saving_pct"]["total_bytes"][str(x - 1)] < 30.0 <= tab["saving_pct"]["total_bytes"][str(x)]
