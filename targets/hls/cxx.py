"""C++ spelling for the HLS emitter: types, literals, identifiers, affine expressions.

Everything here is a pure function of MLIR types/attributes/affine expressions, so the
emitter's output is deterministic by construction (no ids, no addresses, no time).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
from torch_mlir import ir

from ...errors import MambaflowError


class HlsEmitError(MambaflowError):
    """The HLS emitter met IR it cannot express as Vitis HLS C++ (an unsupported op,
    type or directive). The message names the function, the loop and the op."""


# C and C++ keywords and names the emitted code itself uses: never usable as names.
RESERVED = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t
    char16_t char32_t class compl concept const consteval constexpr constinit const_cast
    continue co_await co_return co_yield decltype default delete do double dynamic_cast
    else enum explicit export extern false float for friend goto if inline int long mutable
    namespace new noexcept not not_eq nullptr operator or or_eq private protected public
    register reinterpret_cast requires return short signed sizeof static static_assert
    static_cast struct switch template this thread_local throw true try typedef typeid
    typename union unsigned using virtual void volatile wchar_t while xor xor_eq
    main hls std ap_int ap_uint ap_fixed ap_ufixed int8_t int16_t int32_t int64_t uint8_t
    uint16_t uint32_t uint64_t size_t NULL INFINITY NAN""".split()
)

_IDENT_BAD = re.compile(r"[^A-Za-z0-9_]")


def c_ident(name: str) -> str:
    """A readable C identifier for a name from the IR or the model (dots become '_')."""
    s = _IDENT_BAD.sub("_", name)
    s = re.sub(r"__+", "_", s).strip("_") or "v"
    if s[0].isdigit():
        s = "n" + s
    if s in RESERVED:
        s = s + "_"
    return s


# --------------------------------------------------------------------- headers


class CsimError(MambaflowError):
    """The C simulation could not be built or run (compiler error, crash, missing g++,
    AMD's ap_types headers not installed)."""


# The project's own csim headers: only what no package ships (hls_stream.h with depth
# checks, the hls_math.h subset); ap_int.h / ap_fixed.h are AMD's.
PROJECT_INCLUDE = Path(__file__).resolve().parent / "include"
PROJECT_HEADERS = ("hls_math.h", "hls_stream.h")
AP_TYPES_ENV = "MAMBAFLOW_AP_TYPES_DIR"
HLS4ML_AP_TYPES = Path("templates") / "vivado" / "ap_types"
_REQUIRED = ("ap_int.h", "ap_fixed.h", "etc/ap_private.h")
_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
_HOW = (f"install them with `pip install hls4ml` (a mambaflow dependency: `pip install -e .` "
        f"brings it; its wheel ships AMD's Apache-2.0 headers under hls4ml/{HLS4ML_AP_TYPES.as_posix()}), "
        f"or set {AP_TYPES_ENV} to a folder that has them ($XILINX_HLS/include, or include/ of "
        "github.com/Xilinx/HLS_arbitrary_Precision_Types)")


def _missing(d: Path) -> list[str]:
    return [f for f in _REQUIRED if not (d / f).is_file()]


def _ap_types_source() -> tuple[Path, str, Path | None]:
    """(folder with AMD's ap_types headers, where it came from, its license file or
    None); CsimError saying what is missing and how to install it when there is none.
    $MAMBAFLOW_AP_TYPES_DIR wins; else the copy in the hls4ml wheel, found without
    importing hls4ml (no silent fallback: csim has no headers of its own)."""
    env = os.environ.get(AP_TYPES_ENV)
    if env:
        d = Path(env)
        if _missing(d):
            raise CsimError(f"{AP_TYPES_ENV}={env} does not hold AMD's ap_types headers (missing: "
                            f"{', '.join(_missing(d))}); point it at a folder with ap_int.h, ap_fixed.h and "
                            f"etc/ap_private.h, or unset it to use the copy in hls4ml")
        lic = next((f for p in (d, d.parent) for f in sorted(p.glob("LICENSE*")) if f.is_file()), None)
        return d, f"${AP_TYPES_ENV}", lic
    spec = importlib.util.find_spec("hls4ml")
    if spec is None:
        raise CsimError(f"C simulation compiles against AMD's ap_types headers ({', '.join(_REQUIRED)}) and "
                        f"none are installed: hls4ml is not importable here; {_HOW}")
    roots = [Path(r) for r in spec.submodule_search_locations or []]
    for root in roots:
        d = root / HLS4ML_AP_TYPES
        if not _missing(d):
            import importlib.metadata as md

            try:
                dist = md.distribution("hls4ml")
                version = dist.version
                files = sorted(str(f) for f in dist.files or [] if Path(str(f)).name.startswith("LICENSE"))
                lic = Path(dist.locate_file(files[0])) if files else None
            except md.PackageNotFoundError:
                version, lic = "?", None
            return d, f"hls4ml {version} (hls4ml/{HLS4ML_AP_TYPES.as_posix()})", lic
    where = ", ".join(str(r / HLS4ML_AP_TYPES) for r in roots) or "(no package folder)"
    raise CsimError(f"hls4ml is installed but has no AMD ap_types headers ({', '.join(_REQUIRED)}) in {where}; "
                    f"reinstall it (`pip install --force-reinstall hls4ml`) or set {AP_TYPES_ENV}")


