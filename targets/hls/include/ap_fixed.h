// ap_fixed.h — mambaflow C-simulation shim of the Vitis HLS fixed point types
// ap_fixed<W, I, Q, O, N> and ap_ufixed<W, I, Q, O, N> (AMD UG1399). Header-only, C++17.
// See ap_int.h for how csim compiles (-Wno-unknown-pragmas, this folder on -I).
//
// value = raw * 2^-(W-I), raw a W-bit two's complement (ap_fixed) or unsigned
// (ap_ufixed) integer held in 64 bits. 1 <= W <= 64; I may be < 0 or > W.
// Every conversion INTO a fixed type (from double, float, C integers, ap_int, another
// ap_fixed; also compound assignment and ++/--) takes the exact source value, applies
// the destination's quantization Q (AP_TRN floor, AP_TRN_ZERO toward 0, AP_RND ties up,
// AP_RND_ZERO ties toward 0, AP_RND_MIN_INF ties down, AP_RND_INF ties away from 0,
// AP_RND_CONV ties to even), then its overflow mode O (AP_WRAP modulo 2^W, with N > 0
// the N MSBs saturate; AP_SAT; AP_SAT_ZERO to 0; AP_SAT_SYM to +-max). NaN and inf
// convert as an infinite value of their sign bit (overflow), as Vitis does.
// AP_WRAP_SM is not supported (static_assert).
//
// Arithmetic is full precision as Vitis: a+b, a-b -> integer bits max(I1,I2)+1 (+1 for
// mixed signedness), fraction bits max(F1,F2); a*b -> <W1+W2, I1+I2>; a/b -> Vitis'
// <W1+S2+max(F2,0), I1+S2+F2> quotient truncated toward zero; &|^ aligned. A result
// wider than 64 bits is a compile error (compound assignments allow 126 bits inside).
// C integers act as ap_fixed<8*sizeof(T), 8*sizeof(T)>, ap_int<W> as ap_fixed<W, W>.
// As in Vitis, fixed op double does not compile (ambiguous): convert explicitly.
// Shifts move the raw bits within the same type, no quantization or overflow.
// to_double()/to_float() round to nearest even; to_int() truncates toward zero (for a
// negative value of a signed type with I = 0 Vitis returns -1, mirrored here and
// extended to I < 0, where Vitis reads uninitialized bits). ++/-- need I <= W, as Vitis.
// .range(hi, lo) / .range() give the raw bits as ap_uint<W> (also writable); raw() is
// a shim-only accessor to the sign-extended raw integer (use .range() in emitted code).
#ifndef MAMBAFLOW_AP_FIXED_SHIM_H
#define MAMBAFLOW_AP_FIXED_SHIM_H

#include "ap_int.h"

#include <iomanip>
#include <sstream>

