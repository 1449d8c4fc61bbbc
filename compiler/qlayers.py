"""The integer layer list a quantized model becomes: what the NPU runs, independent of ONNX.

A ``QuantModel`` is a chain ``input -> layer 0 -> layer 1 -> ... -> output``, or a graph of them where
layers name their ``source`` (a residual block: a layer may read the model input or any earlier layer's
output, and a ``QAdd`` adds two of them, as TFLite's ADD does). Every tensor between
layers is int8 on a (scale, zero point) grid; uint8 tensors of the source model are shifted by -128 on
import (same scale, zero point - 128), which changes no real value. Each ``QLayer`` is one GEMM
``Y = act(requant(A @ W + bias))`` with

* ``w``: K x N int8 values, symmetric (weight zero points are folded in on import);
* ``bias``: N int32 values with the activation zero point folded in: ``bias' = bias - zp_a * sum_k w``,
  so the array multiplies plain signed activations;
* ``multiplier``, ``shift``: ``numerics.quantize_multiplier(s_a * s_w / s_mid)``: ints, or N values each
  for per-channel weight scales (the NPU loads them per output tile with ``LOAD_QUANT``);
* ``out_zp``, ``qmin``, ``qmax``: zero point and clamp of the requantized value (ReLU/ReLU6/Clip);
* ``lut``: optional 256-entry table applied after the clamp (sigmoid, tanh, GELU, any unary chain).

Conv2d layers carry a ``ConvGeom``: the host turns their NCHW input into im2col rows (one per output
position, K ordered (channel, kernel row, kernel column), padding with the input zero point, which the
folded bias turns into a real zero). ``QuantModel.reference`` runs the chain with the golden numerics in
plain numpy: the NPU must reproduce it bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opennpu.golden import numerics

from .graph import AddAttrs
from .schedule import requant_params

__all__ = ["ConvGeom", "QLayer", "QAdd", "TensorSpec", "QuantModel", "quantize_like_onnx",
           "dequantize_like_onnx", "int8_parts"]


def quantize_like_onnx(x, scale: float, zero_point: int) -> np.ndarray:
    """ONNX ``QuantizeLinear`` to int8 as onnxruntime computes it: float32 ``x / scale``, round half to
    even, add the zero point, saturate. ``scale`` / ``zero_point`` may be arrays broadcasting against x."""
    q = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32)).astype(np.int64) + zero_point
    return np.clip(q, -128, 127)


def dequantize_like_onnx(q, scale: float, zero_point: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` as onnxruntime computes it: ``(q - zero_point) * scale`` in float32.
    ``scale`` / ``zero_point`` may be arrays broadcasting against q."""
    return (np.asarray(q, np.int64) - zero_point).astype(np.float32) * np.asarray(scale, np.float32)


