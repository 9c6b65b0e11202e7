"""Compressed models inside CUDA graphs: capture the forward, replay it on new inputs, compare with eager."""
import pytest
import torch
from torch import nn

import pycomp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")

SPECS = [("int8", {"mode": "dynamic"}), ("int8", {"mode": "weight_only"}), ("int4", {"group_size": 128}),
         ("int4", {"group_size": 32, "symmetric": True})]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 256),
                         nn.ReLU(), nn.Linear(256, 64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 64])  # M = 1 (GEMV paths) and M = 64 * 64 conv rows (GEMM paths)
@pytest.mark.parametrize("spec,options", SPECS)
def test_capture_and_replay(spec, options, batch, dtype):
    small = pycomp.compress(_model(), spec, **options).to("cuda", dtype).eval()
    static_x = torch.randn(batch, 16, 8, 8, device="cuda", dtype=dtype)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):  # warm up: Triton autotuning and lazy init happen here
        for _ in range(3):
            small(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = small(static_x)
    for seed in (1, 2):
        x = torch.randn(batch, 16, 8, 8, device="cuda", dtype=dtype, generator=torch.Generator("cuda").manual_seed(seed))
        static_x.copy_(x)
        graph.replay()
        with torch.no_grad():
            want = small(x)
        # the same kernels on the same inputs: replay must give eager's bits
        torch.testing.assert_close(static_out, want, rtol=0, atol=0)


def test_reduce_overhead_compile():
    """torch.compile(mode="reduce-overhead") records CUDA graphs itself; the pycomp ops must not prevent it."""
    recipe = pycomp.Recipe.from_dict({"steps": [{"int8": {"skip": ["5"]}}, {"int4": {"group_size": 128}}]})
    small = pycomp.compress(_model(), recipe).to("cuda", torch.float16).eval()
    compiled = torch.compile(small, mode="reduce-overhead", fullgraph=True)
    for seed in range(3):
        x = torch.randn(8, 16, 8, 8, device="cuda", dtype=torch.float16,
                        generator=torch.Generator("cuda").manual_seed(seed))
        with torch.no_grad():
            got, want = compiled(x).clone(), small(x)
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))
