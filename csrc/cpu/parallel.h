// Threading seam for the CPU kernels.
//
// The kernels must run on torch's own intra-op pool: a second OpenMP runtime
// linked into the extension would ignore torch.set_num_threads and oversubscribe
// the cores. bindings.cpp implements these with at::parallel_for, so kernel files
// stay free of torch headers (each .cpp that includes them costs about a minute
// of compile).
#pragma once

#include <cstdint>
#include <functional>

namespace pycomp {

// Calls fn(begin, end) over disjoint chunks covering [0, n), each at least
// `grain` long (except the last), possibly on several threads at once.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads parallel_for may use (torch.get_num_threads()).
int num_threads();

}  // namespace pycomp
