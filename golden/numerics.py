"""Bit-exact integer numerics shared by the golden model, the GPU reference tests and the RTL tests.

Requantization follows TFLite / gemmlowp ``MultiplyByQuantizedMultiplier``::

    x' = saturate_int32(x << max(shift, 0))
    y  = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x', M0), max(-shift, 0))

``SaturatingRoundingDoublingHighMul(a, b)``: the high 32 bits of ``2*a*b`` rounded to nearest, ties
toward +infinity (gemmlowp nudges by ``2^30`` or ``1 - 2^30`` and truncates toward zero, so -0.5 -> 0,
-1.5 -> -1, +0.5 -> 1; same as ARM SQRDMULH); saturates the single overflow case
``a == b == INT32_MIN``. ``RoundingDivideByPOT(x, e)``: divide by ``2^e`` rounding half
away from zero. All functions are vectorized over numpy arrays and work in int64 internally.

The fused activation unit computes, per lane::

    y = clamp(requant(wrap32(acc + bias)) + out_zp, qmin, qmax)
    y = lut[y + 128]            # only in LUT mode
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["INT32_MIN", "INT32_MAX", "wrap_int32", "int_matmul", "quantize_multiplier", "srdhm", "rdbpot", "requantize",
           "activation_unit", "quantize", "dequantize", "int_range", "pack_int4", "unpack_int4",
           "LUT_FUNCTIONS", "build_lut", "relu_bounds"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
SHIFT_MIN, SHIFT_MAX = -31, 30


def wrap_int32(x):
    """Two's-complement wrap to int32 (what a 32-bit adder does)."""
    x = np.asarray(x, dtype=np.int64)
    return (((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN).astype(np.int64)


def int_matmul(a, b) -> np.ndarray:
    """``a @ b`` of integer matrices as int64, exactly: through float64 BLAS (fast) when every partial
    sum is below 2^53 in magnitude (``K * max|a| * max|b|``), else numpy's int64 product."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if a.size and b.size:
        bound = a.shape[-1] * int(np.abs(a).max()) * int(np.abs(b).max())
        if bound < 1 << 53:
            return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def quantize_multiplier(scale: float) -> tuple[int, int]:
    """Real scale > 0 -> ``(M0, shift)`` with ``scale ~= M0 * 2^(shift - 31)``, M0 in [2^30, 2^31).

    Raises ``ValueError`` for scales that are not finite and positive, or whose shift falls outside
    the ISA range -31..30.
    """
    try:
        valid = math.isfinite(float(scale)) and scale > 0
    except (TypeError, OverflowError):
        valid = False
    if not valid:
        raise ValueError(f"requantization scale must be a finite positive number, got {scale!r}")
    mantissa, shift = math.frexp(float(scale))      # scale = mantissa * 2^shift, mantissa in [0.5, 1)
    m0 = math.floor(mantissa * (1 << 31) + 0.5)     # ties away from zero, like TFLite's std::round
    if m0 == 1 << 31:
        m0 //= 2
        shift += 1
    if shift < SHIFT_MIN:                           # tiny scale: everything rounds to zero anyway
        return 0, 0
    if shift > SHIFT_MAX:
        raise ValueError(f"requantization scale {scale!r} too large (shift {shift} > {SHIFT_MAX})")
    return int(m0), int(shift)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul on int32 values (numpy arrays or ints)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b                                        # fits in int64: |a*b| <= 2^62
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    # C++ integer division truncates toward zero.
    q = np.where(total >= 0, total >> 31, -((-total) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, q).astype(np.int64)


def rdbpot(x, exponent):
    """RoundingDivideByPOT: ``x / 2^exponent`` rounded half away from zero (exponent in 0..31)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> exponent) + (remainder > threshold)).astype(np.int64)


