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

    decode: `steps` successive tokens from a random (seeded) state, states fed back;
    prefill: one call on T random tokens. Tokens are drawn from the vocabulary with a
    seeded numpy generator; the starting state is N(0, 0.5^2) so every path of the conv
    and the scan is exercised from the first step.
    """
    cfg = design.cfg
    if design.phase not in ("decode", "prefill"):
        raise MambaflowError(
            f"csim reference data is generated for decode and prefill designs; '{design.phase}' "
            "designs take a token tree: compare them against the llvm JIT run instead"
        )
    if design.phase == "prefill":
        steps = 1
    model = model.eval()
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.vocab_size, size=(steps, design.T), dtype=np.int64)
    state = random_state(cfg, seed)
    inputs: dict[str, np.ndarray] = {"tokens": tokens}
    inputs["conv_state"] = state.conv[:, 0].numpy().copy()
    inputs["ssm_state"] = state.ssm[:, 0].numpy().copy()
    for name, w in zip(design.weight_names, design.weights(model)):
        inputs[name] = w
    logits = []
    for s in range(steps):
        tok = torch.from_numpy(tokens[s])
        if design.phase == "decode":
            out, state = model.decode(tok, state)
        else:
            out, state = model.prefill(tok[None], state)
            out = out[0]
        logits.append(out.reshape(design.T, cfg.vocab_size).float().numpy())
    golden: dict[str, np.ndarray] = {"logits": np.stack(logits)}
    golden["conv_state_out"] = state.conv[:, 0].numpy().copy()
    golden["ssm_state_out"] = state.ssm[:, 0].numpy().copy()
    spec = TestbenchSpec(steps=steps, per_step={"tokens"}, feedback={o: i for i, o in STATE_PORTS},
                         rtol=rtol, atol=atol)
    return inputs, golden, spec


@torch.no_grad()
def integer_reference_data(qm, design, steps: int = 2, seed: int = 0):
    """(inputs, golden, spec) of an integer design (`quant.flow.capture_quantized`, scope
    "model") from the bit-exact integer reference (`QuantizedMamba.decode`): `steps`
    decode steps of seeded random tokens from a state a few steps in, states fed back.
    Every comparison is exact (integer ports compare bit for bit)."""
    from ...quant.flow import example_env

    if not design.quant or design.top != "decode":
        raise MambaflowError("integer reference data is made for a whole-model integer decode design "
                             "(capture_quantized(qm, 'model'))")
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, qm.config.vocab_size, size=(steps, design.T), dtype=np.int64)
    _, state = example_env(qm, design.T, seed)
    by_name = {p.name: p for p in design.ports}
    inputs: dict[str, np.ndarray] = {"tokens": tokens}
    for name, t in (("conv_state", state.conv), ("ssm_state", state.ssm)):
        inputs[name] = t.numpy().astype(by_name[name].np_dtype)
    inputs.update(zip(design.weight_names, design.weights(qm)))
    logits = []
    for s in range(steps):
        out, state = qm.decode(torch.from_numpy(tokens[s]), state)
        logits.append(out.numpy().astype(by_name["logits"].np_dtype))
    golden = {"logits": np.stack(logits),
              "conv_state_out": state.conv.numpy().astype(by_name["conv_state_out"].np_dtype),
              "ssm_state_out": state.ssm.numpy().astype(by_name["ssm_state_out"].np_dtype)}
    spec = TestbenchSpec(steps=steps, per_step={"tokens"}, feedback={o: i for i, o in STATE_PORTS}, rtol=0.0, atol=0.0)
    return inputs, golden, spec