namespace ap_shim {

// Raw W-bit pattern of the fixed type <W, F = fraction bits, S, Q, O, N> nearest (per Q,
// then O) to the exact value num * 2^-frac. Requires |num| < 2^126.
inline u64 quantize(i128 num, int frac, int W, int F, bool S, ap_q_mode Q, ap_o_mode O, int N) {
  int sh = frac - F;  // > 0: drop sh fraction bits; < 0: append -sh zero bits
  i128 q = 0;
  bool huge = false;  // |q| >= 2^64: out of range of every W <= 64
  u64 huge_bits = 0;
  if (sh > 0) {
    // |value| < 2^-2 in destination lsbs: only its sign and non-zeroness matter.
    if (sh >= 128) { num = (num > 0) - (num < 0); sh = 2; }
    i128 fl = num >> sh;  // floor
    u128 rem = (u128)num & ((u128(1) << sh) - 1), half = u128(1) << (sh - 1);
    bool up = false;
    switch (Q) {
      case AP_TRN: break;
      case AP_TRN_ZERO: up = num < 0 && rem != 0; break;
      case AP_RND: up = rem >= half; break;
      case AP_RND_ZERO: up = rem > half || (rem == half && num < 0); break;
      case AP_RND_MIN_INF: up = rem > half; break;
      case AP_RND_INF: up = rem > half || (rem == half && num > 0); break;
      case AP_RND_CONV: up = rem > half || (rem == half && (fl & 1)); break;
    }
    q = fl + up;
  } else if (num != 0) {
    int ls = -sh;
    u128 mag = num < 0 ? -(u128)num : (u128)num;
    if (ls >= 64 || bitlen(mag) + ls > 66) {
      huge = true;
      huge_bits = ls >= 64 ? 0 : (u64)num << ls;
    } else {
      q = shl128(num, ls);
    }
  }
  const i128 mx = S ? (i128(1) << (W - 1)) - 1 : (i128(1) << W) - 1;
  const i128 mn = S ? -(i128(1) << (W - 1)) : 0;
  bool over = huge ? num > 0 : q > mx;
  bool under = huge ? num < 0 : q < mn;
  u64 bits = (huge ? huge_bits : (u64)q) & mask(W);
  // Vitis AP_SAT_SYM also treats the most negative code as underflow.
  if (O == AP_SAT_SYM && S && W > 1 && !huge && q == mn) under = true;
  if (!over && !under) return bits;
  switch (O) {
    case AP_WRAP:
      if (N > 0) {
        if (S) {  // MSB takes the sign of the true value, the next N-1 bits its inverse
          u64 msb = u64(1) << (W - 1), next = mask(N - 1) << (W - N);
          bits = under ? (bits | msb) & ~next : (bits & ~msb) | next;
        } else {  // unsigned: the N MSBs are set (Vitis does so on both sides)
          bits |= mask(N) << (W - N);
        }
      }
      return bits;
    case AP_SAT_ZERO: return 0;
    default:  // AP_SAT, AP_SAT_SYM
      if (over) return (u64)mx;
      if (!S) return 0;
      return (u64(1) << (W - 1)) | (O == AP_SAT_SYM ? 1 : 0);
  }
}

// Exact (num, frac) with value = num * 2^-frac for a double; NaN/inf as +-2^2000.
inline void split_double(double d, i128& num, int& frac) {
  if (!std::isfinite(d)) { num = std::signbit(d) ? -1 : 1; frac = -2000; return; }
  if (d == 0) { num = 0; frac = 0; return; }
  int e;
  double fr = std::frexp(d, &e);
  num = (i64)std::ldexp(fr, 53);
  frac = 53 - e;
}

template <int W1, int I1, bool S1, int W2, int I2, bool S2> struct fixed_rtype {
  static const int F1 = W1 - I1, F2 = W2 - I2, F = max_(F1, F2);
  static const int i1 = I1 + (S2 && !S1), i2 = I2 + (S1 && !S2);
  static const int plus_i = max_(i1, i2) + 1, plus_w = plus_i + F;
  static const bool plus_s = S1 || S2;
  static const int minus_i = plus_i, minus_w = plus_w;
  static const bool minus_s = true;
  static const int mult_w = W1 + W2, mult_i = I1 + I2;
  static const bool mult_s = S1 || S2;
  static const int div_w = S2 + W1 + max_(F2, 0), div_i = S2 + I1 + F2;
  static const bool div_s = S1 || S2;
  static const int logic_i = max_(i1, i2), logic_w = logic_i + F;
  static const bool logic_s = S1 || S2;
};

// The fixed type Vitis gives a C integer / an ap_int in mixed expressions.
template <class T> struct c_fixed {
  typedef ap_fixed_base<c_int<T>::width, c_int<T>::width, c_int<T>::sign, AP_TRN, AP_WRAP, 0> type;
};
}  // namespace ap_shim

