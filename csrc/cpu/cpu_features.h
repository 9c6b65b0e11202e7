// CPU feature detection by CPUID (and XGETBV for OS support of the wide
// registers), so one build picks the best kernel on any x86-64 machine.
#pragma once

#include <string>

namespace pycomp::cpu {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512vpopcntdq = false;
  bool avx512bf16 = false;
  bool avxvnni = false;
};

// Kernel instruction sets, best last. Every kernel family implements each one,
// portable code being plain C++ that builds on any architecture.
enum class Isa : int { portable = 0, avx2 = 1, avx512vnni = 2 };

const CpuFeatures& cpu_features();

// The best Isa this CPU runs. PYCOMP_CPU_ISA=portable|avx2|avx512vnni (read
// once, here) caps it, to test or compare the lower paths.
Isa best_isa();

// True when this CPU can run kernels built for `isa`.
bool isa_supported(Isa isa);

std::string isa_name(Isa isa);

// Parses "portable", "avx2", "avx512vnni", or "" (= best_isa()); throws
// std::invalid_argument for other names and for an Isa this CPU cannot run.
Isa parse_isa(const std::string& name);

}  // namespace pycomp::cpu
