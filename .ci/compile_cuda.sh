#!/usr/bin/env bash
# Compile-checks the CUDA kernels on a machine without a GPU:
#  1. nvcc builds every csrc/cuda/**/*.cu for sm_80 and sm_90a (the flags setup.py
#     uses) and prints each kernel's ptxas resource usage; any spill, stack frame
#     or local memory fails the check (every kernel here is a hot one);
#  2. when cuobjdump is found, the SASS must show what the designs rely on:
#     16-byte weight loads and tensor-core mmas in the GEMVs (cp.async ring in the
#     int4 one), IMMA in the GEMM;
#  3. csrc/bindings.cpp is syntax-checked with -DPYCOMP_WITH_CUDA against torch's
#     headers, which covers csrc/cuda/cuda_bindings.h.
# Run from anywhere: bash .ci/compile_cuda.sh. Exits non-zero on any failure.
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc),
# CUDA_HOME (default: the toolkit nvcc belongs to), PYTHON (a python with torch,
# default: python3), CXX (default: g++).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
PYTHON=${PYTHON:-python3}
CXX=${CXX:-g++}
[ -x "$NVCC" ] || { echo "compile_cuda: nvcc not found (set NVCC)" >&2; exit 1; }
# The toolkit's root, as nvcc reports it (nvcc may be a wrapper script elsewhere).
cuda_home=${CUDA_HOME:-$("$NVCC" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)}
[ -f "$cuda_home/include/cuda_runtime.h" ] || { echo "compile_cuda: no cuda_runtime.h under $cuda_home (set CUDA_HOME)" >&2; exit 1; }

out=$(mktemp -d /tmp/pycomp_cuda.XXXXXX)
trap 'rm -rf "$out"' EXIT

mapfile -t sources < <(find csrc/cuda -name '*.cu' | sort)
[ ${#sources[@]} -gt 0 ] || { echo "compile_cuda: no .cu files under csrc/cuda" >&2; exit 1; }

# ---- 3 (started first: it is the slowest step) bindings syntax check, in the background
torch_inc=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))")
py_inc=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
bind_flags=(-std=c++17 -fsyntax-only -DPYCOMP_WITH_CUDA -DTORCH_EXTENSION_NAME=_C -Icsrc -I"$cuda_home/include"
            -I"$py_inc")
