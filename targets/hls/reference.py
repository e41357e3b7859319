"""Reference inputs and golden outputs of a Mamba design, from the PyTorch model.

The numerical oracle of every csim (and of the XRT host program): the model's own
`decode` / `prefill` run in PyTorch on the same weights the design takes as ports.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import MambaflowError
from ...models.common import MambaState
from .testbench import TestbenchSpec


#: (state input, state output) ports of decode and prefill designs, stacked by layer
STATE_PORTS = (("conv_state", "conv_state_out"), ("ssm_state", "ssm_state_out"))


def random_state(cfg, seed: int, scale: float = 0.5) -> MambaState:
    g = torch.Generator().manual_seed(seed)
    st = MambaState.zeros(cfg, 1)
    st.conv.copy_(torch.randn(st.conv.shape, generator=g) * scale)
    st.ssm.copy_(torch.randn(st.ssm.shape, generator=g) * scale)
    return st


@torch.no_grad()
def reference_data(model, design, steps: int = 2, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5):
    """(inputs, golden, spec) for `steps` calls of the design, keyed by design port name.

    decode: `steps` successive tokens from a seeded state, states fed back; prefill: one
    call on T random tokens. Tokens are drawn from the vocabulary with a seeded numpy
    generator. A float design is checked against the PyTorch model from an N(0, 0.5^2)
    state (every path of the conv and the scan exercised from the first step); an
    integer design (`design.quant`, `model` its QuantizedMamba) against the bit-exact
    integer reference from a state a few steps in, every comparison exact.
    """
    cfg = design.cfg
    if design.phase not in ("decode", "prefill") or design.top not in ("decode", "prefill"):
        raise MambaflowError(
            f"csim reference data is generated for whole-model decode and prefill designs; '{design.top}' "
            "is not one: compare tree verify designs against the llvm JIT run instead"
        )
    if design.phase == "prefill":
        steps = 1
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(steps, design.T), dtype=np.int64)
    if design.quant:
        from ...quant.flow import example_env

        _, state = example_env(model, design.T, seed)
        conv, ssm = state.conv, state.ssm  # (L, batch, ...): the ports keep the batch axis
        rtol = atol = 0.0
    else:
        model = model.eval()
        state = random_state(cfg, seed)
        conv, ssm = state.conv[:, 0], state.ssm[:, 0]
    port = {p.name: p for p in design.ports}

    def as_port(name: str, t: torch.Tensor) -> np.ndarray:
        return t.float().numpy().copy() if not design.quant else t.numpy().astype(port[name].np_dtype)

    inputs: dict[str, np.ndarray] = {"tokens": tokens, "conv_state": as_port("conv_state", conv),
                                     "ssm_state": as_port("ssm_state", ssm)}
    inputs.update(zip(design.weight_names, design.weights(model)))
    logits = []
    for s in range(steps):
        tok = torch.from_numpy(tokens[s])
        if design.phase == "decode":
            out, state = model.decode(tok, state)
        else:
            out, state = model.prefill(tok[None], state)
            out = out[0]
        logits.append(as_port("logits", out.reshape(design.T, cfg.vocab_size)))
    conv, ssm = (state.conv, state.ssm) if design.quant else (state.conv[:, 0], state.ssm[:, 0])
    golden = {"logits": np.stack(logits), "conv_state_out": as_port("conv_state_out", conv),
              "ssm_state_out": as_port("ssm_state_out", ssm)}
    spec = TestbenchSpec(steps=steps, per_step={"tokens"}, feedback={o: i for i, o in STATE_PORTS},
                         rtol=rtol, atol=atol)
    return inputs, golden, spec
