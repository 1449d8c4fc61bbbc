"""TFLite's prepare-time integer parameters, as its kernels derive them from float32 scales.

Each function mirrors the TFLite code named in its docstring: products and quotients of float32
scales in double precision, ``QuantizeMultiplier`` (``numerics.quantize_multiplier``, the same
frexp / round-half-away / shift < -31 -> 0 rule), activation bounds with float32 division and
``std::round``. These integers are what the host kernels and the NPU both use.
"""
from __future__ import annotations

import math

import numpy as np

from opennpu.golden import numerics

from .graph import AddAttrs, LutAttrs, MeanAttrs, MulAttrs, Requant, SoftmaxAttrs

__all__ = ["ACTIVATIONS", "activation_range", "conv_requant", "add_attrs", "softmax_attrs", "mean_attrs", "mul_attrs",
           "lut_attrs", "ADD_LEFT_SHIFT", "SOFTMAX_OUTPUT", "LOGISTIC_OUTPUT_SCALE", "LUT_FUNCTIONS"]

#: TFLite ActivationFunctionType values the kernels fuse as a clamp.
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
#: ADD's headroom for int8 inputs (``data->left_shift = 20``).
ADD_LEFT_SHIFT = 20
#: The int8 softmax output grid TFLite requires: (scale, zero point).
SOFTMAX_OUTPUT = (1.0 / 256, -128)
#: The int8 logistic output scale LiteRT's reference kernel requires (any zero point).
LOGISTIC_OUTPUT_SCALE = 1.0 / 256
_SOFTMAX_DIFF_INTEGER_BITS = 5


def _f64(x) -> float:
    """A float32 value as the double C++ gets from ``static_cast<double>``."""
    return float(np.float32(x))


def _quantize_f32(value: float, scale: float, zero_point: int) -> int:
    """``zero_point + (int)TfLiteRound(value / scale)`` with float32 division."""
    q = float(np.float32(value) / np.float32(scale))
    return zero_point + int(math.copysign(math.floor(abs(q) + 0.5), q))


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized`` for int8 outputs -> (qmin, qmax)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"fused activation {activation} is not supported "
                         f"({', '.join(ACTIVATIONS.values())})")
    name, lo, hi = ACTIVATIONS[activation], -128, 127
    if name == "RELU":
        return max(lo, _quantize_f32(0.0, scale, zero_point)), hi
    if name == "RELU6":
        return max(lo, _quantize_f32(0.0, scale, zero_point)), min(hi, _quantize_f32(6.0, scale, zero_point))
    if name == "RELU_N1_TO_1":
        return max(lo, _quantize_f32(-1.0, scale, zero_point)), min(hi, _quantize_f32(1.0, scale, zero_point))
    return lo, hi


def conv_requant(in_scale: float, w_scales, out_scale: float, out_zp: int, activation: int,
                 rounding: str = "double") -> Requant:
    """``PopulateConvolutionQuantizationParams`` / ``GetQuantizedConvolutionMultipler``: per channel
    ``QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))``, plus the activation clamp;
    ``rounding`` as ``Requant`` defines it."""
    pairs = [numerics.quantize_multiplier(_f64(in_scale) * _f64(s) / _f64(out_scale)) for s in w_scales]
    qmin, qmax = activation_range(activation, out_scale, out_zp)
    return Requant(tuple(m for m, _ in pairs), tuple(s for _, s in pairs), int(out_zp), qmin, qmax, rounding)


def _smaller_than_one(real: float, what: str) -> tuple[int, int]:
    """``QuantizeMultiplierSmallerThanOneExp``: real in (0, 1) -> (M0, shift <= 0)."""
    if not 0 < real < 1:
        raise ValueError(f"{what} {real!r} must lie in (0, 1), as TFLite requires")
    return numerics.quantize_multiplier(real)


def add_attrs(in_q: tuple, out_q: tuple, activation: int) -> AddAttrs:
    """ADD's ``Prepare`` for int8: ``in_q`` ((s1, zp1), (s2, zp2)), ``out_q`` (s, zp)."""
    (s1, z1), (s2, z2) = in_q
    out_scale, out_zp = out_q
    twice_max_input_scale = 2 * _f64(max(np.float32(s1), np.float32(s2)))
    inputs = [_smaller_than_one(_f64(s) / twice_max_input_scale, "ADD input multiplier") for s in (s1, s2)]
    out_m, out_shift = _smaller_than_one(
        twice_max_input_scale / ((1 << ADD_LEFT_SHIFT) * _f64(out_scale)), "ADD output multiplier")
    qmin, qmax = activation_range(activation, out_scale, out_zp)
    return AddAttrs((int(z1), int(z2)), tuple(m for m, _ in inputs), tuple(s for _, s in inputs), ADD_LEFT_SHIFT,
                    out_m, out_shift, int(out_zp), qmin, qmax)


