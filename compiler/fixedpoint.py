"""gemmlowp fixed-point functions behind TFLite's int8 reference softmax, in numpy.

Values are int32 raw fixed-point numbers held in int64 arrays; ``Q(i)`` below means a raw int32 with
``i`` integer bits (``31 - i`` fractional bits), gemmlowp's ``FixedPoint<int32_t, i>``. A product of
``Q(a)`` and ``Q(b)`` is ``Q(a + b)`` with raw value ``SaturatingRoundingDoublingHighMul`` (``numerics.srdhm``);
dividing by a power of two is ``RoundingDivideByPOT`` (``numerics.rdbpot``). Each function mirrors the
gemmlowp function of the same name (``fixedpoint/fixedpoint.h``) and TFLite's ``GetReciprocal``.
"""
from __future__ import annotations

import numpy as np

from opennpu.golden.numerics import INT32_MAX, INT32_MIN, rdbpot, srdhm

__all__ = ["saturating_shift_left", "exp_on_negative_values", "one_over_one_plus_x_for_x_in_0_1",
           "get_reciprocal"]

_INTEGER_BITS = 5
_FRACTIONAL_BITS = 31 - _INTEGER_BITS
# Multipliers exp(-2^e) in Q0 for e = -2..4 (gemmlowp's barrel shifter constants).
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))


def saturating_shift_left(x, exponent: int):
    """``SaturatingRoundingMultiplyByPOT<exponent>`` for exponent > 0: ``x << exponent``, saturated."""
    x = np.asarray(x, np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """exp(a) for a Q0 raw in [-1/4, 0): Taylor series around -1/8."""
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(srdhm(x4_over_4 + x3, 715827883) + x2, 1)       # 715827883 = 1/3 in Q0
    constant_term = 1895147668                                    # exp(-1/8) in Q0
    return constant_term + srdhm(constant_term, x + poly)


def exp_on_negative_values(a):
    """exp(a) in Q0 for raw ``a`` <= 0 in Q5 (``kScaledDiffIntegerBits`` = 5 in TFLite's softmax)."""
    a = np.asarray(a, np.int64)
    one_quarter = 1 << (_FRACTIONAL_BITS - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(    # Rescale Q5 -> Q0
        saturating_shift_left(a_mod_quarter_minus_one_quarter, _INTEGER_BITS))
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        bit = (remainder & (1 << (_FRACTIONAL_BITS + exponent))) != 0
        result = np.where(bit, srdhm(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """1 / (1 + a) in Q0 for a Q0 raw in [0, 1): Newton-Raphson in Q2, three iterations."""
    a = np.asarray(a, np.int64)
    total = a + INT32_MAX                                          # RoundingHalfSum(a, One()), sum >= 0
    half_denominator = (total + 1) // 2
    x = 1515870810 + srdhm(half_denominator, -1010580540)          # 48/17 - 32/17 * d, in Q2
    one_q2 = 1 << 29
    for _ in range(3):
        x = x + saturating_shift_left(srdhm(x, one_q2 - srdhm(half_denominator, x)), 2)
    return saturating_shift_left(x, 1)                             # x / 2, Q2 -> Q0


def _count_leading_zeros32(x):
    """Leading zero bits of positive int32 values."""
    bit_length = np.searchsorted(1 << np.arange(32, dtype=np.int64), np.asarray(x, np.int64), side="right")
    return 32 - bit_length


def get_reciprocal(x, x_integer_digits: int):
    """TFLite's ``GetReciprocal``: for positive raw ``x`` in Q(x_integer_digits), returns ``(scale,
    num_bits_over_unit)`` with ``1/x ~= scale * 2^-num_bits_over_unit``, scale in Q0."""
    x = np.asarray(x, np.int64)
    headroom_plus_one = _count_leading_zeros32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted_sum_minus_one = ((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit
