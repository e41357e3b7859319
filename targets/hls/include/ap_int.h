// ap_int.h — mambaflow C-simulation shim of the Vitis HLS arbitrary precision integer
// types (AMD UG1399, "Arbitrary Precision Data Types"). Header-only, C++17, g++.
//
// Emitted HLS C++ includes <ap_int.h> / <ap_fixed.h> exactly as it would under Vitis;
// the csim driver puts this folder on the include path when Vitis is not installed
// (with XILINX_HLS set, $XILINX_HLS/include is used instead). Compile csim with
//     g++ -std=c++17 -O2 -Wall -Wextra -Werror -Wno-unknown-pragmas -I<this folder>
// (-Wno-unknown-pragmas: g++ warns about every `#pragma HLS` under -Wall).
//
// Scope (what the emitter uses), bit-accurate to Vitis for it:
//   ap_int<W> / ap_uint<W>, 1 <= W <= 64 (Vitis allows up to 4096; static_assert here).
//   Results widen as in Vitis: a+b, a-b -> max(W1,W2)+1 (one more if signedness
//   differs), a*b -> W1+W2, a/b -> W1+S2, a%b -> min(W1, W2+...), &|^ -> max width,
//   -a -> W+1; a result wider than 64 bits is a compile error. Compound assignments
//   (+=, *=, ...) wrap into the left operand and work for any W <= 64.
//   Shifts keep the left operand's type (bits shifted out are lost, >> is arithmetic
//   for signed, a negative amount shifts the other way). C++ integers act as
//   ap_int<8*sizeof(T)> (bool as ap_uint<1>); ap_int op double gives double.
//   Mixed signedness follows Vitis csim, not plain arithmetic: <, <=, >, >= compare
//   as unsigned when a 32+ bit unsigned operand is at least as wide as the signed one
//   (C's rule: ap_uint<32>(5) < -1); / and % convert both operands to the wider
//   operand's signedness first (see ap_shim::div_rem). == and != compare values.
//   Conversions: from integers (wrap), from float/double (truncate toward zero, then
//   wrap mod 2^W; NaN/inf give 0), to_int(), to_int64(), to_double(), .range(hi,lo)
//   (read and write; hi < lo reverses), [] (read and write), implicit conversion to
//   long long / unsigned long long as Vitis.
// Known differences from the open-source Vitis headers (kept on purpose): a double in
// (-0.5, 0) converts to 0 here (they give 1); ap_uint<32>(0xffffffff) == ap_int<8>(-1)
// is false here (they give true, and false for == -1 as an int).
//   ap_uint<W> with W > 64 (the 256/512-bit m_axi beats that packed ports use, see
//   mambaflow.targets.hls.packing) is storage only: zero-initialized, copied, and read
//   or written through .range(hi, lo) of at most 64 bits (.to_uint64(), = integer).
// Not supported: arithmetic wider than 64 bits, construction from strings, to_string
// radix other than 10, concatenation (a, b).
#ifndef MAMBAFLOW_AP_INT_SHIM_H
#define MAMBAFLOW_AP_INT_SHIM_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <string>
#include <type_traits>

// Same enumerators and order as Vitis ap_decl.h.
enum ap_q_mode { AP_RND, AP_RND_ZERO, AP_RND_MIN_INF, AP_RND_INF, AP_RND_CONV, AP_TRN, AP_TRN_ZERO };
enum ap_o_mode { AP_SAT, AP_SAT_ZERO, AP_SAT_SYM, AP_WRAP, AP_WRAP_SM };

typedef long long ap_slong;
typedef unsigned long long ap_ulong;

template <int W, bool S> struct ap_int_base;
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N> struct ap_fixed_base;
template <class Owner> struct ap_range_ref;
template <class Owner> struct ap_bit_ref;

// ap_int<W> is ap_int_base<W, true>: an alias, so arithmetic results (which Vitis
// types as ap_int<Wr> / ap_uint<Wr>) are exactly these types.
template <int W> using ap_int = ap_int_base<W, true>;
// ap_uint<W> with W > 64 is ap_wide_uint<W>: storage for packed AXI beats only.
template <int W> struct ap_wide_uint;
namespace ap_shim {
template <int W, bool Wide = (W > 64)> struct uint_of { typedef ap_int_base<W, false> type; };
template <int W> struct uint_of<W, true> { typedef ap_wide_uint<W> type; };
}  // namespace ap_shim
template <int W> using ap_uint = typename ap_shim::uint_of<W>::type;

