"""What an isolated call costs on this machine: `python benchmarks/call_gap.py [--threads 2]`.

The M=1 GEMVs take a few tenths of a millisecond. Timed back to back they look faster than when each call
follows other work (fp32 F.linear in an interleaved benchmark, a sleep, a Python spin): on the 2-core VMs
here an isolated call paid about 0.15-0.25 ms more (benchmarks/RESULTS.md, session 4). This prints, for
W1A32, CSR 90% and int4 g128 at M=1 on 4096x4096 (hot weights), and for two torch ops that have nothing of
ours in them (a 1 MB sum, an L2-resident 256^3 fp32 matmul), the median per call back to back and after each
kind of gap, and fp32 F.linear for scale. Session 6 found torch's own ops pay the same: the cost belongs to
the machine, not to a kernel, so the CPU benchmarks now time each implementation in turns of a few calls
(pycomp.benchmark.timing.BLOCK).
"""
import argparse
import time

import torch
import torch.nn.functional as F

from pycomp.benchmark.timing import median_ms, time_interleaved
from pycomp.formats import sparse as sfmt
from pycomp.formats.binary import binarize_weight
from pycomp.ops import binary, int4, sparse
from pycomp.quantize.int4 import rtn_int4


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = k = 4096
    w, b, x = torch.randn(n, k), torch.randn(n), torch.randn(1, k)
    bits, alpha = binarize_weight(w)
    csr = sfmt.pack_csr(w * (torch.rand(n, k) > 0.9))
    packed, scales, zeros = rtn_int4(w, 128)
    ops = {"W1A32": lambda i: binary.w1a16_linear(x, bits, alpha, 0, b),
           "CSR 90%": lambda i: sparse.csr_linear(x, *csr, k, b),
           "int4 g128": lambda i: int4.w4a16_linear(x, packed, scales, zeros, b, 128, k)}
    small, vec = torch.randn(256, 256), torch.randn(1 << 18)
    ops.update({"sum 1 MB": lambda i: vec.sum(), "mm 256^3": lambda i: small @ small})
    w2 = w.clone()

    def spin(i):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.004:
            pass

    gaps = {"fp32 F.linear": lambda i: F.linear(x, w2, b), "4 ms sleep": lambda i: time.sleep(0.004),
            "4 ms spin": spin}
    print(f"{args.threads} threads, hot weights, M=1, {n}x{k}; ms per call, median of {args.repeats}")
    print(f"{'op':>10} {'back to back':>13} " + " ".join(f"{'after ' + g:>20}" for g in gaps))
    for name, op in ops.items():
        alone = median_ms(time_interleaved({"op": op}, repeats=args.repeats, block=1)["op"])
        after = [median_ms(time_interleaved({"gap": gap, "op": op}, repeats=args.repeats, block=1)["op"])
                 for gap in gaps.values()]
        print(f"{name:>10} {alone:13.3f} " + " ".join(f"{t:20.3f}" for t in after))
    print(f"{'fp32':>10} {median_ms(time_interleaved({'f': gaps['fp32 F.linear']}, repeats=args.repeats)['f']):13.3f}")


if __name__ == "__main__":
    main()
