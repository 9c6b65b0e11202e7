"""Triton kernels, installed as pycomp.triton_kernels."""