namespace ap_shim {
__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;
typedef std::uint64_t u64;
typedef std::int64_t i64;

constexpr int max_(int a, int b) { return a > b ? a : b; }
constexpr int min_(int a, int b) { return a < b ? a : b; }
constexpr u64 mask(int w) { return w >= 64 ? ~u64(0) : (u64(1) << w) - 1; }

// Low w bits of `bits` read as a w-bit two's complement (s) or unsigned value.
constexpr long long as_signed(u64 bits, int w) {
  return w >= 64 ? (long long)bits : (long long)(bits << (64 - w)) >> (64 - w);
}
template <bool S> constexpr typename std::conditional<S, long long, unsigned long long>::type
norm(u64 bits, int w) {
  return S ? (typename std::conditional<S, long long, unsigned long long>::type)as_signed(bits, w)
           : (typename std::conditional<S, long long, unsigned long long>::type)(bits & mask(w));
}

// a << n on the two's complement bit pattern (no UB for negative a).
inline i128 shl128(i128 a, int n) { return (i128)((u128)a << n); }

inline int bitlen(u128 m) {
  int n = 0;
  while (m) { ++n; m >>= 1; }
  return n;
}

[[noreturn]] inline void fatal(const std::string& msg) {
  std::fprintf(stderr, "mambaflow csim: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

// Width and signedness Vitis gives a C++ integer type in mixed expressions.
template <class T> struct c_int {
  static const int width = std::is_same<T, bool>::value ? 1 : int(8 * sizeof(T));
  static const bool sign = std::is_signed<T>::value;
  typedef ap_int_base<width, sign> type;
};
template <class T> using if_int = typename std::enable_if<std::is_integral<T>::value, int>::type;
template <class T> using if_float = typename std::enable_if<std::is_floating_point<T>::value, int>::type;

// Integer part of d (truncated toward zero) modulo 2^64; NaN and inf give 0.
// Matches Vitis, whose ap_int(double) shifts the mantissa out past the width.
inline u64 double_to_bits(double d) {
  if (!std::isfinite(d)) return 0;
  d = std::trunc(d);
  if (std::fabs(d) < 9223372036854775808.0) return (u64)(i64)d;
  int e;
  double fr = std::frexp(d, &e);              // d = fr * 2^e, 0.5 <= |fr| < 1, e >= 64
  i64 m = (i64)std::ldexp(fr, 53);            // exact 53-bit mantissa
  int k = e - 53;
  return k >= 64 ? 0 : (u64)m << k;
}

// Sign of a*2^-fa - b*2^-fb, exact for |a|, |b| < 2^64 and any fa, fb.
inline int cmp_scaled(i128 a, int fa, i128 b, int fb) {
  if ((a < 0) != (b < 0) || a == 0 || b == 0) return (a > b) - (a < b);
  bool neg = a < 0;
  u128 ma = neg ? -(u128)a : (u128)a, mb = neg ? -(u128)b : (u128)b;
  int d = fa - fb;  // align the one with fewer fraction bits; past 64 bits it dominates
  int r;
  if (d >= 0) r = d > 64 ? -1 : (ma > (mb << d)) - (ma < (mb << d));
  else r = -d > 64 ? 1 : ((ma << -d) > mb) - ((ma << -d) < mb);
  return neg ? -r : r;
}

template <int W1, bool S1, int W2, bool S2> struct int_rtype {
  // Operand widths after making both signed when either is (Vitis RType).
  static const int w1 = W1 + (S2 && !S1), w2 = W2 + (S1 && !S2);
  static const int plus_w = max_(w1, w2) + 1;
  static const bool plus_s = S1 || S2;
  static const int minus_w = plus_w;
  static const bool minus_s = true;
  static const int mult_w = W1 + W2;
  static const bool mult_s = S1 || S2;
  static const int div_w = W1 + S2;
  static const bool div_s = S1 || S2;
  static const int mod_w = min_(W1, W2 + (!S2 && S1));
  static const bool mod_s = S1;
  static const int logic_w = max_(w1, w2);
  static const bool logic_s = S1 || S2;
};
}  // namespace ap_shim

template <int W, bool S> struct ap_int_base {
  static_assert(W >= 1 && W <= 64,
                "mambaflow csim shim: ap_int/ap_uint width must be 1..64 (Vitis allows up to "
                "4096). If this is an arithmetic result (a+b widens to max(W1,W2)+1, a*b to "
                "W1+W2, -a to W+1), narrow an operand or use a compound assignment (+=, *=), "
                "which wraps into the left operand without widening.");
  typedef typename std::conditional<S, long long, unsigned long long>::type RetType;
  static const int width = W;
  static const bool sign_flag = S;  // shim-only (Vitis has no such member)

  RetType V;  // the value, kept sign/zero-extended from W bits (public as in Vitis)

  static ap_int_base from_bits(ap_shim::u64 bits) {
    ap_int_base r;
    r.V = ap_shim::norm<S>(bits, W);
    return r;
  }
  ap_shim::u64 bits() const { return (ap_shim::u64)V & ap_shim::mask(W); }
  void set_bits(ap_shim::u64 b) { V = ap_shim::norm<S>(b, W); }

  // ---- construction: every source wraps modulo 2^W --------------------------------
  constexpr ap_int_base() : V(0) {}
  template <int W2, bool S2>
  constexpr ap_int_base(const ap_int_base<W2, S2>& o) : V(ap_shim::norm<S>((ap_shim::u64)o.V, W)) {}
  template <class T, ap_shim::if_int<T> = 0>
  constexpr ap_int_base(T x) : V(ap_shim::norm<S>((ap_shim::u64)x, W)) {}
  ap_int_base(double d) : V(ap_shim::norm<S>(ap_shim::double_to_bits(d), W)) {}
  ap_int_base(float f) : ap_int_base(double(f)) {}
  // From fixed point: integer part (toward zero, as Vitis), then wrap. In ap_fixed.h.
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_int_base(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& f);

  // ---- conversion -------------------------------------------------------------------
  operator RetType() const { return V; }
  bool to_bool() const { return V != 0; }
  char to_char() const { return (char)V; }
  int to_int() const { return (int)V; }
  unsigned to_uint() const { return (unsigned)V; }
  long to_long() const { return (long)V; }
  unsigned long to_ulong() const { return (unsigned long)V; }
  long long to_int64() const { return (long long)V; }
  unsigned long long to_uint64() const { return (unsigned long long)V; }
  double to_double() const { return (double)V; }  // rounds to nearest even, as Vitis
  float to_float() const { return (float)V; }
  int length() const { return W; }
  std::string to_string() const { return std::to_string(V); }

  // ---- bits ---------------------------------------------------------------------------
  bool test(int i) const { return (bits() >> i) & 1; }
  bool get_bit(int i) const { return test(i); }
  void set_bit(int i, bool v) { set_bits(v ? bits() | (ap_shim::u64(1) << i) : bits() & ~(ap_shim::u64(1) << i)); }
  void set(int i) { set_bit(i, true); }
  void clear(int i) { set_bit(i, false); }
  void invert(int i) { set_bit(i, !test(i)); }
  bool and_reduce() const { return bits() == ap_shim::mask(W); }
  bool or_reduce() const { return bits() != 0; }
  bool xor_reduce() const { return __builtin_parityll(bits()); }
  int countLeadingZeros() const { return W - ap_shim::bitlen(bits()); }
  bool operator[](int i) const { return test(i); }
  ap_bit_ref<ap_int_base> operator[](int i) { return ap_bit_ref<ap_int_base>(this, i); }
  ap_int_base<W, false> range(int hi, int lo) const;
  ap_int_base<W, false> range() const { return range(W - 1, 0); }
  ap_range_ref<ap_int_base> range(int hi, int lo) { return ap_range_ref<ap_int_base>(this, hi, lo); }
  ap_range_ref<ap_int_base> range() { return range(W - 1, 0); }
  ap_int_base<W, false> operator()(int hi, int lo) const { return range(hi, lo); }
  ap_range_ref<ap_int_base> operator()(int hi, int lo) { return range(hi, lo); }

  // ---- shifts keep this type ----------------------------------------------------------
  ap_int_base shl(long long n) const {
    if (n < 0) return shr(-n);
    return n >= W ? ap_int_base() : from_bits((ap_shim::u64)V << n);
  }
  ap_int_base shr(long long n) const {
    if (n < 0) return shl(-n);
    if (n >= W) return from_bits(S && V < 0 ? ~ap_shim::u64(0) : 0);
    ap_int_base r;
    r.V = V >> n;  // V is extended, so >> is arithmetic for signed, logical for unsigned
    return r;
  }

  // ---- compound assignment: computed modulo 2^W (same bits as Vitis) --------------
#define AP_SHIM_INT_MODOP(OP)                                                                     \
  template <int W2, bool S2> ap_int_base& operator OP##=(const ap_int_base<W2, S2>& b) {           \
    set_bits((ap_shim::u64)V OP (ap_shim::u64)b.V);                                               \
    return *this;                                                                                 \
  }                                                                                               \
  template <class T, ap_shim::if_int<T> = 0> ap_int_base& operator OP##=(T b) {                    \
    return *this OP## = typename ap_shim::c_int<T>::type(b);                                       \
  }
  AP_SHIM_INT_MODOP(+)
  AP_SHIM_INT_MODOP(-)
  AP_SHIM_INT_MODOP(*)
  AP_SHIM_INT_MODOP(&)
  AP_SHIM_INT_MODOP(|)
  AP_SHIM_INT_MODOP(^)
#undef AP_SHIM_INT_MODOP
  template <int W2, bool S2> ap_int_base& operator/=(const ap_int_base<W2, S2>& b);
  template <int W2, bool S2> ap_int_base& operator%=(const ap_int_base<W2, S2>& b);
  template <class T, ap_shim::if_int<T> = 0> ap_int_base& operator/=(T b) {
    return *this /= typename ap_shim::c_int<T>::type(b);
  }
  template <class T, ap_shim::if_int<T> = 0> ap_int_base& operator%=(T b) {
    return *this %= typename ap_shim::c_int<T>::type(b);
  }
  template <class T, ap_shim::if_int<T> = 0> ap_int_base& operator<<=(T n) { return *this = shl((long long)n); }
  template <class T, ap_shim::if_int<T> = 0> ap_int_base& operator>>=(T n) { return *this = shr((long long)n); }
  template <int W2, bool S2> ap_int_base& operator<<=(const ap_int_base<W2, S2>& n) { return *this = shl(n.V); }
  template <int W2, bool S2> ap_int_base& operator>>=(const ap_int_base<W2, S2>& n) { return *this = shr(n.V); }

