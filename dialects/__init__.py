"""mambaflow.dialects: the project's MLIR vocabulary, one definition for every target.

- `directives`: typed helpers for the directive attributes a schedule puts on the IR
  (pipeline_ii, rewind, unroll, dataflow, inline, partition, storage) and
  `strip_directives`, which makes a scheduled module executable on the CPU.
- `stream`: the `mf` dialect (defined in Python on IRDL via `torch_mlir.dialects.ext`):
  `!mf.stream<T, N>`, `mf.stream_create {depth, name}`, `mf.stream_write`,
  `mf.stream_read`; the Kahn-process deadlock check and the CPU lowering to FIFO queues.
"""