def csim_include_dir(dest: str | Path) -> Path:
    """The one include folder of every C simulation (run_csim, tests, the project's
    `make csim`), written at `dest`: AMD's ap_*.h and etc/ (plus any other header they
    include from their folder) with its license, next to the project's hls_stream.h and
    hls_math.h (hls4ml's copies of those two are minimal stand-ins, not AMD's, and lack
    the depth checks). Copies, not links, so a generated project is self-contained;
    byte-identical for the same installed headers (files already in `dest` are
    overwritten, others left alone). Compile with `-isystem dest`, so -Wall -Werror
    apply to the emitted code and not to the vendor's. Raises CsimError when AMD's
    headers are not installed."""
    src, origin, lic = _ap_types_source()
    todo = [p.relative_to(src) for p in sorted(src.glob("ap_*.h")) + sorted((src / "etc").rglob("*.h"))]
    vendor: list[Path] = []
    while todo:
        rel = todo.pop(0)
        if rel in vendor or rel.as_posix() in PROJECT_HEADERS:
            continue
        vendor.append(rel)
        for inc in _INCLUDE_RE.findall((src / rel).read_text(errors="replace")):
            for cand in (Path(inc), rel.parent / inc):
                if (src / cand).is_file():
                    todo.append(Path(os.path.normpath(cand)))
                    break
    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    for rel in sorted(vendor):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, d / rel)
    for h in PROJECT_HEADERS:
        shutil.copyfile(PROJECT_INCLUDE / h, d / h)
    notice = [f"ap_*.h, etc/: AMD's arbitrary-precision types (Apache-2.0; each file keeps its notice), "
              f"copied from {origin}.",
              f"{', '.join(PROJECT_HEADERS)}: mambaflow's csim headers (targets/hls/include)."]
    if lic is not None:
        shutil.copyfile(lic, d / "LICENSE")
        notice.append(f"LICENSE: the license file shipped with them ({lic.name} of {origin}).")
    (d / "NOTICE").write_text("\n".join(notice) + "\n")
    return d


# ----------------------------------------------------------------------- types


def is_index(t: ir.Type) -> bool:
    return isinstance(t, ir.IndexType)


def int_width(t: ir.Type) -> int | None:
    if isinstance(t, ir.IntegerType):
        return t.width
    return None


def scalar_type(t: ir.Type, where: str = "") -> str:
    """The C++ type of a scalar MLIR type.

    index -> int (every design index fits 31 bits; see `check_index_range`);
    i1 -> bool; i8/16/32/64 -> intN_t; other widths -> ap_int<W>; f32 -> float;
    f64 -> double. MLIR integers are signless: ops that need an unsigned view cast.
    """
    if isinstance(t, ir.IndexType):
        return "int"
    if isinstance(t, ir.F32Type):
        return "float"
    if isinstance(t, ir.F64Type):
        return "double"
    if isinstance(t, ir.IntegerType):
        w = t.width
        if w == 1:
            return "bool"
        if w in (8, 16, 32, 64):
            return f"int{w}_t"
        if w > 64:
            raise HlsEmitError(f"{where}: integers wider than 64 bits (i{w}) are not supported by the HLS emitter")
        return f"ap_int<{w}>"
    raise HlsEmitError(
        f"{where}: type {t} has no HLS C++ equivalent in the emitter "
        "(supported: f32, f64, i1..i64, index). Convert it before emission, e.g. with a "
        "quantization recipe that produces integer types."
    )