template <int W, int I, bool S, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
struct ap_fixed_base;
template <int W, int I, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
using ap_fixed = ap_fixed_base<W, I, true, Q, O, N>;
template <int W, int I, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
using ap_ufixed = ap_fixed_base<W, I, false, Q, O, N>;

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N> struct ap_fixed_base {
  static_assert(W >= 1 && W <= 64,
                "mambaflow csim shim: ap_fixed/ap_ufixed width must be 1..64 (Vitis allows more). "
                "If this is an arithmetic result (a+b, a*b widen to full precision), narrow an "
                "operand or use a compound assignment (+=, *=), which quantizes into the left "
                "operand.");
  static_assert(O != AP_WRAP_SM, "mambaflow csim shim: AP_WRAP_SM is not supported");
  static_assert(N >= 0 && N <= W, "ap_fixed: saturation bits N must be in 0..W");
  typedef typename std::conditional<S, long long, unsigned long long>::type RawType;
  static const int width = W;
  static const int iwidth = I;
  static const ap_q_mode qmode = Q;
  static const ap_o_mode omode = O;
  static const bool sign_flag = S;  // shim-only
  static const int fwidth = W - I;  // shim-only: fraction bits (may be < 0 or > W)

  RawType V;  // raw integer, kept sign/zero-extended from W bits

  static ap_fixed_base from_bits(ap_shim::u64 b) {
    ap_fixed_base r;
    r.V = ap_shim::norm<S>(b, W);
    return r;
  }
  ap_shim::u64 bits() const { return (ap_shim::u64)V & ap_shim::mask(W); }
  void set_bits(ap_shim::u64 b) { V = ap_shim::norm<S>(b, W); }
  RawType raw() const { return V; }  // shim-only; emitted code uses .range()
  // Assign the exact value num * 2^-frac with this type's Q and O.
  ap_fixed_base& assign_exact(ap_shim::i128 num, int frac) {
    set_bits(ap_shim::quantize(num, frac, W, W - I, S, Q, O, N));
    return *this;
  }

  // ---- construction (quantize, then overflow) ---------------------------------------
  constexpr ap_fixed_base() : V(0) {}
  ap_fixed_base(const ap_fixed_base&) = default;
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& o) : V(0) { assign_exact(o.V, W2 - I2); }
  template <int W2, bool S2>
  ap_fixed_base(const ap_int_base<W2, S2>& o) : V(0) { assign_exact(o.V, 0); }
  template <class T, ap_shim::if_int<T> = 0>
  ap_fixed_base(T x) : V(0) { assign_exact((ap_shim::i128)x, 0); }
  ap_fixed_base(double d) : V(0) {
    ap_shim::i128 num;
    int frac;
    ap_shim::split_double(d, num, frac);
    assign_exact(num, frac);
  }
  ap_fixed_base(float f) : ap_fixed_base(double(f)) {}
  ap_fixed_base& operator=(const ap_fixed_base&) = default;

  // ---- conversion -------------------------------------------------------------------
  double to_double() const { return std::ldexp((double)V, I - W); }
  float to_float() const { return std::ldexp((float)V, I - W); }
  long double to_ldouble() const { return std::ldexp((long double)V, I - W); }
  // Integer part toward zero, modulo 2^64 (then each to_* narrows like a C cast).
  ap_shim::u64 trunc_bits() const {
    if constexpr (I <= 0) {
      return S && V < 0 ? ~ap_shim::u64(0) : 0;  // Vitis quirk (see top)
    } else if constexpr (I >= W) {
      return I - W >= 64 ? 0 : (ap_shim::u64)V << ((I - W) & 63);
    } else {
      ap_shim::i128 v = V, d = ap_shim::i128(1) << (W - I);
      return (ap_shim::u64)(v / d);  // i128 division truncates toward zero
    }
  }
  int to_int() const { return (int)trunc_bits(); }
  unsigned to_uint() const { return (unsigned)trunc_bits(); }
  long long to_int64() const { return (long long)trunc_bits(); }
  unsigned long long to_uint64() const { return trunc_bits(); }
  char to_char() const { return (char)trunc_bits(); }
  long to_long() const { return (long)trunc_bits(); }
  unsigned long to_ulong() const { return (unsigned long)trunc_bits(); }
  // Vitis converts implicitly to every C arithmetic type, so do we (an expression that
  // needs a choice between them, like fixed * 0.5, is ambiguous in both).
  operator long double() const { return to_ldouble(); }
  operator double() const { return to_double(); }
  operator float() const { return to_float(); }
  operator bool() const { return V != 0; }
  operator char() const { return (char)trunc_bits(); }
  operator signed char() const { return (signed char)trunc_bits(); }
  operator unsigned char() const { return (unsigned char)trunc_bits(); }
  operator short() const { return (short)trunc_bits(); }
  operator unsigned short() const { return (unsigned short)trunc_bits(); }
  operator int() const { return to_int(); }
  operator unsigned() const { return to_uint(); }
  operator long() const { return to_long(); }
  operator unsigned long() const { return to_ulong(); }
  operator long long() const { return to_int64(); }
  operator unsigned long long() const { return to_uint64(); }
  int length() const { return W; }
  std::string to_string() const {  // decimal, through long double (64-bit mantissa)
    std::ostringstream os;
    os << std::setprecision(40) << to_ldouble();
    return os.str();
  }

  // ---- bits ---------------------------------------------------------------------------
  bool operator[](int i) const { return (bits() >> i) & 1; }
  ap_bit_ref<ap_fixed_base> operator[](int i) { return ap_bit_ref<ap_fixed_base>(this, i); }
  bool get_bit(int i) const { return (bits() >> i) & 1; }
  ap_int_base<W, false> range(int hi, int lo) const {
    ap_shim::check_range(hi, lo, W);
    return ap_int_base<W, false>::from_bits(ap_shim::get_range(bits(), hi, lo));
  }
  ap_int_base<W, false> range() const { return range(W - 1, 0); }
  ap_range_ref<ap_fixed_base> range(int hi, int lo) { return ap_range_ref<ap_fixed_base>(this, hi, lo); }
  ap_range_ref<ap_fixed_base> range() { return range(W - 1, 0); }
  ap_int_base<W, false> operator()(int hi, int lo) const { return range(hi, lo); }
  ap_range_ref<ap_fixed_base> operator()(int hi, int lo) { return range(hi, lo); }
  int countLeadingZeros() const { return W - ap_shim::bitlen(bits()); }

  // ---- shifts move raw bits within this type (Vitis: no quantization or overflow) ----
  ap_fixed_base shl(long long n) const {
    if (n < 0) return shr(-n);
    return n >= W ? ap_fixed_base() : from_bits((ap_shim::u64)V << n);
  }
  ap_fixed_base shr(long long n) const {
    if (n < 0) return shl(-n);
    if (n >= W) return from_bits(S && V < 0 ? ~ap_shim::u64(0) : 0);
    ap_fixed_base r;
    r.V = V >> n;
    return r;
  }
  template <class T, ap_shim::if_int<T> = 0> ap_fixed_base& operator<<=(T n) { return *this = shl((long long)n); }
  template <class T, ap_shim::if_int<T> = 0> ap_fixed_base& operator>>=(T n) { return *this = shr((long long)n); }
  template <int W2, bool S2> ap_fixed_base& operator<<=(const ap_int_base<W2, S2>& n) { return *this = shl(n.V); }
  template <int W2, bool S2> ap_fixed_base& operator>>=(const ap_int_base<W2, S2>& n) { return *this = shr(n.V); }

  // ---- compound assignment: exact result, then this type's Q and O -------------------
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator+=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b) { return add_sub(b, false); }
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator-=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b) { return add_sub(b, true); }
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator*=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b) {
    static_assert(W + W2 <= 126, "mambaflow csim shim: *= needs more than 126 bits");
    return assign_exact((ap_shim::i128)V * (ap_shim::i128)b.V, (W - I) + (W2 - I2));
  }
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator/=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b) {
    const int F2 = W2 - I2, sh = F2 > 0 ? F2 : 0;
    static_assert(W + (F2 > 0 ? F2 : 0) <= 120, "mambaflow csim shim: /= needs more than 120 bits");
    if (b.V == 0) ap_shim::fatal("ap_fixed division by zero");
    // Vitis: quotient of the raw values with max(F2,0) extra fraction bits, toward zero.
    ap_shim::i128 q = ap_shim::shl128(V, sh) / (ap_shim::i128)b.V;
    return assign_exact(q, (W - I) + sh - F2);
  }
