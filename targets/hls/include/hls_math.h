// hls_math.h — mambaflow's C-simulation subset of the Vitis HLS math library (hls::).
// Header-only, C++17.
//
// Why the project keeps its own: no package ships hls_math for csim. The hls4ml wheel's
// hls_math.h has seven templates over x.to_double() (ap_fixed only) and no float
// overloads, and the emitter calls hls:: math on float only; Vitis' own needs a Vitis
// install. csim copies this file next to AMD's ap_*.h (targets/hls/cxx.py,
// csim_include_dir), whose ap_fixed.h this one includes.
//
// float and double overloads forward to <cmath> (expf and friends to the float
// versions). Real Vitis hls_math implements them in hardware-oriented code whose
// results may differ from <cmath> by a few ulp: compare float designs with a tolerance.
// ap_fixed / ap_ufixed overloads compute through double and convert the result back to
// the argument's type (its Q and O modes apply). Vitis' own fixed point math functions
// are not guaranteed to give the same bits; the emitter only calls hls:: math on float.
#ifndef MAMBAFLOW_HLS_MATH_SHIM_H
#define MAMBAFLOW_HLS_MATH_SHIM_H

#include <cmath>

#include "ap_fixed.h"

namespace hls {

#define HLS_SHIM_UNARY(NAME, EXPR)                                                          \
  inline float NAME(float x) { return EXPR; }                                               \
  inline double NAME(double x) { return EXPR; }                                             \
  inline float NAME##f(float x) { return EXPR; }                                            \
  template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>                          \
  inline ap_fixed_base<W, I, S, Q, O, N> NAME(const ap_fixed_base<W, I, S, Q, O, N>& fx) { \
    const double x = fx.to_double();                                                        \
    return ap_fixed_base<W, I, S, Q, O, N>(EXPR);                                           \
  }
HLS_SHIM_UNARY(exp, std::exp(x))
HLS_SHIM_UNARY(exp2, std::exp2(x))
HLS_SHIM_UNARY(expm1, std::expm1(x))
HLS_SHIM_UNARY(log, std::log(x))
HLS_SHIM_UNARY(log2, std::log2(x))
HLS_SHIM_UNARY(log10, std::log10(x))
HLS_SHIM_UNARY(log1p, std::log1p(x))
HLS_SHIM_UNARY(sqrt, std::sqrt(x))
HLS_SHIM_UNARY(rsqrt, 1 / std::sqrt(x))
HLS_SHIM_UNARY(recip, 1 / x)
HLS_SHIM_UNARY(tanh, std::tanh(x))
HLS_SHIM_UNARY(sin, std::sin(x))
HLS_SHIM_UNARY(cos, std::cos(x))
HLS_SHIM_UNARY(tan, std::tan(x))
HLS_SHIM_UNARY(atan, std::atan(x))
HLS_SHIM_UNARY(erf, std::erf(x))
HLS_SHIM_UNARY(floor, std::floor(x))
HLS_SHIM_UNARY(ceil, std::ceil(x))
HLS_SHIM_UNARY(trunc, std::trunc(x))
HLS_SHIM_UNARY(round, std::round(x))
HLS_SHIM_UNARY(fabs, std::fabs(x))
#undef HLS_SHIM_UNARY

inline float pow(float x, float y) { return std::pow(x, y); }
inline double pow(double x, double y) { return std::pow(x, y); }
inline float powf(float x, float y) { return std::pow(x, y); }
inline float fmax(float x, float y) { return std::fmax(x, y); }
inline double fmax(double x, double y) { return std::fmax(x, y); }
inline float fmaxf(float x, float y) { return std::fmax(x, y); }
inline float fmin(float x, float y) { return std::fmin(x, y); }
inline double fmin(double x, double y) { return std::fmin(x, y); }
inline float fminf(float x, float y) { return std::fmin(x, y); }
inline float fmod(float x, float y) { return std::fmod(x, y); }
inline double fmod(double x, double y) { return std::fmod(x, y); }
inline float atan2(float y, float x) { return std::atan2(y, x); }
inline double atan2(double y, double x) { return std::atan2(y, x); }

inline float abs(float x) { return std::fabs(x); }
inline double abs(double x) { return std::fabs(x); }
inline int abs(int x) { return x < 0 ? -x : x; }
inline long abs(long x) { return x < 0 ? -x : x; }
inline long long abs(long long x) { return x < 0 ? -x : x; }
// ap types keep their type: |min| wraps (AP_WRAP) or saturates (AP_SAT) as an assignment.
template <int W, bool S> inline ap_int_base<W, S> abs(const ap_int_base<W, S>& x) {
  return x < 0 ? ap_int_base<W, S>(-x) : x;
}
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
inline ap_fixed_base<W, I, S, Q, O, N> abs(const ap_fixed_base<W, I, S, Q, O, N>& x) {
  return x < 0 ? ap_fixed_base<W, I, S, Q, O, N>(-x) : x;
}

template <class T> inline T max(T a, T b) { return a < b ? b : a; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }

}  // namespace hls

#endif  // MAMBAFLOW_HLS_MATH_SHIM_H
