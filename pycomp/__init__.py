"""pycomp: compress PyTorch models on real low-bit and sparse kernels."""
