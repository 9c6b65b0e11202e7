// csrc/cpu/parallel.h on plain OpenMP, for C++ probes that link the kernel sources without torch
// (the extension implements it with at::parallel_for in csrc/bindings.cpp): one contiguous share per thread.
#include "cpu/parallel.h"

#include <omp.h>

namespace pycomp {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t chunks = (n + grain - 1) / grain;
  const int threads = int(chunks < omp_get_max_threads() ? chunks : omp_get_max_threads());
#pragma omp parallel num_threads(threads)
  {
    const int64_t per = (n + threads - 1) / threads, b = omp_get_thread_num() * per, e = b + per < n ? b + per : n;
    if (b < e) fn(b, e);
  }
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace pycomp
