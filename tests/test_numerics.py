"""Bit-exact numerics: requantization against an independent Python-int model of gemmlowp, plus the
quantization helpers (multiplier, int4 packing, LUTs, quantize/dequantize)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from opennpu.golden import numerics as nm

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
SHIFTS = list(range(-31, 31))


# -- independent reference (Python ints, written from the gemmlowp definitions) -------------------
def c_div(n: int, d: int) -> int:
    """C / C++ integer division: truncates toward zero."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul(int32 a, int32 b)."""
    if a == I32_MIN and b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: x / 2^exponent, rounded to nearest, ties away from zero (exact rationals)."""
    q = Fraction(x, 1 << exponent)
    mag = math.floor(abs(q) + Fraction(1, 2))
    return mag if q >= 0 else -mag


def ref_requantize(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier with a saturating left shift."""
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(x * 2 ** left, I32_MIN), I32_MAX)
    return ref_rdbpot(ref_srdhm(x, m), right)


def as_int(v) -> int:
    return int(np.asarray(v).item())


EDGE_X = [I32_MIN, I32_MIN + 1, -(2 ** 30), -12345, -3, -2, -1, 0, 1, 2, 3, 12345, 2 ** 30, I32_MAX - 1,
          I32_MAX]
EDGE_M = [0, 1, 2, 2 ** 30 - 1, 2 ** 30, 2 ** 30 + 1, 1518500250, I32_MAX - 1, I32_MAX]


# -- the reference itself: pin the documented rounding behaviour -------------------------------------
def test_reference_rounding_semantics():
    # SRDHM: nearest, ties toward +inf (gemmlowp's truncating nudge), equal to floor(ab/2^31 + 1/2).
    for k in range(-6, 6):
        a = 2 * k + 1                                   # a * 2^30 / 2^31 = k + 0.5, an exact tie
        assert ref_srdhm(a, 1 << 30) == k + 1
        assert ref_srdhm(a, 1 << 30) == math.floor(Fraction(a * (1 << 30), 1 << 31) + Fraction(1, 2))
    # RDBPOT: ties away from zero.
    assert [ref_rdbpot(x, 1) for x in (-5, -3, -1, 1, 3, 5)] == [-3, -2, -1, 1, 2, 3]
    assert ref_rdbpot(-6, 2) == -2 and ref_rdbpot(6, 2) == 2 and ref_rdbpot(-5, 2) == -1


# -- srdhm / rdbpot ---------------------------------------------------------------------------------
def test_srdhm_saturation_case():
    assert as_int(nm.srdhm(I32_MIN, I32_MIN)) == I32_MAX
    assert as_int(nm.srdhm(I32_MIN, I32_MAX)) == ref_srdhm(I32_MIN, I32_MAX) == -I32_MAX
    assert as_int(nm.srdhm(I32_MAX, I32_MAX)) == ref_srdhm(I32_MAX, I32_MAX) == I32_MAX - 1


def test_srdhm_edges_and_ties():
    vals = EDGE_X + [-(2 ** 31 - 2)]
    a, b = np.meshgrid(vals, vals, indexing="ij")
    got = nm.srdhm(a, b)
    want = np.array([[ref_srdhm(x, y) for y in vals] for x in vals])
    np.testing.assert_array_equal(got, want)
    for k in range(-6, 6):                               # exact ties k + 0.5
        assert as_int(nm.srdhm(2 * k + 1, 1 << 30)) == k + 1


@given(st.integers(I32_MIN, I32_MAX), st.integers(I32_MIN, I32_MAX))
def test_srdhm_property(a, b):
    assert as_int(nm.srdhm(a, b)) == ref_srdhm(a, b)