def softmax_attrs(beta: float, in_scale: float) -> SoftmaxAttrs:
    """``PreprocessSoftmaxScaling`` (5 integer bits) and ``CalculateInputRadius`` for int8 softmax."""
    real = min(_f64(beta) * _f64(in_scale) * (1 << (31 - _SOFTMAX_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if real <= 1:
        raise ValueError(f"softmax beta * input scale * 2^26 = {real!r} must exceed 1, as TFLite requires")
    multiplier, left_shift = numerics.quantize_multiplier(real)
    radius = math.floor(((1 << _SOFTMAX_DIFF_INTEGER_BITS) - 1) * (1 << (31 - _SOFTMAX_DIFF_INTEGER_BITS))
                        / (1 << left_shift))
    return SoftmaxAttrs(multiplier, left_shift, -radius)


def mean_attrs(axes: tuple, keep_dims: bool, count: int, in_q: tuple, out_q: tuple) -> MeanAttrs:
    """MEAN over ``count`` values per output: ``PrepareMeanOrSum``'s ``QuantizeMultiplier(double(s_in) /
    double(s_out))``, then ``QuantizedMeanOrSum``'s folding of 1/count: a left shift of
    min(floor(log2 count), 32, 31 + shift) bits, the multiplier ``(M0 << bits) // count``, shift - bits."""
    (in_scale, in_zp), (out_scale, out_zp) = in_q, out_q
    multiplier, shift = numerics.quantize_multiplier(_f64(in_scale) / _f64(out_scale))
    bits = min(count.bit_length() - 1, 32, 31 + shift)
    return MeanAttrs(tuple(axes), bool(keep_dims), int(in_zp), (multiplier << bits) // count, shift - bits,
                     int(out_zp))


def mul_attrs(in_q: tuple, out_q: tuple, activation: int) -> MulAttrs:
    """MUL's ``Prepare`` for int8: ``QuantizeMultiplier(s1 * s2 / s_out)``, the product and quotient in
    float32 as the C++ computes them, and the activation clamp."""
    (s1, z1), (s2, z2) = in_q
    out_scale, out_zp = out_q
    multiplier, shift = numerics.quantize_multiplier(float(np.float32(s1) * np.float32(s2) / np.float32(out_scale)))
    qmin, qmax = activation_range(activation, out_scale, out_zp)
    return MulAttrs((int(z1), int(z2)), multiplier, shift, int(out_zp), qmin, qmax)


def _logistic(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x.astype(np.float64)).astype(np.float32))


def _tanh(x):
    return np.tanh(x.astype(np.float64)).astype(np.float32)


#: the float functions of LOGISTIC and TANH, float32 in and out
LUT_FUNCTIONS = {"logistic": _logistic, "tanh": _tanh}


def lut_attrs(function: str, in_q: tuple, out_q: tuple) -> LutAttrs:
    """``LUTPopulate<int8_t>`` (the int8 LOGISTIC / TANH of LiteRT's reference kernels): for each q in
    -128..127, ``s_in * (q - zp_in)`` in float32, the function in float32, times the float32 ``1 / s_out``,
    rounded half away from zero, plus ``zp_out``, clamped to int8. The C++ calls libm's ``expf`` /
    ``tanhf``; here exp and tanh are computed in double and rounded to float32 (the correctly rounded
    float32 result)."""
    (in_scale, in_zp), (out_scale, out_zp) = in_q, out_q
    q = np.arange(-128, 128)
    with np.errstate(over="ignore"):        # expf overflows to inf for large inputs, and so does this
        y = LUT_FUNCTIONS[function](np.float32(in_scale) * (q - in_zp).astype(np.float32))
    rescaled = (y * (np.float32(1) / np.float32(out_scale))).astype(np.float64)      # exact
    rounded = np.sign(rescaled) * np.floor(np.abs(rescaled) + 0.5)
    return LutAttrs(tuple(int(v) for v in np.clip(rounded.astype(np.int64) + out_zp, -128, 127)))