def unsigned_type(t: ir.Type, where: str = "") -> str:
    """The unsigned C++ view of an integer type (for ult/udiv/shrui/extui...)."""
    if isinstance(t, ir.IndexType):
        return "unsigned"
    w = int_width(t)
    if w is None:
        raise HlsEmitError(f"{where}: unsigned view of non-integer type {t}")
    if w == 1:
        return "bool"
    if w in (8, 16, 32, 64):
        return f"uint{w}_t"
    return f"ap_uint<{w}>"


def uses_ap_types(t: ir.Type) -> bool:
    w = int_width(t)
    return w is not None and w not in (1, 8, 16, 32, 64)


def element_bits(t: ir.Type) -> int:
    if isinstance(t, ir.IndexType):
        return 32
    if isinstance(t, ir.F32Type):
        return 32
    if isinstance(t, ir.F64Type):
        return 64
    if isinstance(t, ir.F16Type) or isinstance(t, ir.BF16Type):
        return 16
    w = int_width(t)
    if w is not None:
        return w
    raise HlsEmitError(f"cannot size element type {t}")


def memref_shape(t: ir.MemRefType, where: str = "") -> tuple[int, ...]:
    shape = tuple(t.shape)
    if any(d < 0 for d in shape):
        raise HlsEmitError(
            f"{where}: memref {t} has a dynamic size; HLS arrays need static sizes "
            "(capture the design at a fixed token count T)"
        )
    return shape


def array_dims(shape: tuple[int, ...]) -> str:
    """`[d0][d1]...`; a rank-0 memref is a one-element array."""
    return "".join(f"[{d}]" for d in shape) if shape else "[1]"


def pointer_declarator(elem: str, name: str, shape: tuple[int, ...], const: bool = False) -> str:
    """A pointer that indexes like the memref: `T (*name)[d1]...` (rank >= 2), `T *name`."""
    c = "const " if const else ""
    if len(shape) <= 1:
        return f"{c}{elem} *{name}"
    return f"{c}{elem} (*{name}){''.join(f'[{d}]' for d in shape[1:])}"


# -------------------------------------------------------------------- literals


def float_literal(value: float, t: ir.Type) -> str:
    """A literal that parses back to exactly `value` in the type (shortest round trip)."""
    f32 = isinstance(t, ir.F32Type)
    if math.isnan(value):
        return "std::numeric_limits<float>::quiet_NaN()" if f32 else "std::numeric_limits<double>::quiet_NaN()"
    if math.isinf(value):
        s = "std::numeric_limits<float>::infinity()" if f32 else "std::numeric_limits<double>::infinity()"
        return s if value > 0 else "-" + s
    s = str(np.float32(value)) if f32 else repr(float(value))
    if "e" not in s and "." not in s:
        s += ".0"
    if s.startswith("."):
        s = "0" + s
    return s + ("f" if f32 else "")


def int_literal(value: int, t: ir.Type) -> str:
    w = 32 if isinstance(t, ir.IndexType) else int_width(t)
    if w == 1:
        return "true" if value & 1 else "false"
    # MLIR prints signless integers as signed: keep that reading
    if w is not None and w < 64 and value >= 1 << (w - 1):
        value -= 1 << w
    if w is not None and w not in (1, 32, 64) and not isinstance(t, ir.IndexType):
        # typed (ap_int<W>(v), int8_t(v), int16_t(v)): a bare int literal next to a
        # narrow operand breaks template deduction in mf_max / mf_min
        return f"{scalar_type(t)}({value})"
    if w == 64:
        # always typed: `mf_max(int64_t, 0)` would not deduce one template type; INT64_MIN
        # has no literal (9223372036854775808 does not fit before the minus applies)
        if value == -(2**63):
            return "(-INT64_C(9223372036854775807) - 1)"
        return f"INT64_C({value})"
    return str(value)