def test_rdbpot_ties_and_all_exponents():
    assert [as_int(nm.rdbpot(x, 1)) for x in (-5, -3, -1, 1, 3, 5)] == [-3, -2, -1, 1, 2, 3]
    xs = np.array(EDGE_X)
    for e in range(0, 32):
        np.testing.assert_array_equal(nm.rdbpot(xs, e), [ref_rdbpot(int(x), e) for x in xs])
        if e:
            half = 1 << (e - 1)                          # exact ties +-(2j+1) * 2^(e-1)
            for j in range(3):
                t = (2 * j + 1) * half
                if t <= I32_MAX:
                    assert as_int(nm.rdbpot(t, e)) == j + 1
                    assert as_int(nm.rdbpot(-t, e)) == -(j + 1)


# -- requantize ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", SHIFTS)
def test_requantize_edges_every_shift(shift):
    xs = np.array(EDGE_X)
    for m in EDGE_M:
        want = [ref_requantize(int(x), m, shift) for x in xs]
        np.testing.assert_array_equal(nm.requantize(xs, m, shift), want, err_msg=f"m={m} shift={shift}")


def test_requantize_ties():
    # srdhm(-10, 2^30) = -5 exactly, then /2 -> -2.5 -> -3 (away from zero); positive mirror.
    assert as_int(nm.requantize(-10, 1 << 30, -1)) == ref_requantize(-10, 1 << 30, -1) == -3
    assert as_int(nm.requantize(10, 1 << 30, -1)) == ref_requantize(10, 1 << 30, -1) == 3
    assert as_int(nm.requantize(-6, 1 << 30, -1)) == -2   # -1.5 -> -2
    assert as_int(nm.requantize(-2, 1 << 30, -1)) == -1   # -0.5 -> -1
    # srdhm ties alone (shift 0): -0.5 -> 0, +0.5 -> 1.
    assert as_int(nm.requantize(-1, 1 << 30, 0)) == 0
    assert as_int(nm.requantize(1, 1 << 30, 0)) == 1


def test_requantize_saturating_left_shift():
    assert as_int(nm.requantize(I32_MAX, I32_MAX, 30)) == ref_requantize(I32_MAX, I32_MAX, 30) == I32_MAX - 1
    assert as_int(nm.requantize(I32_MIN, I32_MAX, 30)) == ref_requantize(I32_MIN, I32_MAX, 30) == -I32_MAX
    assert as_int(nm.requantize(1 << 20, 1 << 30, 15)) == (I32_MAX + 1) // 2   # saturated, then * 1/2


@pytest.mark.parametrize("m, shift", [(-1, 0), (I32_MAX + 1, 0), (1 << 30, -32), (1 << 30, 31)])
def test_requantize_rejects_bad_params(m, shift):
    with pytest.raises(ValueError):
        nm.requantize(1, m, shift)


@settings(max_examples=2000)
@given(st.integers(I32_MIN, I32_MAX), st.integers(0, I32_MAX), st.integers(-31, 30))
def test_requantize_property(x, m, shift):
    assert as_int(nm.requantize(x, m, shift)) == ref_requantize(x, m, shift)


@settings(max_examples=100)
@given(st.lists(st.integers(I32_MIN, I32_MAX), min_size=1, max_size=32), st.integers(0, I32_MAX),
       st.integers(-31, 30))
def test_requantize_vectorized_property(xs, m, shift):
    np.testing.assert_array_equal(nm.requantize(np.array(xs), m, shift), [ref_requantize(x, m, shift) for x in xs])


def test_wrap_int32():
    vals = [I32_MIN - 1, I32_MIN, -1, 0, I32_MAX, I32_MAX + 1, 2 ** 40 + 5, -(2 ** 40) - 5]
    want = [((v + 2 ** 31) % 2 ** 32) - 2 ** 31 for v in vals]
    np.testing.assert_array_equal(nm.wrap_int32(vals), want)


@settings(max_examples=200)
@given(st.integers(I32_MIN, I32_MAX), st.integers(I32_MIN, I32_MAX), st.integers(0, I32_MAX),
       st.integers(-31, 30), st.integers(-128, 127), st.integers(-128, 127), st.integers(-128, 127))
