"""The ONNX importer's symbolic values (``onnx_import``): what each ONNX tensor is while the graph is
interpreted (a constant, the float input, an int8 tensor of the IR, its dequantized view, a float result
waiting for its ``QuantizeLinear``), the imported model (``OnnxGraph``), and small helpers."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import Graph, Window
from .qlayers import TensorSpec

#: Identity weight of the layer that adds a constant to a quantized tensor (``TensorOps._offset``).
OFFSET_GAIN = 64
_QUANT_TYPES = {"int8": 0, "uint8": 128}       # dtype -> shift onto the int8 grid


@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _DeqConst:
    """``DequantizeLinear`` of an initializer: integer values, scale and zero point arrays, and the axis
    (non-negative) along which per-axis scales and zero points run."""
    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    dtype: str
    axis: int = 1

    def real(self) -> np.ndarray:
        """The float32 values, ``(q - zp) * scale`` per axis, as onnxruntime dequantizes them."""
        ndim = self.q.ndim
        return (self.q.astype(np.float32) - along(self.zp, self.axis, ndim)) * along(self.scale, self.axis, ndim)


def along(values, axis: int, ndim: int) -> np.ndarray:
    """Per-axis parameters shaped to broadcast along ``axis`` of an ``ndim`` array (a scalar stays one)."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


@dataclass
class _FloatInput:
    shape: tuple


@dataclass
class _FloatT:
    """A float32 tensor of the IR (``onnx_dynamic``: between dynamic quantizations), in ONNX order."""
    name: str
    shape: tuple


@dataclass
class _DynQ:
    """One output of ``DynamicQuantizeLinear`` of the float tensor ``x``: ``part`` "y" (the uint8 values),
    "scale" or "zp" (its run-time grid), or "scales" (its scale times a constant ``factor``: ``Mul``)."""
    x: _FloatT
    part: str
    factor: np.ndarray | None = None


@dataclass
class _DynAcc:
    """``MatMulInteger`` of dynamically quantized operands, before its ``Cast`` (``cast``) and ``Mul`` by the
    scales: ``a`` (float32 tensor) times ``b`` (float32 tensor, or the IR name of int8/uint8 weights)."""
    name: str
    a: _FloatT
    b: _FloatT | str
    shape: tuple
    cast: bool = False


@dataclass
class _Q:
    """An int8-grid tensor of the IR: its IR ``name``, ONNX per-sample ``shape``, grid, ONNX element type,
    and whether the IR stores it channels-last (``cl``; else in ONNX order, any reshape of it)."""
    name: str
    shape: tuple
    scale: float
    zp: int | None
    dtype: str
    cl: bool = False


@dataclass
class _PerAxisQ:
    """The graph input on a per-axis grid (a model that is one QuantizeLinear or DequantizeLinear): no op
    may read it, only the graph output be it."""
    name: str
    shape: tuple
    dtype: str


@dataclass
class _Deq:
    """``DequantizeLinear`` of a ``_Q``, with unary functions applied since (name, f)."""
    q: _Q
    fns: tuple = ()

    @property
    def shape(self):
        return self.q.shape


@dataclass
class _Acc:
    """Float GEMM result ``acc_scale * (x @ w + bias)`` clamped to [lo, hi], before quantization: the IR
    ``op`` and its input ``x`` as the op reads it, weights in the IR layout, ``acc_scale`` a float or one
    per output channel, the ONNX output ``shape``, the IR output shape and layout."""
    name: str
    op: str
    source: str
    x: _Q
    w: np.ndarray
    bias: np.ndarray | None
    acc_scale: float | np.ndarray
    window: Window | None
    shape: tuple
    ir_shape: tuple
    cl: bool
    lo: float = -np.inf
    hi: float = np.inf


@dataclass
class _Float:
    """The float result of an add, pool, softmax or concatenation of quantized tensors, before its
    ``QuantizeLinear`` (``axis``: the per-sample axis of a concatenation)."""
    kind: str
    name: str
    source: str
    inputs: tuple
    shape: tuple
    window: Window | None = None
    count_pads: bool = False
    axis: int = 0
    params: tuple = ()
    lo: float = -np.inf
    hi: float = np.inf


@dataclass
class OnnxGraph:
    """An imported model: the IR ``graph``, the ONNX ``input`` / ``output`` specs (shape, type, grid) and,
    per IR node name, the ONNX op it came from."""
    graph: Graph
    input: TensorSpec
    output: TensorSpec
    sources: dict = field(default_factory=dict)

    def quantize_input(self, x) -> np.ndarray:
        """The model input (checked) -> the int8 graph input (float32 for a dynamically quantized graph),
        batch first."""
        q = self.input.quantize(x)
        tensor = self.graph.tensors[self.graph.inputs[0]]
        return q.reshape(len(q), *tensor.shape).astype(tensor.dtype)

    def reference(self, x) -> np.ndarray:
        """The int8-grid output of the host kernels (the integer reference every backend must equal; a
        float32 output of a dynamically quantized graph as it is)."""
        from .host_kernels import run_graph
        y = run_graph(self.graph, self.quantize_input(x))[0]
        return y if y.dtype == np.float32 else y.astype(np.int64)

    def run(self, x, config=None, backend="golden") -> tuple:
        """Run on the NPU (``graph_npu.run_on_npu``); returns (the output as the model defines it, the
        per-node records)."""
        from opennpu.config import NpuConfig

        from .graph_npu import run_on_npu
        outputs, records = run_on_npu(self.graph, self.quantize_input(x), config or NpuConfig(), backend)
        return self.output.value(outputs[0]), records


def _unique(existing, base: str) -> str:
    name, i = base, 1
    while name in existing:
        name, i = f"{base}:{i}", i + 1
    return name


def _pads(attrs: dict, spatial: tuple, kernel: tuple, strides: tuple, dil: tuple) -> list:
    """ONNX ``pads`` / ``auto_pad`` -> [begin..., end...] per spatial axis."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    n = len(spatial)
    if auto_pad == "NOTSET":
        return list(attrs.get("pads", (0,) * 2 * n))
    if auto_pad == "VALID":
        return [0] * 2 * n
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ValueError(f"auto_pad={auto_pad!r} is not supported")
    pads = [0] * 2 * n
    for axis, size in enumerate(spatial):
        out = -(-size // strides[axis])
        total = max(0, (out - 1) * strides[axis] + dil[axis] * (kernel[axis] - 1) + 1 - size)
        small, big = total // 2, total - total // 2
        pads[axis], pads[axis + n] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    return pads