#define AP_SHIM_FX_LOGIC_ASSIGN(OP)                                                                \
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>                           \
  ap_fixed_base& operator OP##=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b) {                  \
    return *this = *this OP b;                                                                     \
  }
  AP_SHIM_FX_LOGIC_ASSIGN(&)
  AP_SHIM_FX_LOGIC_ASSIGN(|)
  AP_SHIM_FX_LOGIC_ASSIGN(^)
#undef AP_SHIM_FX_LOGIC_ASSIGN
#define AP_SHIM_FX_ASSIGN_OTHER(OP)                                                                \
  template <int W2, bool S2> ap_fixed_base& operator OP##=(const ap_int_base<W2, S2>& b) {         \
    return *this OP## = ap_fixed_base<W2, W2, S2>(b);                                              \
  }                                                                                                \
  template <class T, ap_shim::if_int<T> = 0> ap_fixed_base& operator OP##=(T b) {                  \
    return *this OP## = typename ap_shim::c_fixed<T>::type(b);                                     \
  }
  AP_SHIM_FX_ASSIGN_OTHER(+)
  AP_SHIM_FX_ASSIGN_OTHER(-)
  AP_SHIM_FX_ASSIGN_OTHER(*)
  AP_SHIM_FX_ASSIGN_OTHER(/)
  AP_SHIM_FX_ASSIGN_OTHER(&)
  AP_SHIM_FX_ASSIGN_OTHER(|)
  AP_SHIM_FX_ASSIGN_OTHER(^)