def requantize(acc, multiplier, shift, single_round: bool = False):
    """MultiplyByQuantizedMultiplier(acc, M0, shift) on int32 accumulators. ``multiplier`` and ``shift``
    are ints (per tensor) or arrays broadcast against ``acc``'s last axis (per output channel).

    ``single_round=False``: gemmlowp's double rounding, ``rdbpot(srdhm(sat32(acc << left), M0), right)``.
    ``single_round=True``: TFLite's single rounding, the exact product rounded once half up,
    ``(sat32(acc << left) * M0 + 2^(30 + right)) >> (31 + right)`` (equal to TFLite's
    ``(acc * M0 + 2^(30 - shift)) >> (31 - shift)`` wherever that does not overflow int32).
    """
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if multiplier.size and not (0 <= multiplier.min() and multiplier.max() <= INT32_MAX):
        raise ValueError(f"multiplier must be in 0..{INT32_MAX}, got {multiplier}")
    if shift.size and not (SHIFT_MIN <= shift.min() and shift.max() <= SHIFT_MAX):
        raise ValueError(f"shift must be in {SHIFT_MIN}..{SHIFT_MAX}, got {shift}")
    acc = np.asarray(acc, dtype=np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    shifted = np.clip(acc << left, INT32_MIN, INT32_MAX)
    if single_round:
        return (shifted * multiplier + (np.int64(1) << (30 + right))) >> (31 + right)
    return rdbpot(srdhm(shifted, multiplier), right)


def activation_unit(acc, bias, multiplier, shift, out_zp, qmin, qmax, lut=None, single_round: bool = False):
    """The fused activation unit (bias, requant, zero point, clamp, optional LUT) -> int64 array."""
    y = requantize(wrap_int32(np.asarray(acc, np.int64) + np.asarray(bias, np.int64)), multiplier, shift,
                   single_round)
    y = np.clip(y + out_zp, qmin, qmax)
    if lut is not None:
        y = np.asarray(lut, dtype=np.int64)[y + 128]
    return y


# -- quantization helpers ------------------------------------------------------------------------
def int_range(bits: int) -> tuple[int, int]:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def quantize(x, scale: float, zero_point: int = 0, bits: int = 8):
    """Float -> signed int (round half to even, like onnxruntime / numpy), saturating."""
    lo, hi = int_range(bits)
    return np.clip(np.rint(np.asarray(x, np.float64) / scale) + zero_point, lo, hi).astype(np.int64)


def dequantize(q, scale: float, zero_point: int = 0):
    return (np.asarray(q, np.float64) - zero_point) * scale


def pack_int4(values) -> np.ndarray:
    """int4 values (last axis even) -> uint8 bytes, two per byte, low nibble first."""
    v = np.asarray(values, dtype=np.int64)
    if v.ndim == 0 or v.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got shape {v.shape}")
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError(f"int4 values must lie in -8..7, got range {v.min()}..{v.max()}")
    nib = (v & 0xF).astype(np.uint8)
    return (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed) -> np.ndarray:
    """uint8 bytes -> sign-extended int4 values, low nibble first (last axis doubles)."""
    p = np.asarray(packed, dtype=np.uint8).astype(np.int64)
    lo, hi = p & 0xF, p >> 4
    out = np.stack([lo, hi], axis=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)
    return np.where(out >= 8, out - 16, out)


# -- LUT activations -------------------------------------------------------------------------------
def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


LUT_FUNCTIONS = {
    "gelu": _gelu,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def build_lut(function, in_scale: float, in_zp: int, out_scale: float, out_zp: int, bits: int = 8):
    """256-entry int8 table: ``lut[q + 128] = quantize(f(dequantize(q)))`` for q in -128..127.

    ``function`` is a name from ``LUT_FUNCTIONS`` or any vectorized callable on float64 arrays.
    """
    if isinstance(function, str):
        if function not in LUT_FUNCTIONS:
            raise ValueError(f"unknown LUT function {function!r}; expected one of {sorted(LUT_FUNCTIONS)}")
        function = LUT_FUNCTIONS[function]
    q = np.arange(-128, 128)
    return quantize(function(dequantize(q, in_scale, in_zp)), out_scale, out_zp, bits)


def relu_bounds(act: str, out_scale: float, out_zp: int, bits: int = 8) -> tuple[int, int]:
    """Clamp bounds implementing none/relu/relu6 in the quantized output domain."""
    lo, hi = int_range(bits)
    if act == "none":
        return lo, hi
    if act == "relu":
        return max(lo, out_zp), hi
    if act == "relu6":
        return max(lo, out_zp), min(hi, out_zp + int(round(6.0 / out_scale)))
    raise ValueError(f"act {act!r} is not a clamp activation (none, relu, relu6)")