  ap_int_base& operator++() { return *this += 1; }
  ap_int_base& operator--() { return *this -= 1; }
  const ap_int_base operator++(int) { ap_int_base t = *this; ++*this; return t; }
  const ap_int_base operator--(int) { ap_int_base t = *this; --*this; return t; }

  // ---- unary --------------------------------------------------------------------------
  ap_int_base operator+() const { return *this; }
  ap_int_base operator~() const { return from_bits(~(ap_shim::u64)V); }
  bool operator!() const { return V == 0; }
};

// Unary minus is 0 - x with ap_uint<1> zero (Vitis): ap_int<W+1> for W >= 2.
template <int W, bool S>
inline ap_int_base<ap_shim::int_rtype<1, false, W, S>::minus_w, true> operator-(const ap_int_base<W, S>& a) {
  return ap_int_base<ap_shim::int_rtype<1, false, W, S>::minus_w, true>::from_bits(-(ap_shim::u64)a.V);
}

// ---- binary arithmetic: exact in 128 bits, result in the widened type ----------------
#define AP_SHIM_INT_BINOP(OP, KIND)                                                                \
  template <int W1, bool S1, int W2, bool S2>                                                      \
  inline ap_int_base<ap_shim::int_rtype<W1, S1, W2, S2>::KIND##_w, ap_shim::int_rtype<W1, S1, W2, S2>::KIND##_s> \
  operator OP(const ap_int_base<W1, S1>& a, const ap_int_base<W2, S2>& b) {                       \
    typedef ap_shim::int_rtype<W1, S1, W2, S2> R;                                                  \
    return ap_int_base<R::KIND##_w, R::KIND##_s>::from_bits(                                       \
        (ap_shim::u64)((ap_shim::i128)a.V OP (ap_shim::i128)b.V));                                 \
  }                                                                                                \
  template <int W1, bool S1, class T, ap_shim::if_int<T> = 0>                                      \
  inline auto operator OP(const ap_int_base<W1, S1>& a, T b) {                                     \
    return a OP typename ap_shim::c_int<T>::type(b);                                               \
  }                                                                                                \
  template <int W2, bool S2, class T, ap_shim::if_int<T> = 0>                                      \
  inline auto operator OP(T a, const ap_int_base<W2, S2>& b) {                                     \
    return typename ap_shim::c_int<T>::type(a) OP b;                                               \
  }