#undef AP_SHIM_FX_ASSIGN_OTHER

  // Vitis adds ap_ufixed<W-I+1, 1>(1), a type that does not exist when I > W.
  ap_fixed_base& operator++() {
    static_assert(I <= W, "ap_fixed ++/-- does not compile in Vitis when I > W; add 1 explicitly");
    return *this += ap_fixed_base<2, 2, true>(1);
  }
  ap_fixed_base& operator--() {
    static_assert(I <= W, "ap_fixed ++/-- does not compile in Vitis when I > W; add 1 explicitly");
    return *this -= ap_fixed_base<2, 2, true>(1);
  }
  const ap_fixed_base operator++(int) { ap_fixed_base t = *this; ++*this; return t; }
  const ap_fixed_base operator--(int) { ap_fixed_base t = *this; --*this; return t; }

  // ---- unary (Vitis types: -x is <W+1, I+1, signed>, ~x keeps W, I, S) ---------------
  ap_fixed_base operator+() const { return *this; }
  ap_fixed_base<W + 1, I + 1, true> operator-() const {
    return ap_fixed_base<W + 1, I + 1, true>::from_bits(-(ap_shim::u64)V);
  }
  ap_fixed_base<W, I, S> operator~() const { return ap_fixed_base<W, I, S>::from_bits(~(ap_shim::u64)V); }
  bool operator!() const { return V == 0; }

 private:
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& add_sub(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b, bool sub) {
    typedef ap_shim::fixed_rtype<W, I, S, W2, I2, S2> R;
    static_assert(R::plus_w <= 126, "mambaflow csim shim: += / -= needs more than 126 bits");
    ap_shim::i128 x = ap_shim::shl128(V, R::F - R::F1), y = ap_shim::shl128(b.V, R::F - R::F2);
    return assign_exact(sub ? x - y : x + y, R::F);
  }
};

// ap_int from fixed: integer part toward zero (Vitis to_ap_int_base), then wrap.
template <int W, bool S>
template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
inline ap_int_base<W, S>::ap_int_base(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& f)
    : V(ap_shim::norm<S>(f.trunc_bits(), W)) {}

// ---- binary arithmetic: full precision, computed exactly ---------------------------------
#define AP_SHIM_FX_TYPE(KIND)                                                               \
  ap_fixed_base<ap_shim::fixed_rtype<W1, I1, S1, W2, I2, S2>::KIND##_w,                     \
                ap_shim::fixed_rtype<W1, I1, S1, W2, I2, S2>::KIND##_i,                     \
                ap_shim::fixed_rtype<W1, I1, S1, W2, I2, S2>::KIND##_s>
