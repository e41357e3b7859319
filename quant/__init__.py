"""Post-training quantization of Mamba1/Mamba2 (see quant/README or module docs)."""