AP_SHIM_INT_BINOP(+, plus)
AP_SHIM_INT_BINOP(-, minus)
AP_SHIM_INT_BINOP(*, mult)
AP_SHIM_INT_BINOP(&, logic)
AP_SHIM_INT_BINOP(|, logic)
AP_SHIM_INT_BINOP(^, logic)
#undef AP_SHIM_INT_BINOP

// Division and remainder, as Vitis csim computes them. Same signedness: C semantics
// (toward zero; % takes the dividend's sign). Mixed signedness: both operands are first
// converted to M = max(W1, W2) + 1 bits with the signedness of the wider one (signed on
// a tie), so when the unsigned operand is wider a negative operand becomes a large
// unsigned number (e.g. ap_int<5>(-10) / ap_uint<8>(7) == 7). % is signed only if the
// dividend and that common type both are. Results then wrap to the Vitis result type.
namespace ap_shim {
inline i128 to_width(i128 v, int m, bool s) {  // v modulo 2^m, read as m-bit (un)signed
  u128 p = (u128)v & ((u128(1) << m) - 1);
  return (s && (p >> (m - 1))) ? (i128)p - (i128)(u128(1) << m) : (i128)p;
}
inline i128 div_rem(i128 a, int W1, bool S1, i128 b, int W2, bool S2, bool rem) {
  if (b == 0) fatal(rem ? "ap_int modulo by zero" : "ap_int division by zero");
  if (S1 == S2) return rem ? a % b : a / b;
  int m = max_(W1, W2) + 1;
  bool s = W1 > W2 ? S1 : W2 > W1 ? S2 : true;
  i128 x = to_width(a, m, s), y = to_width(b, m, s);
  if (!rem) return x / y;
  return (S1 && s) ? x % y : to_width(x, m, false) % to_width(y, m, false);
}
// Ordering as Vitis ("gcc rule"): with mixed signedness and a 32+ bit operand, when
// the unsigned operand is at least as wide as the signed one both are compared as
// (max(W1, W2) + 1)-bit unsigned numbers (so ap_uint<32>(5) < -1 is true, as in C).
// Otherwise, and for == and !=, the values are compared.
inline int cmp_ord(i128 a, int W1, bool S1, i128 b, int W2, bool S2) {
  if (S1 != S2 && (W1 >= 32 || W2 >= 32) && (S1 ? W2 >= W1 : W1 >= W2)) {
    int m = max_(W1, W2) + 1;
    a = to_width(a, m, false);
    b = to_width(b, m, false);
  }
  return (a > b) - (a < b);
}
}  // namespace ap_shim