for d in $torch_inc; do bind_flags+=(-isystem "$d"); done
# A CPU build of torch lacks the header CMake generates for c10's CUDA part; stand in for it.
if ! ls $torch_inc 2> /dev/null | grep -q . || [ ! -f "$(echo $torch_inc | cut -d' ' -f1)/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  mkdir -p "$out/stub/c10/cuda/impl"
  echo "#pragma once" > "$out/stub/c10/cuda/impl/cuda_cmake_macros.h"
  echo "#define C10_CUDA_BUILD_SHARED_LIBS" >> "$out/stub/c10/cuda/impl/cuda_cmake_macros.h"
  bind_flags+=(-isystem "$out/stub")
fi
( set +e; "$CXX" "${bind_flags[@]}" csrc/bindings.cpp > "$out/bindings.log" 2>&1; echo $? > "$out/bindings.rc" ) &
bind_pid=$!

# ---- 1. nvcc, one job per file (in parallel)
nvcc_flags=(-O3 -std=c++17 -lineinfo -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a
            -Icsrc -Xptxas -v -Werror all-warnings)
pids=()
for src in "${sources[@]}"; do
  obj="$out/$(echo "$src" | tr '/' '_').o"
  ( set +e; "$NVCC" "${nvcc_flags[@]}" -c "$src" -o "$obj" > "$obj.log" 2>&1; echo $? > "$obj.rc" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done

status=0
for src in "${sources[@]}"; do
  obj="$out/$(echo "$src" | tr '/' '_').o"
  if [ "$(cat "$obj.rc")" != 0 ]; then
    echo "FAIL nvcc $src"; cat "$obj.log"; status=1; continue
  fi
  echo "== $src"
  # One line per kernel and arch: registers, shared memory, stack, spills; fails on any of the last three.
  if ! "$PYTHON" - "$obj.log" <<'PY'
import re, subprocess, sys
log = open(sys.argv[1]).read().splitlines()
rows, name, arch, frame = [], None, None, None
for line in log:
    if m := re.search(r"Compiling entry function '([^']+)' for '(sm_\w+)'", line):
        name, arch = m.groups()
    elif m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
        frame = tuple(map(int, m.groups()))
    elif m := re.search(r"Used (\d+) registers", line):
        smem = re.search(r"(\d+) bytes smem", line)
        lmem = re.search(r"(\d+) bytes lmem", line)
        rows.append((arch, name, int(m.group(1)), int(smem.group(1)) if smem else 0, frame or (0, 0, 0),
                     int(lmem.group(1)) if lmem else 0))
names = [r[1] for r in rows]
try:
    names = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout.split("\n")
except (OSError, subprocess.CalledProcessError):
    pass
bad = False
for (arch, _, regs, smem, (stack, st, ld), lmem), full in zip(rows, names):
    short = re.sub(r"pycomp::cuda::\(anonymous namespace\)::", "", full)
    short = re.sub(r"pycomp::cuda::", "", short)
    if short.endswith(")"):  # drop the parameter list, keep the template arguments
        depth = 0
        for i in range(len(short) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(short[i], 0)
            if depth == 0:
                short = short[:i]
                break
    flag = "" if stack == st == ld == lmem == 0 else "   <-- stack/spill/local memory"
    bad |= bool(flag)
    print(f"  {arch:7s} regs={regs:<4d} static_smem={smem:<6d} stack={stack} spill={st}/{ld} lmem={lmem}  {short}{flag}")
if not rows:
    print("  no kernels found in the ptxas report"); bad = True
sys.exit(1 if bad else 0)
PY
  then
    echo "FAIL $src: see the report above"; status=1
  fi
done

# ---- 2. SASS checks (cuobjdump from CUDA or the one triton bundles)
cuobjdump=$(command -v cuobjdump || true)
[ -n "$cuobjdump" ] || [ ! -x "$cuda_home/bin/cuobjdump" ] || cuobjdump="$cuda_home/bin/cuobjdump"
if [ -z "$cuobjdump" ]; then
  cuobjdump=$("$PYTHON" -c "import os, triton; p = os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'); print(p if os.path.exists(p) else '')" 2> /dev/null || true)
fi
sass_expect() {  # file arch pattern what
  local obj="$out/$(echo "$1" | tr '/' '_').o"
  if ! "$cuobjdump" -sass -arch "$2" "$obj" | grep -qE "$3"; then
    echo "FAIL sass $1 ($2): no $4 ($3)"; status=1
  else
    echo "  sass $2: $4 present"
  fi
}
if [ -n "$cuobjdump" ]; then
  echo "== SASS ($cuobjdump)"
  for src in "${sources[@]}"; do
    obj="$out/$(echo "$src" | tr '/' '_').o"
    [ -f "$obj" ] || continue
    if "$cuobjdump" -sass "$obj" | grep -qE "\b(LDL|STL)\b"; then echo "FAIL sass $src: local memory (LDL/STL)"; status=1; fi
  done
  for arch in sm_80 sm_90a; do
    sass_expect csrc/cuda/int8/w8a16_gemv.cu "$arch" "LDG\.E\.NA\.LTC(128|256)B\.128" "16-byte streaming weight loads"
    sass_expect csrc/cuda/int8/w8a16_gemv.cu "$arch" "HMMA\.16816\.F32\.BF16" "bf16 tensor-core mma"
    sass_expect csrc/cuda/int8/w8a8_gemm.cu "$arch" "IMMA\.16832\.S8\.S8" "int8 tensor-core mma"
    sass_expect csrc/cuda/int8/w8a8_gemm.cu "$arch" "LDGSTS\.E\.BYPASS\.LTC128B\.128" "16-byte cp.async"
    sass_expect csrc/cuda/int8/w8a8_gemm.cu "$arch" "LDSM\.16\.M88\.4" "ldmatrix.x4"
    sass_expect csrc/cuda/int8/quantize.cu "$arch" "LDG\.E\.128" "16-byte activation loads"
    sass_expect csrc/cuda/int4/w4a16_gemv.cu "$arch" "LDGSTS\.E\.BYPASS\.LTC128B\.128" "16-byte cp.async weight loads"
    sass_expect csrc/cuda/int4/w4a16_gemv.cu "$arch" "HMMA\.16816\.F32\.BF16" "bf16 tensor-core mma"
    sass_expect csrc/cuda/int4/w4a16_gemv.cu "$arch" "HMMA\.16816\.F32 " "f16 tensor-core mma"
    sass_expect csrc/cuda/int4/w4a16_gemv.cu "$arch" "LDS\.128" "16-byte shared loads of the weight ring"
    sass_expect csrc/cuda/binary/xnor_gemm.cu "$arch" "BMMA\.168256\.AND\.POPC" "b1 tensor-core mma (and.popc)"
    sass_expect csrc/cuda/binary/xnor_gemm.cu "$arch" "LDGSTS" "cp.async"
    sass_expect csrc/cuda/sparse/sparse24_mma.cu "$arch" "HMMA\.SP\.16832" "sparse tensor-core mma"
  done
else
  echo "== SASS: cuobjdump not found, skipped"
fi

# ---- 3. collect the bindings check
wait "$bind_pid" || true
if [ "$(cat "$out/bindings.rc")" != 0 ]; then
  echo "FAIL bindings: g++ -fsyntax-only -DPYCOMP_WITH_CUDA csrc/bindings.cpp"; cat "$out/bindings.log"; status=1
else
  echo "== csrc/bindings.cpp with -DPYCOMP_WITH_CUDA: syntax OK"
  [ -s "$out/bindings.log" ] && cat "$out/bindings.log"
fi

[ "$status" = 0 ] && echo "compile_cuda: OK" || echo "compile_cuda: FAILED"
exit "$status"