def attr_literal(attr: ir.Attribute, t: ir.Type, where: str = "") -> str:
    if isinstance(attr, ir.FloatAttr):
        return float_literal(attr.value, t)
    if isinstance(attr, ir.IntegerAttr):
        return int_literal(attr.value, t)
    if isinstance(attr, ir.BoolAttr):
        return "true" if attr.value else "false"
    raise HlsEmitError(f"{where}: constant {attr} is not a scalar literal (vector constants are not supported)")


def dense_values(attr: ir.Attribute, n: int) -> np.ndarray:
    """A DenseElementsAttr as a flat numpy array of n elements."""
    if isinstance(attr, (ir.DenseIntElementsAttr, ir.DenseFPElementsAttr)):
        if attr.is_splat:
            v = attr.get_splat_value()
            v = v.value if hasattr(v, "value") else v
            return np.full(n, v)
        return np.asarray(np.array(attr)).reshape(-1)
    raise HlsEmitError(f"memref.global initial value {attr} is not a dense int/float attribute")


# ---------------------------------------------------------------- affine exprs

# precedence: 1 = additive, 2 = multiplicative, 3 = atom
_ADD, _MUL, _ATOM = 1, 2, 3


class AffinePrinter:
    """Prints affine expressions as C++ index arithmetic.

    `dims`/`syms` are the C expressions (names) bound to the map's operands; `nonneg`
    says which operands are known >= 0, so floordiv/mod of non-negative values print as
    plain `/` and `%`, and anything else goes through the exact helpers
    `mf_floordiv` / `mf_mod` / `mf_ceildiv` (C++ division truncates toward zero).
    """

    def __init__(self, dims: list[str], syms: list[str], dim_nonneg: list[bool], sym_nonneg: list[bool], helpers: set[str]):
        self.dims, self.syms = dims, syms
        self.dim_nonneg, self.sym_nonneg = dim_nonneg, sym_nonneg
        self.helpers = helpers

    def nonneg(self, e) -> bool:
        if isinstance(e, ir.AffineConstantExpr):
            return e.value >= 0
        if isinstance(e, ir.AffineDimExpr):
            return self.dim_nonneg[e.position]
        if isinstance(e, ir.AffineSymbolExpr):
            return self.sym_nonneg[e.position]
        if isinstance(e, (ir.AffineAddExpr, ir.AffineMulExpr)):
            return self.nonneg(e.lhs) and self.nonneg(e.rhs)
        if isinstance(e, (ir.AffineFloorDivExpr, ir.AffineCeilDivExpr)):
            return self.nonneg(e.lhs) and self.nonneg(e.rhs)
        if isinstance(e, ir.AffineModExpr):
            return True  # affine mod is always in [0, rhs)
        return False

    def __call__(self, e) -> str:
        return self._p(e)[0]

    def _p(self, e) -> tuple[str, int]:
        if isinstance(e, ir.AffineConstantExpr):
            v = e.value
            return (str(v), _ATOM) if v >= 0 else (f"({v})", _ATOM)
        if isinstance(e, ir.AffineDimExpr):
            return self.dims[e.position], _ATOM
        if isinstance(e, ir.AffineSymbolExpr):
            return self.syms[e.position], _ATOM
        if isinstance(e, ir.AffineAddExpr):
            lhs = self._wrap(e.lhs, _ADD)
            rhs = e.rhs
            if isinstance(rhs, ir.AffineConstantExpr) and rhs.value < 0:
                return f"{lhs} - {-rhs.value}", _ADD
            if isinstance(rhs, ir.AffineMulExpr) and isinstance(rhs.rhs, ir.AffineConstantExpr) and rhs.rhs.value < 0:
                k = -rhs.rhs.value
                term = self._wrap(rhs.lhs, _MUL) if k == 1 else f"{self._wrap(rhs.lhs, _MUL)} * {k}"
                return f"{lhs} - {term}", _ADD
            return f"{lhs} + {self._wrap(rhs, _ADD)}", _ADD
        if isinstance(e, ir.AffineMulExpr):
            rhs = e.rhs
            if isinstance(rhs, ir.AffineConstantExpr) and rhs.value == -1:
                return f"-{self._wrap(e.lhs, _ATOM)}", _ATOM
            return f"{self._wrap(e.lhs, _MUL)} * {self._wrap(rhs, _ATOM)}", _MUL
        if isinstance(e, (ir.AffineFloorDivExpr, ir.AffineModExpr, ir.AffineCeilDivExpr)):
            exact = self.nonneg(e.lhs) and isinstance(e.rhs, ir.AffineConstantExpr) and e.rhs.value > 0
            if isinstance(e, ir.AffineCeilDivExpr):
                self.helpers.add("mf_ceildiv")
                return f"mf_ceildiv({self(e.lhs)}, {self(e.rhs)})", _ATOM
            if exact:
                op = "/" if isinstance(e, ir.AffineFloorDivExpr) else "%"
                return f"{self._wrap(e.lhs, _MUL)} {op} {self._wrap(e.rhs, _ATOM)}", _MUL
            fn = "mf_floordiv" if isinstance(e, ir.AffineFloorDivExpr) else "mf_mod"
            self.helpers.add(fn)
            return f"{fn}({self(e.lhs)}, {self(e.rhs)})", _ATOM
        raise HlsEmitError(f"unsupported affine expression {e}")

    def _wrap(self, e, need: int) -> str:
        s, prec = self._p(e)
        return s if prec >= need else f"({s})"