template <int W1, bool S1, int W2, bool S2>
inline ap_int_base<ap_shim::int_rtype<W1, S1, W2, S2>::div_w, ap_shim::int_rtype<W1, S1, W2, S2>::div_s>
operator/(const ap_int_base<W1, S1>& a, const ap_int_base<W2, S2>& b) {
  typedef ap_shim::int_rtype<W1, S1, W2, S2> R;
  return ap_int_base<R::div_w, R::div_s>::from_bits((ap_shim::u64)ap_shim::div_rem(a.V, W1, S1, b.V, W2, S2, false));
}
template <int W1, bool S1, int W2, bool S2>
inline ap_int_base<ap_shim::int_rtype<W1, S1, W2, S2>::mod_w, ap_shim::int_rtype<W1, S1, W2, S2>::mod_s>
operator%(const ap_int_base<W1, S1>& a, const ap_int_base<W2, S2>& b) {
  typedef ap_shim::int_rtype<W1, S1, W2, S2> R;
  return ap_int_base<R::mod_w, R::mod_s>::from_bits((ap_shim::u64)ap_shim::div_rem(a.V, W1, S1, b.V, W2, S2, true));
}
#define AP_SHIM_INT_DIVOP(OP)                                                                     \
  template <int W1, bool S1, class T, ap_shim::if_int<T> = 0>                                     \
  inline auto operator OP(const ap_int_base<W1, S1>& a, T b) {                                    \
    return a OP typename ap_shim::c_int<T>::type(b);                                              \
  }                                                                                               \
  template <int W2, bool S2, class T, ap_shim::if_int<T> = 0>                                     \
  inline auto operator OP(T a, const ap_int_base<W2, S2>& b) {                                    \
    return typename ap_shim::c_int<T>::type(a) OP b;                                              \
  }
