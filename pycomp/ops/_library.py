"""The `pycomp` torch.library namespace, shared by every op module."""
import torch

LIB = torch.library.Library("pycomp", "DEF")  # noqa: TOR901 - one DEF per namespace, op modules add to it