def int8_parts(w: np.ndarray) -> list:
    """Integer weights -> the fewest p int8 arrays that sum to them: part i is floor((w + i) / p)
    (Hermite's identity: the parts sum to w and differ by at most one), p = 1 when w fits int8; -255..255
    takes 2 parts, 3 only where 255 occurs."""
    p = 1
    while -(-int(w.max()) // p) > 127 or int(w.min()) // p < -128:
        p += 1
    return [(w + i) // p for i in range(p)]


def _channels_first(y: np.ndarray, batch: int, shape: tuple) -> np.ndarray:
    """Rows (B * H * W, C) in (sample, position) order -> (B, C, H, W) for per-sample ``shape`` (C, H, W)."""
    c = shape[0]
    return np.asarray(y, np.int64).reshape(batch, -1, c).transpose(0, 2, 1).reshape(batch, *shape)


@dataclass(frozen=True)
class ConvGeom:
    """2-D convolution geometry (NCHW): input (C, H, W), kernel, stride, pads (top, left, bottom,
    right), dilation, groups; output positions (Ho, Wo)."""
    in_shape: tuple
    kernel: tuple
    stride: tuple
    pads: tuple
    dilation: tuple
    groups: int

    @property
    def out_hw(self) -> tuple:
        (_, h, w), (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = (self.in_shape, self.kernel, self.stride,
                                                                     self.pads, self.dilation)
        return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)

    @property
    def positions(self) -> int:
        ho, wo = self.out_hw
        return ho * wo

    def im2col(self, x: np.ndarray, pad_value: int) -> np.ndarray:
        """(B, C, H, W) ints -> (B * Ho * Wo, C * kh * kw) rows in (sample, position) order."""
        b, c = x.shape[:2]
        (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = self.kernel, self.stride, self.pads, self.dilation
        ho, wo = self.out_hw
        xp = np.full((b, c, x.shape[2] + pt + pb, x.shape[3] + pl + pr), pad_value, np.int64)
        xp[:, :, pt:pt + x.shape[2], pl:pl + x.shape[3]] = x
        cols = np.empty((b, ho, wo, c, kh, kw), np.int64)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, :, i, j] = xp[:, :, i * dh:i * dh + sh * ho:sh,
                                            j * dw:j * dw + sw * wo:sw].transpose(0, 2, 3, 1)
        return cols.reshape(b * ho * wo, c * kh * kw)


@dataclass
class QLayer:
    """One integer GEMM layer (see the module docstring; ``raw``: its output is the int32 sum itself, which
    the NPU stores from the accumulator SRAM and the host adds the bias to). ``in_shape`` / ``out_shape`` are per-sample
    logical shapes: ``(K,)`` / ``(N,)`` for MatMul and Gemm, ``(C, H, W)`` / ``(N, Ho, Wo)`` for Conv.
    ``in_q`` / ``out_q`` are the (scale, zero point) of the input and of the final output (after the LUT)."""
    name: str
    op: str
    w: np.ndarray
    bias: np.ndarray
    multiplier: int | np.ndarray
    shift: int | np.ndarray
    out_zp: int
    qmin: int
    qmax: int
    lut: np.ndarray | None
    in_shape: tuple
    in_q: tuple
    out_q: tuple
    conv: ConvGeom | None = None
    single_round: bool = False     # TFLite's single-rounding requantization (CONFIG single_round)
    raw: bool = False              # the output is the int32 sum A @ W + bias (no requantization, no LUT)
    source: int | None = None      # the layer whose output it reads (-1: the model input); None: the one before

    @property
    def sources(self) -> tuple:
        """What the layer reads, as ``QuantModel`` indices relative to it (see ``QuantModel.sources``)."""
        return (self.source,)

    def __post_init__(self):
        self.w = np.asarray(self.w, np.int64)
        self.bias = np.asarray(self.bias, np.int64)
        k, n = self.w.shape
        if self.w.min() < -128 or self.w.max() > 127:
            raise ValueError(f"layer {self.name}: weights must be int8")
        if self.bias.shape != (n,) or self.bias.min() < numerics.INT32_MIN or self.bias.max() > numerics.INT32_MAX:
            raise ValueError(f"layer {self.name}: bias must be {n} int32 values")
        expected_k = int(np.prod(self.in_shape)) if self.conv is None else \
            self.in_shape[0] * self.conv.kernel[0] * self.conv.kernel[1]
        if k != expected_k:
            raise ValueError(f"layer {self.name}: weights have K={k}, input {self.in_shape} needs {expected_k}")
        self.multiplier, self.shift = requant_params(self.multiplier, self.shift, n)

    @property
    def k(self) -> int:
        return self.w.shape[0]

    @property
    def n(self) -> int:
        return self.w.shape[1]

    @property
    def positions(self) -> int:
        """GEMM rows per sample: output positions of a conv, 1 for MatMul/Gemm."""
        return 1 if self.conv is None else self.conv.positions

    @property
    def out_shape(self) -> tuple:
        return (self.n,) if self.conv is None else (self.n, *self.conv.out_hw)

    def matrix(self, x: np.ndarray) -> np.ndarray:
        """Input tensor (B, *in_shape) -> GEMM operand A (B * positions, K), rows in (sample, position)
        order."""
        x = np.asarray(x, np.int64)
        if self.conv is None:
            return x.reshape(x.shape[0], -1)
        return self.conv.im2col(x.reshape(x.shape[0], *self.in_shape), self.in_q[1])

    def tensor(self, y: np.ndarray, batch: int) -> np.ndarray:
        """GEMM result (B * positions, N) in (sample, position) order -> output tensor (B, *out_shape)."""
        return np.asarray(y, np.int64).reshape(batch, self.n) if self.conv is None else \
            _channels_first(y, batch, self.out_shape)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The layer with the golden numerics, no tiling: (B, *in_shape) -> (B, *out_shape)."""
        acc = numerics.wrap_int32(self.matrix(x) @ self.w)
        if self.raw:
            return self.tensor(numerics.wrap_int32(acc + self.bias), len(x))
        y = numerics.activation_unit(acc, self.bias, self.multiplier, self.shift, self.out_zp, self.qmin,
                                     self.qmax, self.lut, self.single_round)
        return self.tensor(y, len(x))


@dataclass
class QAdd:
    """TFLite's int8 ADD of two tensors of one per-sample shape ``(C, H, W)`` (``attrs``: the ``AddAttrs`` of
    the graph node, ``sources[0]`` its first input, ``sources[1]`` its second; indices as ``QLayer.source``,
    None meaning the layer before). The NPU runs it through elementwise ``ACTIVATE``s
    (``compiler/elementwise.py``); ``out_q`` is its output's (scale, zero point)."""
    name: str
    attrs: AddAttrs
    shape: tuple
    sources: tuple
    out_q: tuple
    op: str = "add"
    raw = False
    lut = None
    conv = None
    single_round = False

    @property
    def in_shape(self) -> tuple:
        return self.shape

    @property
    def out_shape(self) -> tuple:
        return self.shape

    @property
    def positions(self) -> int:
        return int(np.prod(self.shape[1:]))

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int:
        return 0

    def tensor(self, y: np.ndarray, batch: int) -> np.ndarray:
        """Rows (B * positions, C) in (sample, position) order -> (B, C, H, W)."""
        return _channels_first(y, batch, self.shape)

    def reference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """TFLite's ADD as the host kernel computes it (its reference: the NPU must equal it)."""
        from .host_kernels import add
        return add(np.asarray(a, np.int64), np.asarray(b, np.int64), self.attrs)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, per-sample shape, batch size (None: any), element type as in the
    source model (``"float32"``, ``"int8"``, ``"uint8"``, or ``"int32"`` for a raw accumulator output) and
    the int8 grid (scale, zero point) of the quantized tensor behind it (``None``, ``None``: a float32 tensor
    with no grid, as a dynamically quantized graph takes and returns). ``axis``: a per-sample axis along
    which ``scale`` and ``zero_point`` are tuples, one entry per index (a per-axis grid, which only a
    model that is one ``QuantizeLinear`` / ``DequantizeLinear`` has: the host applies it); ``None``: per
    tensor."""
    name: str
    shape: tuple
    batch: int | None
    dtype: str
    scale: float | tuple
    zero_point: int | tuple
    axis: int | None = None

    def grid(self) -> tuple:
        """(scale, zero point), as arrays that broadcast against a batched tensor when per axis."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = (-1, *[1] * (len(self.shape) - self.axis - 1))
        return (np.asarray(self.scale, np.float32).reshape(shape),
                np.asarray(self.zero_point, np.int64).reshape(shape))

    def check(self, x) -> np.ndarray:
        """An input as an array, refused with ``ValueError`` unless its shape and kind match."""
        x = np.asarray(x)
        batch = (self.batch,) if self.batch is not None else (x.shape[0] if x.ndim else -1,)
        if x.shape != (*batch, *self.shape):
            want = ("N" if self.batch is None else self.batch, *self.shape)
            raise ValueError(f"input {self.name!r} must have shape ({', '.join(map(str, want))}), got {x.shape}")
        if self.dtype == "float32" and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"input {self.name!r} must be floating point, got {x.dtype}")
        if self.dtype == "float32" and not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))
            raise ValueError(f"input {self.name!r} holds {len(bad)} NaN or infinite value(s), the first at "
                             f"index {tuple(int(i) for i in bad[0])}: they have no int8 value")
        if self.dtype != "float32" and x.dtype != np.dtype(self.dtype):
            raise ValueError(f"input {self.name!r} must be {self.dtype}, got {x.dtype}")
        return x

    def quantize(self, x) -> np.ndarray:
        """A checked input -> its int8-grid values (int64, same shape)."""
        x = self.check(x)
        if self.scale is None:
            return x.astype(np.float32)
        if self.dtype == "float32":
            return quantize_like_onnx(x, *self.grid())
        return x.astype(np.int64) - (128 if self.dtype == "uint8" else 0)

    def value(self, q: np.ndarray) -> np.ndarray:
        """int8-grid values of an output -> the output as the source model defines it: float32
        ``(q - zp) * scale`` after ``DequantizeLinear``, else the int8/uint8 values (a float32 output
        without a grid: itself)."""
        if self.scale is None:
            return np.asarray(q, np.float32).reshape(len(q), *self.shape)
        q = np.asarray(q, np.int64).reshape(len(q), *self.shape)
        if self.dtype == "float32":
            return dequantize_like_onnx(q, *self.grid())
        return (q + (128 if self.dtype == "uint8" else 0)).astype(self.dtype)

    def lsb(self, y) -> np.ndarray:
        """An output (as ``value`` or onnxruntime returns it) -> int8 grid values, so that two outputs
        can be compared in LSBs."""
        y = np.asarray(y)
        if self.scale is None:
            raise ValueError(f"output {self.name!r} is float32 without a grid (dynamic quantization): compare it "
                             f"as floats")
        if self.dtype == "float32":
            return quantize_like_onnx(y, *self.grid())
        return y.astype(np.int64) - (128 if self.dtype == "uint8" else 0)