AP_SHIM_INT_DIVOP(/)
AP_SHIM_INT_DIVOP(%)
#undef AP_SHIM_INT_DIVOP

// a /= b and a %= b are a = a / b and a = a % b (no 64-bit limit on the intermediate).
template <int W, bool S> template <int W2, bool S2>
inline ap_int_base<W, S>& ap_int_base<W, S>::operator/=(const ap_int_base<W2, S2>& b) {
  set_bits((ap_shim::u64)ap_shim::div_rem(V, W, S, b.V, W2, S2, false));
  return *this;
}
template <int W, bool S> template <int W2, bool S2>
inline ap_int_base<W, S>& ap_int_base<W, S>::operator%=(const ap_int_base<W2, S2>& b) {
  set_bits((ap_shim::u64)ap_shim::div_rem(V, W, S, b.V, W2, S2, true));
  return *this;
}

// ---- shifts: the left operand's type --------------------------------------------------
template <int W, bool S, class T, ap_shim::if_int<T> = 0>
inline ap_int_base<W, S> operator<<(const ap_int_base<W, S>& a, T n) { return a.shl((long long)n); }
template <int W, bool S, class T, ap_shim::if_int<T> = 0>
inline ap_int_base<W, S> operator>>(const ap_int_base<W, S>& a, T n) { return a.shr((long long)n); }
template <int W, bool S, int W2, bool S2>
inline ap_int_base<W, S> operator<<(const ap_int_base<W, S>& a, const ap_int_base<W2, S2>& n) { return a.shl(n.V); }
template <int W, bool S, int W2, bool S2>
inline ap_int_base<W, S> operator>>(const ap_int_base<W, S>& a, const ap_int_base<W2, S2>& n) { return a.shr(n.V); }

// ---- comparison (ordering follows ap_shim::cmp_ord; == and != compare values) ----------
#define AP_SHIM_INT_RELOP(OP)                                                                     \
  template <int W1, bool S1, int W2, bool S2>                                                     \
  inline bool operator OP(const ap_int_base<W1, S1>& a, const ap_int_base<W2, S2>& b) {           \
    return ap_shim::cmp_ord(a.V, W1, S1, b.V, W2, S2) OP 0;                                        \
  }                                                                                               \
  template <int W1, bool S1, class T, ap_shim::if_int<T> = 0>                                     \
  inline bool operator OP(const ap_int_base<W1, S1>& a, T b) {                                    \
    return a OP typename ap_shim::c_int<T>::type(b);                                              \
  }                                                                                               \
  template <int W2, bool S2, class T, ap_shim::if_int<T> = 0>                                     \
  inline bool operator OP(T a, const ap_int_base<W2, S2>& b) {                                    \
    return typename ap_shim::c_int<T>::type(a) OP b;                                              \
  }                                                                                               \
  template <int W1, bool S1, class T, ap_shim::if_float<T> = 0>                                   \
  inline bool operator OP(const ap_int_base<W1, S1>& a, T b) { return a.to_double() OP b; }       \
  template <int W2, bool S2, class T, ap_shim::if_float<T> = 0>                                   \
  inline bool operator OP(T a, const ap_int_base<W2, S2>& b) { return a OP b.to_double(); }
