"""Per-call overhead of pycomp's layers against F.linear: `python benchmarks/op_overhead.py`.

A 64x64 layer at M=1 on one thread, where the kernels take a microsecond or two, so the time is the Python
around them (the layer, torch.library's dispatch and the autograd wrapper; the op's checks and routing run in
its C++ entry). The last rows split the op's cost: its C++ entry called directly, the op, and the op under
torch.inference_mode() (no autograd wrapper). Median over 5 runs of 2,000 calls each, after a warm-up. At M=1
on 4096x4096 this overhead is what a layer adds to its kernel.
"""
import statistics
import time

import torch
from torch import nn

from pycomp import _ext
from pycomp.nn import BinaryLinear, Int4Linear, Int8Linear, SparseLinear


def per_call_us(fn, x, calls: int = 2000, runs: int = 5) -> float:
    with torch.no_grad():
        for _ in range(200):
            fn(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(x)
            times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lin = nn.Linear(64, 64)
    x = torch.randn(1, 64)
    int8 = Int8Linear.from_float(lin)
    layers = {"F.linear (nn.Linear)": lin, "Int8Linear W8A8": int8,
              "Int8Linear W8A32": Int8Linear.from_float(lin, mode="weight_only"),
              "Int4Linear g32": Int4Linear.from_float(lin, group_size=32),
              "SparseLinear 2:4": SparseLinear.from_float(lin, pattern="2:4"),
              "BinaryLinear W1A32": BinaryLinear.from_float(lin),
              "C++ entry of int8_linear_dynamic": lambda t: _ext._C.int8_linear_dynamic_op(
                  t, int8.qweight, int8.wscale, int8.bias),
              "op pycomp::int8_linear_dynamic": lambda t: torch.ops.pycomp.int8_linear_dynamic(
                  t, int8.qweight, int8.wscale, int8.bias)}
    for name, fn in layers.items():
        print(f"{name:34s} {per_call_us(fn, x):7.1f} us")
    with torch.inference_mode():
        print(f"{'  the op, inference_mode':34s} {per_call_us(layers['op pycomp::int8_linear_dynamic'], x):7.1f} us")


if __name__ == "__main__":
    main()