@dataclass
class QuantModel:
    """A chain of ``QLayer``s between a quantized input and output (see the module docstring)."""
    layers: list
    input: TensorSpec
    output: TensorSpec

    def __post_init__(self):
        if not self.layers:
            raise ValueError("the model has no GEMM/Conv layer for the NPU to run")
        if isinstance(self.layers[0], QAdd):
            raise ValueError("the first layer must be a GEMM/Conv layer, not an ADD")
        if any(layer.raw for layer in self.layers[:-1]):
            raise ValueError("only the last layer may write int32 sums (raw): the next one reads int8")
        for k, layer in enumerate(self.layers):
            for src in self.sources(k):
                if not -1 <= src < k:
                    raise ValueError(f"layer {layer.name} reads layer {src}: only the input (-1) or an earlier one")
                given = self.layers[src].out_shape if src >= 0 else self.layers[0].in_shape
                if int(np.prod(given)) != int(np.prod(layer.in_shape)) or (isinstance(layer, QAdd)
                                                                            and tuple(given) != layer.shape):
                    raise ValueError(f"layer {layer.name} takes {layer.in_shape}, its source gives {given}")

    def sources(self, k: int) -> tuple:
        """The layers that layer ``k`` reads (-1: the model input)."""
        return tuple(k - 1 if src is None else src for src in self.layers[k].sources)

    @property
    def is_graph(self) -> bool:
        """Some layer reads something other than the layer before it (a residual block)."""
        return any(self.sources(k) != (k - 1,) for k in range(1, len(self.layers)))

    def check_input(self, x) -> np.ndarray:
        """The input as an array, refused with ``ValueError`` unless its shape and kind match."""
        return self.input.check(x)

    def quantize_input(self, x) -> np.ndarray:
        """Checked input -> int8 tensor (B, *layers[0].in_shape) on the input grid."""
        q = self.input.quantize(x)
        return q.reshape(len(q), *self.layers[0].in_shape)

    def output_value(self, q: np.ndarray) -> np.ndarray:
        """Last layer's int8 tensor -> the model output (``TensorSpec.value``)."""
        return self.output.value(q)

    def output_lsb(self, y) -> np.ndarray:
        """A model output -> int8 grid values (``TensorSpec.lsb``)."""
        return self.output.lsb(y)

    def reference(self, x) -> np.ndarray:
        """Run the chain with the golden numerics (no tiling); returns the last layer's int8 tensor."""
        values = {-1: self.quantize_input(x)}
        for k, layer in enumerate(self.layers):
            inputs = [values[src] for src in self.sources(k)]
            values[k] = layer.reference(*inputs) if isinstance(layer, QAdd) else \
                layer.reference(inputs[0].reshape(len(inputs[0]), *layer.in_shape))
        return values[len(self.layers) - 1]