#define AP_SHIM_FX_ARGS                                                                      \
  int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, int W2, int I2, bool S2,      \
      ap_q_mode Q2, ap_o_mode O2, int N2
#define AP_SHIM_FX_A const ap_fixed_base<W1, I1, S1, Q1, O1, N1>& a
#define AP_SHIM_FX_B const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b

// Aligned (same fraction bits) operands for + - & | ^; they fit the result's <= 64 bits.
#define AP_SHIM_FX_ALIGNED_OP(OP, KIND)                                                      \
  template <AP_SHIM_FX_ARGS> inline AP_SHIM_FX_TYPE(KIND) operator OP(AP_SHIM_FX_A, AP_SHIM_FX_B) { \
    typedef ap_shim::fixed_rtype<W1, I1, S1, W2, I2, S2> R;                                  \
    ap_shim::i128 x = ap_shim::shl128(a.V, R::F - R::F1), y = ap_shim::shl128(b.V, R::F - R::F2); \
    return AP_SHIM_FX_TYPE(KIND)::from_bits((ap_shim::u64)(x OP y));                         \
  }
AP_SHIM_FX_ALIGNED_OP(+, plus)
AP_SHIM_FX_ALIGNED_OP(-, minus)
AP_SHIM_FX_ALIGNED_OP(&, logic)
AP_SHIM_FX_ALIGNED_OP(|, logic)
AP_SHIM_FX_ALIGNED_OP(^, logic)
#undef AP_SHIM_FX_ALIGNED_OP

template <AP_SHIM_FX_ARGS> inline AP_SHIM_FX_TYPE(mult) operator*(AP_SHIM_FX_A, AP_SHIM_FX_B) {
  return AP_SHIM_FX_TYPE(mult)::from_bits((ap_shim::u64)((ap_shim::i128)a.V * (ap_shim::i128)b.V));
}
// Vitis csim: (a.raw << max(F2,0)) / b.raw, truncated toward zero.
template <AP_SHIM_FX_ARGS> inline AP_SHIM_FX_TYPE(div) operator/(AP_SHIM_FX_A, AP_SHIM_FX_B) {
  const int F2 = W2 - I2;
  if (b.V == 0) ap_shim::fatal("ap_fixed division by zero");
  ap_shim::i128 x = ap_shim::shl128(a.V, F2 > 0 ? F2 : 0);
  return AP_SHIM_FX_TYPE(div)::from_bits((ap_shim::u64)(x / (ap_shim::i128)b.V));
}

// Mixed with ap_int (as ap_fixed<W, W>) and C integers (as ap_fixed<bits, bits>).
#define AP_SHIM_FX_MIXED_OP(OP)                                                                 \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, int W2, bool S2>       \
  inline auto operator OP(AP_SHIM_FX_A, const ap_int_base<W2, S2>& b) {                         \
    return a OP ap_fixed_base<W2, W2, S2>(b);                                                   \
  }                                                                                             \
  template <int W1, bool S1, int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>       \
  inline auto operator OP(const ap_int_base<W1, S1>& a, AP_SHIM_FX_B) {                         \
    return ap_fixed_base<W1, W1, S1>(a) OP b;                                                   \
  }                                                                                             \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, class T, ap_shim::if_int<T> = 0> \
  inline auto operator OP(AP_SHIM_FX_A, T b) {                                                  \
    return a OP typename ap_shim::c_fixed<T>::type(b);                                          \
  }                                                                                             \
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2, class T, ap_shim::if_int<T> = 0> \
  inline auto operator OP(T a, AP_SHIM_FX_B) {                                                  \
    return typename ap_shim::c_fixed<T>::type(a) OP b;                                          \
  }