def test_activation_unit_property(acc, bias, m, shift, zp, q1, q2):
    qmin, qmax = min(q1, q2), max(q1, q2)
    wrapped = ((acc + bias + 2 ** 31) % 2 ** 32) - 2 ** 31
    want = min(max(ref_requantize(wrapped, m, shift) + zp, qmin), qmax)
    assert as_int(nm.activation_unit(acc, bias, m, shift, zp, qmin, qmax)) == want
    lut = np.arange(256)[::-1] - 128                     # any permutation-ish table
    assert as_int(nm.activation_unit(acc, bias, m, shift, zp, qmin, qmax, lut)) == lut[want + 128]


# -- quantize_multiplier -----------------------------------------------------------------------------
log_scales = st.floats(min_value=math.log(1e-9), max_value=math.log(1e3), exclude_min=True,
                       exclude_max=True).map(math.exp)


@settings(max_examples=500)
@given(log_scales)
def test_quantize_multiplier_accuracy(scale):
    m0, shift = nm.quantize_multiplier(scale)
    assert isinstance(m0, int) and isinstance(shift, int)
    assert 2 ** 30 <= m0 < 2 ** 31
    assert -31 <= shift <= 30
    represented = Fraction(m0) * Fraction(2) ** (shift - 31)
    assert abs(represented - Fraction(scale)) <= Fraction(scale) * Fraction(1, 2 ** 31)


@pytest.mark.parametrize("scale", [1e-9 * 1.0001, 2 ** -20, 0.25, 0.5, 1.0, 1.5, 999.9, 2.0 ** 30 * 0.999,
                                   1 - 2 ** -40, np.float32(0.1), np.float64(3.7)])
def test_quantize_multiplier_specific(scale):
    m0, shift = nm.quantize_multiplier(scale)
    assert 2 ** 30 <= m0 < 2 ** 31
    represented = Fraction(m0) * Fraction(2) ** (shift - 31)
    assert abs(represented - Fraction(float(scale))) <= Fraction(float(scale)) / 2 ** 31


def test_quantize_multiplier_power_of_two_exact():
    for e in range(-30, 30):
        m0, shift = nm.quantize_multiplier(2.0 ** e)
        assert (m0, shift) == (2 ** 30, e + 1)


@pytest.mark.parametrize("scale", [0, 0.0, -0.0, -1.0, -1e-9, float("nan"), float("inf"), float("-inf"),
                                   "1.0", None, 2.0 ** 31])
def test_quantize_multiplier_rejects(scale):
    with pytest.raises(ValueError):
        nm.quantize_multiplier(scale)


def test_quantize_multiplier_tiny_scale_is_zero():
    assert nm.quantize_multiplier(2.0 ** -40) == (0, 0)


# -- int4 packing ------------------------------------------------------------------------------------
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.integers(0, 8), st.data())
def test_int4_round_trip(lead, half_last, data):
    shape = tuple(lead) + (2 * half_last,)
    n = int(np.prod(shape))
    vals = np.array(data.draw(st.lists(st.integers(-8, 7), min_size=n, max_size=n)), dtype=np.int64).reshape(shape)
    packed = nm.pack_int4(vals)
    assert packed.dtype == np.uint8 and packed.shape == shape[:-1] + (half_last,)
    np.testing.assert_array_equal(nm.unpack_int4(packed), vals)


def test_int4_layout_and_all_bytes():
    assert nm.pack_int4([1, -1]).tolist() == [0xF1]
    assert nm.pack_int4([-8, 7]).tolist() == [0x78]
    allbytes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(nm.pack_int4(nm.unpack_int4(allbytes)), allbytes)


@pytest.mark.parametrize("vals", [[8, 0], [-9, 0], [0, 100], [0, 1, 2]])
def test_int4_rejects(vals):
    with pytest.raises(ValueError):
        nm.pack_int4(vals)


# -- LUTs -------------------------------------------------------------------------------------------
def _f_ref(name, x):
    if name == "gelu":
        return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    if name == "silu":
        return x / (1 + math.exp(-x))
    if name == "sigmoid":
        return 1 / (1 + math.exp(-x))
    return math.tanh(x)


_MINIMIZER = {"gelu": -0.7517915, "silu": -1.2784645}   # argmin of the non-monotonic ones


