"""The PyTorch (GPU when available) reference is bit-exact with the numpy golden numerics, and a float
requant runtime agrees with it within 1 LSB."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")

from opennpu.golden import numerics as nm  # noqa: E402
from opennpu.golden.reference import (float_requant_reference, gemm_reference, reference_device,  # noqa: E402
                                      requantize_reference, time_gemm)

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PRECISIONS = {"int8": (8, 8), "a8w4": (8, 4), "a4w4": (4, 4)}


def golden(a, w, bias, m, shift, zp, qmin, qmax, lut=None):
    acc = nm.wrap_int32(np.asarray(a, np.int64) @ np.asarray(w, np.int64))
    return nm.activation_unit(acc, np.asarray(bias, np.int64)[None, :], m, shift, zp, qmin, qmax, lut)


def operands(rng, m, k, n, abits, wbits, fill):
    alo, ahi = nm.int_range(abits)
    wlo, whi = nm.int_range(wbits)
    if fill == "extreme":                    # every element at a rail: largest |acc|
        a = rng.choice([alo, ahi], size=(m, k))
        w = rng.choice([wlo, whi], size=(k, n))
    elif fill == "sparse":
        a = rng.integers(alo, ahi + 1, (m, k)) * (rng.random((m, k)) < 0.1)
        w = rng.integers(wlo, whi + 1, (k, n)) * (rng.random((k, n)) < 0.1)
    else:
        a = rng.integers(alo, ahi + 1, (m, k))
        w = rng.integers(wlo, whi + 1, (k, n))
    return a.astype(np.int64), w.astype(np.int64)


# -- bit-exactness against numerics -----------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 64), k=st.integers(1, 64), n=st.integers(1, 64),
       prec=st.sampled_from(list(PRECISIONS)), fill=st.sampled_from(["random", "extreme", "sparse"]),
       bias_kind=st.sampled_from(["zero", "small", "full"]),
       requant=st.one_of(st.tuples(st.integers(0, I32_MAX), st.integers(-31, 30)),
                         st.floats(1e-6, 2.0).map(nm.quantize_multiplier),
                         st.just("per channel")),
       zp=st.integers(-128, 127), q=st.tuples(st.integers(-128, 127), st.integers(-128, 127)),
       use_lut=st.booleans(), device=st.sampled_from(DEVICES))
def test_gemm_bit_exact(seed, m, k, n, prec, fill, bias_kind, requant, zp, q, use_lut, device):
    rng = np.random.default_rng(seed)
    a, w = operands(rng, m, k, n, *PRECISIONS[prec], fill)
    bias = {"zero": np.zeros(n, np.int64),
            "small": rng.integers(-(2 ** 16), 2 ** 16, n),
            "full": rng.integers(I32_MIN, I32_MAX, n, endpoint=True)}[bias_kind]
    if requant == "per channel":           # one multiplier and shift per output column
        mult, shift = rng.integers(0, I32_MAX, n, endpoint=True), rng.integers(-31, 31, n)
    else:
        mult, shift = requant
    qmin, qmax = min(q), max(q)
    lut = rng.integers(-128, 128, 256) if use_lut else None
    got = gemm_reference(a, w, bias, mult, shift, zp, qmin, qmax, lut=lut, device=device)
    want = golden(a, w, bias, mult, shift, zp, qmin, qmax, lut)
    assert got.dtype == np.int64 and got.shape == (m, n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", range(-31, 31))
def test_requantize_reference_edges_every_shift(device, shift):
    xs = np.array([I32_MIN, I32_MIN + 1, -(2 ** 30), -12345, -10, -6, -3, -2, -1, 0, 1, 2, 3, 10, 12345, 2 ** 30,
                   I32_MAX - 1, I32_MAX])
    for mult in (0, 1, 2 ** 30 - 1, 2 ** 30, 2 ** 30 + 1, 1518500250, I32_MAX):
        np.testing.assert_array_equal(requantize_reference(xs, mult, shift, device=device),
                                      nm.requantize(xs, mult, shift), err_msg=f"mult={mult}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(I32_MIN, I32_MAX), min_size=1, max_size=64), st.integers(0, I32_MAX),
       st.integers(-31, 30))
def test_requantize_reference_property(xs, mult, shift):
    np.testing.assert_array_equal(requantize_reference(xs, mult, shift), nm.requantize(np.array(xs), mult, shift))


@pytest.mark.parametrize("device", DEVICES)
def test_ties(device):
    # srdhm ties go toward +inf, rdbpot ties away from zero: -10 * 2^30/2^31 = -5, / 2 = -2.5 -> -3.
    np.testing.assert_array_equal(requantize_reference([-10, 10, -6, 6, -1, 1], 1 << 30, -1, device=device),
                                  [-3, 3, -2, 2, 0, 1])
    np.testing.assert_array_equal(requantize_reference([-1, 1, -3, 3], 1 << 30, 0, device=device), [0, 1, -1, 2])


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_wraps_like_int32(device):
    k = 140_000                                          # 16384 * K > 2^31: the 32-bit accumulator wraps
    a = np.full((1, k), -128)
    w = np.full((k, 2), -128)
    bias = np.array([0, I32_MAX])
    exact = 16384 * k
    assert exact > I32_MAX
    mult, shift = 1 << 30, -20                            # y = acc / 2^21
    got = gemm_reference(a, w, bias, mult, shift, 0, -128, 127, device=device)
    np.testing.assert_array_equal(got, golden(a, w, bias, mult, shift, 0, -128, 127))
    acc = nm.wrap_int32(nm.wrap_int32(exact) + bias)
    np.testing.assert_array_equal(got[0], np.clip(nm.requantize(acc, mult, shift), -128, 127))
    assert got[0, 0] == -128                             # wrapped to a negative accumulator


def test_lut_gather_and_clamp_layout():
    a, w = np.eye(4, dtype=np.int64) * np.array([-128, -1, 0, 127]), np.eye(4, dtype=np.int64)
    lut = np.arange(256)[::-1] - 128                     # lut[y + 128] = -1 - y
    got = gemm_reference(a, w, np.zeros(4), 2 ** 31 - 1, 0, 0, -128, 127, lut=lut)
    y = np.clip(nm.requantize(np.diag([-128, -1, 0, 127]), 2 ** 31 - 1, 0), -128, 127)
    np.testing.assert_array_equal(got, -1 - y)


def test_empty_k():
    got = gemm_reference(np.zeros((3, 0)), np.zeros((0, 2)), [5, -5], 1 << 30, 1, 1, -128, 127)
    np.testing.assert_array_equal(got, [[6, -4]] * 3)


def test_errors():
    a, w, b = np.ones((2, 3), np.int64), np.ones((3, 4), np.int64), np.zeros(4, np.int64)
    ok = dict(multiplier=1 << 30, shift=0, out_zp=0, qmin=-128, qmax=127)
    gemm_reference(a, w, b, **ok)
    bad = [
        ((a, np.ones((2, 4)), b), {}),                   # inner dims differ
        ((a, w, np.zeros(3)), {}),                       # bias shape
        ((a[0], w, b), {}),                              # a not 2-D
        ((a * 0.5, w, b), {}),                           # non-integer operands
        ((a, w, b + 2 ** 31), {}),                       # bias outside int32
        ((a, w, b), {"multiplier": -1}),
        ((a, w, b), {"multiplier": 2 ** 31}),
        ((a, w, b), {"shift": 31}),
        ((a, w, b), {"shift": -32}),
        ((a, w, b), {"qmin": 5, "qmax": 4}),
        ((a, w, b), {"lut": np.zeros(255)}),
        ((a, w, b), {"lut": np.zeros(256), "qmin": -129}),
        ((np.full((1, 3), 2 ** 27), np.full((3, 1), 2 ** 27), np.zeros(1)), {}),   # not exact in float64
    ]
    for args, override in bad:
        with pytest.raises(ValueError):
            gemm_reference(*args, **{**ok, **override})
    with pytest.raises(ValueError):
        float_requant_reference(a, w, b, 0.1, 0, -128, 127, precision="float16")
    with pytest.raises(ValueError):
        requantize_reference([2 ** 31], 1 << 30, 0)


# -- float-requant runtime agreement -------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 64), k=st.integers(1, 64), n=st.integers(1, 64),
       prec=st.sampled_from(list(PRECISIONS)), log_scale=st.floats(math.log(1e-5), math.log(0.5)),
       zp=st.integers(-128, 127), relu=st.booleans(), precision=st.sampled_from(["float64", "float32"]))
def test_float_requant_within_one_lsb(seed, m, k, n, prec, log_scale, zp, relu, precision):
    rng = np.random.default_rng(seed)
    a, w = operands(rng, m, k, n, *PRECISIONS[prec], "random")
    bias = rng.integers(-(2 ** 14), 2 ** 14, n)
    real_scale = math.exp(log_scale)
    mult, shift = nm.quantize_multiplier(real_scale)
    qmin, qmax = (zp, 127) if relu else (-128, 127)
    fixed = gemm_reference(a, w, bias, mult, shift, zp, qmin, qmax)
    flt = float_requant_reference(a, w, bias, real_scale, zp, qmin, qmax, precision=precision)
    assert np.max(np.abs(fixed - flt)) <= 1
    # They differ only near ties. The fixed-point path rounds twice (SRDHM to 2^-right, then RDBPOT), so
    # "near" means within 2^-right / 2 (+ slack for the scale approximation and float32) of a half.
    v = (a @ w + bias) * real_scale
    far = np.abs(v - np.floor(v) - 0.5) > 0.5 * 2.0 ** min(shift, 0) + 1e-4
    np.testing.assert_array_equal(fixed[far], flt[far])


def test_float_requant_matches_hand_computation():
    a = np.array([[6, -6, 10, -10, 14]])
    w = np.eye(5, dtype=np.int64)
    got = float_requant_reference(a, w, np.zeros(5), 0.25, 0, -128, 127)
    np.testing.assert_array_equal(got, [[2, -2, 2, -2, 4]])   # half to even: 1.5, -1.5, 2.5, -2.5, 3.5
    assert nm.quantize_multiplier(0.25) == (1 << 30, -1)      # exact SRDHM (x/2), tie rounded by RDBPOT
    fixed = gemm_reference(a, w, np.zeros(5), 1 << 30, -1, 0, -128, 127)
    np.testing.assert_array_equal(fixed, [[2, -2, 3, -3, 4]])  # half away from zero
    assert np.max(np.abs(got - fixed)) == 1
    # scale 0.5 = (2^30, shift 0): the tie is rounded by SRDHM alone, i.e. toward +inf.
    fixed = gemm_reference(a // 2, w, np.zeros(5), 1 << 30, 0, 0, -128, 127)
    np.testing.assert_array_equal(fixed, [[2, -1, 3, -2, 4]])


# -- plumbing ------------------------------------------------------------------------------------
def test_device_selection_and_timing():
    assert reference_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert reference_device("cpu") == "cpu"
    a, w = np.ones((8, 8), np.int64), np.ones((8, 8), np.int64)
    t = time_gemm(a, w, np.zeros(8), 1 << 30, 0, 0, -128, 127, repeat=2, warmup=1)
    assert 0 < t < 10


def test_import_does_not_import_torch():
    code = "import sys, opennpu.golden.reference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