AP_SHIM_FX_MIXED_OP(+)
AP_SHIM_FX_MIXED_OP(-)
AP_SHIM_FX_MIXED_OP(*)
AP_SHIM_FX_MIXED_OP(/)
AP_SHIM_FX_MIXED_OP(&)
AP_SHIM_FX_MIXED_OP(|)
AP_SHIM_FX_MIXED_OP(^)
#undef AP_SHIM_FX_MIXED_OP

// ---- comparison by exact value; with float/double through to_double() as Vitis ---------
#define AP_SHIM_FX_RELOP(OP)                                                                    \
  template <AP_SHIM_FX_ARGS> inline bool operator OP(AP_SHIM_FX_A, AP_SHIM_FX_B) {              \
    return ap_shim::cmp_scaled(a.V, W1 - I1, b.V, W2 - I2) OP 0;                                \
  }                                                                                             \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, int W2, bool S2>       \
  inline bool operator OP(AP_SHIM_FX_A, const ap_int_base<W2, S2>& b) {                         \
    return ap_shim::cmp_scaled(a.V, W1 - I1, b.V, 0) OP 0;                                      \
  }                                                                                             \
  template <int W1, bool S1, int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>       \
  inline bool operator OP(const ap_int_base<W1, S1>& a, AP_SHIM_FX_B) {                         \
    return ap_shim::cmp_scaled(a.V, 0, b.V, W2 - I2) OP 0;                                      \
  }                                                                                             \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, class T, ap_shim::if_int<T> = 0> \
  inline bool operator OP(AP_SHIM_FX_A, T b) {                                                  \
    return ap_shim::cmp_scaled(a.V, W1 - I1, (ap_shim::i128)b, 0) OP 0;                         \
  }                                                                                             \
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2, class T, ap_shim::if_int<T> = 0> \
  inline bool operator OP(T a, AP_SHIM_FX_B) {                                                  \
    return ap_shim::cmp_scaled((ap_shim::i128)a, 0, b.V, W2 - I2) OP 0;                         \
  }                                                                                             \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, class T, ap_shim::if_float<T> = 0> \
  inline bool operator OP(AP_SHIM_FX_A, T b) { return a.to_double() OP b; }                    \
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2, class T, ap_shim::if_float<T> = 0> \
  inline bool operator OP(T a, AP_SHIM_FX_B) { return a OP b.to_double(); }
AP_SHIM_FX_RELOP(==)
AP_SHIM_FX_RELOP(!=)
AP_SHIM_FX_RELOP(<)
AP_SHIM_FX_RELOP(<=)
AP_SHIM_FX_RELOP(>)
AP_SHIM_FX_RELOP(>=)
#undef AP_SHIM_FX_RELOP

// ---- shifts of the value, same type -----------------------------------------------------
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N, class T, ap_shim::if_int<T> = 0>
inline ap_fixed_base<W, I, S, Q, O, N> operator<<(const ap_fixed_base<W, I, S, Q, O, N>& a, T n) {
  return a.shl((long long)n);
}
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N, class T, ap_shim::if_int<T> = 0>
inline ap_fixed_base<W, I, S, Q, O, N> operator>>(const ap_fixed_base<W, I, S, Q, O, N>& a, T n) {
  return a.shr((long long)n);
}
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N, int W2, bool S2>
inline ap_fixed_base<W, I, S, Q, O, N> operator<<(const ap_fixed_base<W, I, S, Q, O, N>& a,
                                                  const ap_int_base<W2, S2>& n) {
  return a.shl(n.V);
}
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N, int W2, bool S2>
inline ap_fixed_base<W, I, S, Q, O, N> operator>>(const ap_fixed_base<W, I, S, Q, O, N>& a,
                                                  const ap_int_base<W2, S2>& n) {
  return a.shr(n.V);
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
inline std::ostream& operator<<(std::ostream& os, const ap_fixed_base<W, I, S, Q, O, N>& x) {
  return os << x.to_double();
}

#undef AP_SHIM_FX_TYPE
#undef AP_SHIM_FX_ARGS
#undef AP_SHIM_FX_A
#undef AP_SHIM_FX_B

#endif  // MAMBAFLOW_AP_FIXED_SHIM_H