# Helpers the emitted code may need; emitted (in this order) only when used.
HELPERS: dict[str, str] = {
    "mf_floordiv": "static inline int mf_floordiv(int a, int b) {\n  int q = a / b;\n  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;\n}",
    "mf_mod": "static inline int mf_mod(int a, int b) {\n  int r = a % b;\n  return r < 0 ? r + (b < 0 ? -b : b) : r;\n}",
    "mf_ceildiv": "static inline int mf_ceildiv(int a, int b) {\n  int q = a / b;\n  return (a % b != 0 && ((a < 0) == (b < 0))) ? q + 1 : q;\n}",
    "mf_floordivsi": "template <class T> static inline T mf_floordivsi(T a, T b) {\n  T q = a / b;\n  return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;\n}",
    "mf_ceildivsi": "template <class T> static inline T mf_ceildivsi(T a, T b) {\n  T q = a / b;\n  return (a % b != 0 && ((a < 0) == (b < 0))) ? T(q + 1) : q;\n}",
    "mf_maximumf": "template <class T> static inline T mf_maximumf(T a, T b) {\n  // arith.maximumf: NaN-propagating; -0.0 < +0.0\n  if (a != a || b != b) return a + b;\n  if (a == b) return std::signbit(a) ? b : a;\n  return a > b ? a : b;\n}",
    "mf_minimumf": "template <class T> static inline T mf_minimumf(T a, T b) {\n  // arith.minimumf: NaN-propagating; -0.0 < +0.0\n  if (a != a || b != b) return a + b;\n  if (a == b) return std::signbit(a) ? a : b;\n  return a < b ? a : b;\n}",
    "mf_min": "template <class T> static inline T mf_min(T a, T b) { return b < a ? b : a; }",
    "mf_max": "template <class T> static inline T mf_max(T a, T b) { return a < b ? b : a; }",
    "mf_bitcast": "template <class To, class From> static inline To mf_bitcast(From v) {\n  static_assert(sizeof(To) == sizeof(From), \"bitcast between types of different sizes\");\n  To r;\n  std::memcpy(&r, &v, sizeof(r));\n  return r;\n}",
    # Element k of a port packed into W-bit AXI beats (targets/hls/packing.py): bits
    # [(k % E) * w, (k % E + 1) * w) of beat k / E, E = W / w, read as a w-bit signed value.
    # Read and written through .range() of the beat and plain 64-bit integers, so no
    # ap_int temporary is constructed (see _FuncEmitter._load).
    "mf_unpack": "template <int w, int W> static inline int64_t mf_unpack(const ap_uint<W> *p, int k) {\n"
                 "  const int E = W / w, lo = (k % E) * w;\n"
                 "  uint64_t u = p[k / E].range(lo + w - 1, lo).to_uint64();\n"
                 "  return int64_t(u << (64 - w)) >> (64 - w);\n}",
    "mf_pack": "template <int w, int W> static inline void mf_pack(ap_uint<W> *p, int k, int64_t v) {\n"
               "  const int E = W / w, lo = (k % E) * w;\n"
               "  p[k / E].range(lo + w - 1, lo) = uint64_t(v) & (~uint64_t(0) >> (64 - w));\n}",
}