@settings(max_examples=30)
@given(st.sampled_from(["gelu", "silu", "sigmoid", "tanh"]), st.floats(0.005, 0.2),
       st.integers(-20, 20), st.floats(0.002, 0.1), st.integers(-128, 127))
def test_build_lut_matches_float_and_monotonic(name, in_scale, in_zp, out_scale, out_zp):
    lut = nm.build_lut(name, in_scale, in_zp, out_scale, out_zp)
    assert lut.shape == (256,) and lut.min() >= -128 and lut.max() <= 127
    xs = [(q - in_zp) * in_scale for q in range(-128, 128)]
    exact = np.clip([_f_ref(name, x) / out_scale + out_zp for x in xs], -128, 127)
    assert np.max(np.abs(lut - exact)) <= 0.5 + 1e-6          # round to nearest: within 1/2 LSB
    d = np.diff(lut)
    xs = np.array(xs)
    if name in ("sigmoid", "tanh"):
        assert np.all(d >= 0)
    else:
        x0 = _MINIMIZER[name]
        assert np.all(d[xs[:-1] >= x0] >= 0)                  # increasing right of the minimum
        assert np.all(d[xs[1:] <= x0] <= 0)                   # decreasing left of it


def test_build_lut_typical_and_errors():
    lut = nm.build_lut("sigmoid", 8 / 128, 0, 1 / 256, -128)
    assert lut[0] == -128 and lut[255] == 127 and lut[128] == 0     # sigmoid(0)=0.5 -> 128 - 128
    custom = nm.build_lut(lambda x: x, 0.1, 0, 0.1, 0)
    np.testing.assert_array_equal(custom, np.arange(-128, 128))
    with pytest.raises(ValueError):
        nm.build_lut("softplus", 0.1, 0, 0.1, 0)
    assert nm.build_lut("tanh", 0.05, 0, 1 / 64, 0, bits=4).max() <= 7


# -- quantize / dequantize ---------------------------------------------------------------------------
@settings(max_examples=100)
@given(st.floats(1e-6, 1e3), st.integers(-128, 127), st.sampled_from([4, 8]))
def test_quantize_dequantize_round_trip(scale, zp, bits):
    lo, hi = nm.int_range(bits)
    q = np.arange(lo, hi + 1)
    np.testing.assert_array_equal(nm.quantize(nm.dequantize(q, scale, zp), scale, zp, bits), q)


@settings(max_examples=100)
@given(st.floats(1e-3, 10), st.integers(-20, 20), st.lists(st.floats(-50, 50), min_size=1, max_size=20))
def test_dequantize_quantize_error(scale, zp, xs):
    xs = np.array(xs)
    q = nm.quantize(xs, scale, zp)
    assert q.dtype == np.int64 and q.min() >= -128 and q.max() <= 127
    back = nm.dequantize(q, scale, zp)
    inside = (xs >= (-128 - zp) * scale) & (xs <= (127 - zp) * scale)
    assert np.all(np.abs(back - xs)[inside] <= scale / 2 * (1 + 1e-9))


def test_quantize_half_to_even_and_ranges():
    np.testing.assert_array_equal(nm.quantize([0.5, 1.5, 2.5, -0.5, -2.5], 1.0), [0, 2, 2, 0, -2])
    np.testing.assert_array_equal(nm.quantize([1e9, -1e9], 1.0), [127, -128])
    np.testing.assert_array_equal(nm.quantize([1e9, -1e9], 1.0, bits=4), [7, -8])
    assert nm.int_range(4) == (-8, 7) and nm.int_range(8) == (-128, 127)
    with pytest.raises(ValueError):
        nm.int_range(16)


def test_relu_bounds():
    assert nm.relu_bounds("none", 0.1, 5) == (-128, 127)
    assert nm.relu_bounds("relu", 0.1, 5) == (5, 127)
    assert nm.relu_bounds("relu6", 0.1, 5) == (5, 65)
    with pytest.raises(ValueError):
        nm.relu_bounds("gelu", 0.1, 0)
