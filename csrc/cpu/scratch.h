// Small helpers the CPU kernel drivers share: integer rounding and 64-byte aligned scratch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace pycomp::cpu {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// 64-byte aligned scratch that is freed on scope exit.
template <class T>
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    if (n > 0) {
      const size_t bytes = static_cast<size_t>(round_up(n * int64_t(sizeof(T)), 64));
      p_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      if (!p_) throw std::bad_alloc();
    }
  }
  T* get() const { return p_.get(); }
  T& operator[](int64_t i) const { return p_.get()[i]; }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> p_;
};

}  // namespace pycomp::cpu
