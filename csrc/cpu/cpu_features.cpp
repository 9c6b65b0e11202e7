#include "cpu/cpu_features.h"

#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PYCOMP_X86 1
#endif

namespace pycomp::cpu {
namespace {

#ifdef PYCOMP_X86
unsigned long long xgetbv0() {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef PYCOMP_X86
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  if (!osxsave) return f;
  const unsigned long long xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;      // XMM and YMM state saved by the OS
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;  // plus opmask and ZMM state
  f.fma = os_avx && ((c >> 12) & 1);
  f.f16c = os_avx && ((c >> 29) & 1);
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = os_avx && ((b >> 5) & 1);
  f.avx512f = os_avx512 && ((b >> 16) & 1);
  f.avx512bw = os_avx512 && ((b >> 30) & 1);
  f.avx512vl = os_avx512 && ((b >> 31) & 1);
  f.avx512vnni = os_avx512 && ((c >> 11) & 1);
  f.avx512vpopcntdq = os_avx512 && ((c >> 14) & 1);
  __cpuid_count(7, 1, a, b, c, d);
  f.avxvnni = os_avx && ((a >> 4) & 1);
  f.avx512bf16 = os_avx512 && ((a >> 5) & 1);
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::portable:
      return true;
    case Isa::avx2:
      return f.avx2 && f.fma;
    case Isa::avx512vnni:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.avx2 && f.fma;
  }
  return false;
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::portable:
      return "portable";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512vnni:
      return "avx512vnni";
  }
  return "unknown";
}

namespace {
Isa parse_name(const std::string& name) {
  if (name == "portable") return Isa::portable;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512vnni") return Isa::avx512vnni;
  throw std::invalid_argument("unknown CPU ISA '" + name + "' (expected portable, avx2 or avx512vnni)");
}
}  // namespace

Isa best_isa() {
  static const Isa best = [] {
    Isa isa = Isa::portable;
    for (Isa cand : {Isa::avx2, Isa::avx512vnni})
      if (isa_supported(cand)) isa = cand;
    if (const char* cap = std::getenv("PYCOMP_CPU_ISA"); cap && *cap) {
      const Isa capped = parse_name(cap);
      if (static_cast<int>(capped) < static_cast<int>(isa)) isa = capped;
    }
    return isa;
  }();
  return best;
}

Isa parse_isa(const std::string& name) {
  if (name.empty()) return best_isa();
  const Isa isa = parse_name(name);
  if (!isa_supported(isa))
    throw std::invalid_argument("this CPU cannot run the '" + name + "' kernels (see pycomp info)");
  return isa;
}

}  // namespace pycomp::cpu
