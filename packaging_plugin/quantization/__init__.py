"""Weight quantization layouts: the numpy packing, and the dequantizing nn layers that read it."""