AP_SHIM_INT_RELOP(<)
AP_SHIM_INT_RELOP(<=)
AP_SHIM_INT_RELOP(>)
AP_SHIM_INT_RELOP(>=)
#undef AP_SHIM_INT_RELOP
#define AP_SHIM_INT_RELOP(OP)                                                                     \
  template <int W1, bool S1, int W2, bool S2>                                                     \
  inline bool operator OP(const ap_int_base<W1, S1>& a, const ap_int_base<W2, S2>& b) {           \
    return (ap_shim::i128)a.V OP (ap_shim::i128)b.V;                                              \
  }                                                                                               \
  template <int W1, bool S1, class T, ap_shim::if_int<T> = 0>                                     \
  inline bool operator OP(const ap_int_base<W1, S1>& a, T b) {                                    \
    return (ap_shim::i128)a.V OP (ap_shim::i128)b;                                                \
  }                                                                                               \
  template <int W2, bool S2, class T, ap_shim::if_int<T> = 0>                                     \
  inline bool operator OP(T a, const ap_int_base<W2, S2>& b) {                                    \
    return (ap_shim::i128)a OP (ap_shim::i128)b.V;                                                \
  }                                                                                               \
  template <int W1, bool S1, class T, ap_shim::if_float<T> = 0>                                   \
  inline bool operator OP(const ap_int_base<W1, S1>& a, T b) { return a.to_double() OP b; }       \
  template <int W2, bool S2, class T, ap_shim::if_float<T> = 0>                                   \
  inline bool operator OP(T a, const ap_int_base<W2, S2>& b) { return a OP b.to_double(); }
AP_SHIM_INT_RELOP(==)
AP_SHIM_INT_RELOP(!=)
#undef AP_SHIM_INT_RELOP

template <int W, bool S>
inline std::ostream& operator<<(std::ostream& os, const ap_int_base<W, S>& x) { return os << x.V; }

// ---- bit and range references (read through the ap_uint base, write back) -----------
// Owner is any type with width, bits() and set_bits() (ap_int_base, ap_fixed_base).
template <class Owner> struct ap_bit_ref {
  Owner* o;
  int i;
  ap_bit_ref(Owner* owner, int bit) : o(owner), i(bit) {}
  operator bool() const { return (o->bits() >> i) & 1; }
  ap_bit_ref& operator=(bool v) {
    ap_shim::u64 b = o->bits(), m = ap_shim::u64(1) << i;
    o->set_bits(v ? b | m : b & ~m);
    return *this;
  }
  ap_bit_ref& operator=(const ap_bit_ref& r) { return *this = bool(r); }
  template <class T, ap_shim::if_int<T> = 0> ap_bit_ref& operator=(T v) { return *this = (v != 0); }
  bool operator~() const { return !bool(*this); }
};

namespace ap_shim {
// Bits hi..lo of `b` (lo > hi reads them reversed, as Vitis).
inline u64 get_range(u64 b, int hi, int lo) {
  if (hi >= lo) return (b >> lo) & mask(hi - lo + 1);
  u64 r = 0;
  for (int k = 0; k <= lo - hi; ++k) r |= ((b >> (hi + k)) & 1) << (lo - hi - k);
  return r;
}
inline u64 set_range(u64 b, int hi, int lo, u64 v) {
  if (hi >= lo) {
    u64 m = mask(hi - lo + 1) << lo;
    return (b & ~m) | ((v << lo) & m);
  }
  for (int k = 0; k <= lo - hi; ++k) {
    u64 bit = (v >> (lo - hi - k)) & 1;
    b = (b & ~(u64(1) << (hi + k))) | (bit << (hi + k));
  }
  return b;
}
inline void check_range(int hi, int lo, int w) {
  if (hi < 0 || lo < 0 || hi >= w || lo >= w)
    fatal("range(" + std::to_string(hi) + ", " + std::to_string(lo) + ") out of bounds for width " +
          std::to_string(w));
}
}  // namespace ap_shim

