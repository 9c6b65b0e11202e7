"""Build pycomp._C: C++ CPU kernels always, CUDA kernels when a toolkit and a CUDA torch exist.

Switches (environment):
  PYCOMP_CUDA=0|1          force the CUDA part off or on (default: on when nvcc and torch.version.cuda exist)
  PYCOMP_CUDA_ARCHS="80;90a"  SM targets for the CUDA part; "90a" enables Hopper-only instructions
"""
import glob
import os
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _want_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    forced = os.environ.get("PYCOMP_CUDA")  # read here: "0" disables, "1" insists
    have = torch.version.cuda is not None and CUDA_HOME is not None and shutil.which("nvcc") is not None
    if forced == "0":
        return False
    if forced == "1" and not have:
        raise RuntimeError("PYCOMP_CUDA=1 but a CUDA build of torch and nvcc are not both present")
    if not have and shutil.which("nvcc") is not None:
        warnings.warn("nvcc found but torch is a CPU build: building the CPU kernels only")
    return have


def _gencode_flags():
    archs = os.environ.get("PYCOMP_CUDA_ARCHS", "80;90a")  # read here: ';'-separated SM targets
    flags = []
    for arch in filter(None, (a.strip() for a in archs.split(";"))):
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def _extensions():
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        warnings.warn("torch is not importable at build time: pycomp installs without its C++ kernels")
        return [], {}

    cpu_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cpu", "**", "*.cpp"), recursive=True))
    sources = ["csrc/bindings.cpp", *cpu_sources]
    # -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which torch's build passes on: with signed overflow
    # defined, GCC cannot treat int64_t loop counters as affine, and the XNOR table kernel ran 40% slower
    # (C++ harness, 1 thread, M=128: 8.0 against 5.5 ms). No kernel relies on signed wraparound.
    cxx = ["-O3", "-std=c++17", "-fno-math-errno", "-fno-wrapv"]
    link = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is an inline `#pragma omp parallel`: without -fopenmp the CPU kernels
        # run on one thread. The soname resolves to the libgomp torch already loaded, so
        # torch.set_num_threads still governs them.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
        # Link the shared libstdc++ (the one torch loaded) even where the compiler links it statically by
        # default, as the H200 machine's /opt/gcc g++ does: a second, static copy inside _C has no initialised
        # locale, so formatting a number into an error message (TORCH_CHECK(..., n)) segfaulted there; this
        # explicit -lstdc++ comes before the driver's implicit one and resolves every libstdc++ symbol first.
        link.append("-lstdc++")
    include = [os.path.join(ROOT, "csrc")]
    if _want_cuda():
        cuda_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "**", "*.cu"), recursive=True))
        ext = CUDAExtension(
            "pycomp._C",
            sources + cuda_sources,
            include_dirs=include,
            define_macros=[("PYCOMP_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-lineinfo", *_gencode_flags()]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension("pycomp._C", sources, include_dirs=include, extra_compile_args={"cxx": cxx},
                           extra_link_args=link)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["pycomp", "pycomp.*"]) + ["pycomp.triton_kernels"],
    package_dir={"pycomp.triton_kernels": "triton_kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