template <int W, bool S>
inline ap_int_base<W, false> ap_int_base<W, S>::range(int hi, int lo) const {
  ap_shim::check_range(hi, lo, W);
  return ap_int_base<W, false>::from_bits(ap_shim::get_range(bits(), hi, lo));
}

template <class Owner> struct ap_range_ref : ap_int_base<Owner::width, false> {
  typedef ap_int_base<Owner::width, false> Base;
  Owner* o;
  int hi, lo;
  ap_range_ref(Owner* owner, int h, int l) : o(owner), hi(h), lo(l) {
    ap_shim::check_range(h, l, Owner::width);
    this->set_bits(ap_shim::get_range(owner->bits(), h, l));
  }
  ap_range_ref(const ap_range_ref&) = default;
  ap_range_ref& assign_bits(ap_shim::u64 v) {
    o->set_bits(ap_shim::set_range(o->bits(), hi, lo, v));
    this->set_bits(ap_shim::get_range(o->bits(), hi, lo));
    return *this;
  }
  ap_range_ref& operator=(const ap_range_ref& r) { return assign_bits(r.bits()); }
  template <int W2, bool S2> ap_range_ref& operator=(const ap_int_base<W2, S2>& v) {
    return assign_bits((ap_shim::u64)v.V);
  }
  template <class T, ap_shim::if_int<T> = 0> ap_range_ref& operator=(T v) { return assign_bits((ap_shim::u64)v); }
};

// ---- ap_uint<W>, W > 64: packed AXI beats -----------------------------------------
// Only what the emitter's mf_unpack / mf_pack and a testbench filling beats need:
// bits hi..lo (hi >= lo, at most 64 of them, possibly straddling two 64-bit words).
template <int W> struct ap_wide_uint {
  static const int width = W;
  static const int words = (W + 63) / 64;
  ap_shim::u64 w[words];  // bit b is bit b % 64 of w[b / 64]

  ap_wide_uint() : w() {}
  static void check(int hi, int lo) {
    if (lo < 0 || hi < lo || hi >= W || hi - lo >= 64)
      ap_shim::fatal("ap_uint<" + std::to_string(W) + ">.range(" + std::to_string(hi) + ", " +
                     std::to_string(lo) + "): the shim reads or writes 1..64 bits of a wide word, hi >= lo");
  }
  ap_shim::u64 get(int hi, int lo) const {
    check(hi, lo);
    int q = lo / 64, s = lo % 64, n = hi - lo + 1;
    ap_shim::u64 r = w[q] >> s;
    if (s + n > 64) r |= w[q + 1] << (64 - s);
    return r & ap_shim::mask(n);
  }
  void put(int hi, int lo, ap_shim::u64 v) {
    check(hi, lo);
    int q = lo / 64, s = lo % 64, n = hi - lo + 1;
    ap_shim::u64 m = ap_shim::mask(n);
    v &= m;
    w[q] = (w[q] & ~(m << s)) | (v << s);
    if (s + n > 64) w[q + 1] = (w[q + 1] & ~(m >> (64 - s))) | (v >> (64 - s));
  }
  struct ref {
    ap_wide_uint* o;
    int hi, lo;
    unsigned long long to_uint64() const { return o->get(hi, lo); }
    template <class T, ap_shim::if_int<T> = 0> ref& operator=(T v) { o->put(hi, lo, (ap_shim::u64)v); return *this; }
    template <int W2, bool S2> ref& operator=(const ap_int_base<W2, S2>& v) { return *this = v.V; }
  };
  ap_int_base<64, false> range(int hi, int lo) const { return ap_int_base<64, false>(get(hi, lo)); }
  ref range(int hi, int lo) { check(hi, lo); return ref{this, hi, lo}; }
};

#endif  // MAMBAFLOW_AP_INT_SHIM_H

// Vitis' <ap_int.h> also provides ap_fixed; so does this one.
#include "ap_fixed.h"
