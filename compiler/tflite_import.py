"""Import an int8 TFLite model (flatbuffer, read with the ``tflite`` package) into a graph IR ``Graph``.

Supported builtins: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MAX_POOL_2D,
RESHAPE, SOFTMAX, with fused NONE / RELU / RELU6 / RELU_N1_TO_1, SAME or VALID padding, any strides and
dilations; PAD / PADV2 (constant paddings, not of the batch axis), MEAN (constant axes, not the batch),
CONCATENATION (along a non-batch axis, all inputs on the output's grid, no fused activation: what
LiteRT's int8 kernel accepts), MUL (fused clamp), LOGISTIC and TANH (LiteRT's reference int8 kernels
are 256-entry tables built in float32, ``tflite_params.lut_attrs``). Activations must be int8 with a
per-tensor grid and the batch as first axis (size 1 in the file; the graph runs any batch); weights
symmetric int8, per-tensor or per-channel; biases int32.

Reading happens in two steps: ``_read_flatbuffer`` copies what the importer needs out of the buffer
into plain Python values (any failure there means the file is truncated or corrupt:
``TFLiteFormatError``), then ``_Builder`` checks the model and derives the integer op parameters with
``tflite_params``. LiteRT's reference FULLY_CONNECTED requantizes with a single rounding, unlike its
convolutions (measured against LiteRT 2.3: ``tests/test_tflite.py``), so its ``Requant`` says
``rounding="single"``. Errors are one line, all ``ValueError`` subclasses:

* ``TFLiteFormatError``: not a TFLite flatbuffer, truncated or corrupt;
* ``NotQuantizedError``: float tensors (the model, or its input/output, is not int8-quantized);
* ``UnsupportedOpError``: an op with no host kernel (and no NPU mapping), named with its node.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import tflite_params
from .graph import ConcatAttrs, ConvAttrs, FullyConnectedAttrs, Graph, Node, PadAttrs, PoolAttrs, QTensor, Window

__all__ = ["import_tflite", "TFLiteFormatError", "NotQuantizedError", "UnsupportedOpError", "SUPPORTED_OPS"]


class TFLiteFormatError(ValueError):
    """The file is not a readable TFLite flatbuffer (wrong identifier, truncated, corrupt)."""


class NotQuantizedError(ValueError):
    """The model computes in floating point."""


class UnsupportedOpError(ValueError):
    """The model uses an op that neither the host kernels nor the NPU implement."""


HOW_TO_QUANTIZE = ("convert it to a full-integer int8 model with the TFLite converter: "
                   "converter.optimizations = [tf.lite.Optimize.DEFAULT], converter.representative_dataset = "
                   "<calibration samples>, converter.target_spec.supported_ops = "
                   "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], converter.inference_input_type = "
                   "converter.inference_output_type = tf.int8")

#: TFLite builtin -> graph IR op
SUPPORTED_OPS = {"CONV_2D": "conv2d", "DEPTHWISE_CONV_2D": "depthwise_conv2d", "FULLY_CONNECTED": "fully_connected",
                 "ADD": "add", "AVERAGE_POOL_2D": "average_pool2d", "MAX_POOL_2D": "max_pool2d",
                 "RESHAPE": "reshape", "SOFTMAX": "softmax", "PAD": "pad", "PADV2": "pad", "MEAN": "mean",
                 "CONCATENATION": "concatenation", "MUL": "mul", "LOGISTIC": "logistic", "TANH": "tanh"}
#: builtin -> (options table, the fields the importer reads)
_OPTIONS = {
    "CONV_2D": ("Conv2DOptions", ("Padding", "StrideW", "StrideH", "FusedActivationFunction", "DilationWFactor",
                                  "DilationHFactor")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", ("Padding", "StrideW", "StrideH", "FusedActivationFunction",
                                                     "DilationWFactor", "DilationHFactor")),
    "FULLY_CONNECTED": ("FullyConnectedOptions", ("FusedActivationFunction", "WeightsFormat", "KeepNumDims")),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "AVERAGE_POOL_2D": ("Pool2DOptions", ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight",
                                          "FusedActivationFunction")),
    "MAX_POOL_2D": ("Pool2DOptions", ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight",
                                      "FusedActivationFunction")),
    "RESHAPE": ("ReshapeOptions", ()),
    "SOFTMAX": ("SoftmaxOptions", ("Beta",)),
    "MEAN": ("ReducerOptions", ("KeepDims",)),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "MUL": ("MulOptions", ("FusedActivationFunction",)),
}
_PADDING = {0: "SAME", 1: "VALID"}
_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8, "INT64": np.int64,
           "INT16": np.int16, "INT8": np.int8, "FLOAT64": np.float64, "BOOL": np.bool_}


# -- step 1: the flatbuffer as plain values ---------------------------------------------------------
@dataclass
class _RawTensor:
    index: int
    name: str
    shape: tuple
    dtype: str                  # TensorType name, e.g. "INT8"
    data: np.ndarray | None     # constant values
    scale: tuple
    zero_point: tuple
    axis: int


@dataclass
class _RawOp:
    index: int
    code: str                   # builtin name, or "CUSTOM(name)"
    inputs: tuple
    outputs: tuple
    options: dict | None        # the _OPTIONS fields; None when the table is absent


def _checked(table):
    """``table`` (a generated flatbuffer table object), after checking that its vtable and inline
    fields lie inside the buffer, as the flatbuffers verifier does; ``IndexError`` otherwise."""
    buf, pos = table._tab.Bytes, table._tab.Pos
    if pos < 0 or pos + 4 > len(buf):
        raise IndexError(f"table at {pos} outside the {len(buf)}-byte file")
    vtable = pos - int.from_bytes(buf[pos:pos + 4], "little", signed=True)
    if vtable < 0 or vtable + 4 > len(buf):
        raise IndexError(f"vtable at {vtable} outside the {len(buf)}-byte file")
    vtable_size = int.from_bytes(buf[vtable:vtable + 2], "little")
    table_size = int.from_bytes(buf[vtable + 2:vtable + 4], "little")
    if vtable + vtable_size > len(buf) or pos + table_size > len(buf):
        raise IndexError(f"table at {pos} ({table_size} bytes) reaches past the end of the file")
    return table


def _enum_names(enum_class) -> dict:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def _buffer_bytes(buf: bytes, model, index: int) -> bytes:
    b = _checked(model.Buffers(index))
    if b.Offset() > 1:          # data stored after the flatbuffer (models over 2 GB)
        if b.Offset() + b.Size() > len(buf):
            raise IndexError(f"buffer {index} reaches past the end of the file")
        return buf[b.Offset():b.Offset() + b.Size()]
    return b.DataAsNumpy().tobytes() if b.DataLength() else b""


def _read_tensor(buf, model, t, index, type_names) -> _RawTensor:
    dtype = type_names.get(t.Type(), f"TYPE{t.Type()}")
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    data = None
    raw = _buffer_bytes(buf, model, t.Buffer()) if t.Buffer() < model.BuffersLength() else None
    if raw is None:
        raise IndexError(f"tensor {index} names buffer {t.Buffer()} of {model.BuffersLength()}")
    if raw:
        if dtype not in _DTYPES:
            raise ValueError(f"tensor {index} holds constant data of type {dtype}")
        data = np.frombuffer(raw, _DTYPES[dtype])
        if data.size != int(np.prod(shape)):
            raise ValueError(f"tensor {index}: {data.size} values for shape {shape}")
        data = data.reshape(shape)
    q = t.Quantization()
    q = None if q is None else _checked(q)
    scale = tuple(float(s) for s in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
    zps = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
    axis = q.QuantizedDimension() if q is not None else 0
    return _RawTensor(index, t.Name().decode("utf-8"), shape, dtype, data, scale, zps, axis)


def _read_options(tfl, op, code: str, option_names) -> dict | None:
    if code not in _OPTIONS:
        return None
    table_name, fields = _OPTIONS[code]
    table = op.BuiltinOptions()
    if table is None or option_names.get(op.BuiltinOptionsType()) != table_name:
        return None
    options = getattr(tfl, table_name)()
    options.Init(table.Bytes, table.Pos)
    _checked(options)
    return {field: getattr(options, field)() for field in fields}


def _read_flatbuffer(buf: bytes):
    """Everything the builder needs, as plain values: (tensors, ops, inputs, outputs, subgraph count)."""
    import tflite as tfl
    model = _checked(tfl.Model.GetRootAs(buf, 0))
    if model.Version() != 3:
        raise ValueError(f"schema version {model.Version()}, expected 3")
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraph")
    op_names, type_names = _enum_names(tfl.BuiltinOperator), _enum_names(tfl.TensorType)
    option_names = _enum_names(tfl.BuiltinOptions)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = _checked(model.OperatorCodes(i))
        value = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(value, f"BUILTIN{value}")
        codes.append(f"CUSTOM({oc.CustomCode().decode('utf-8', 'replace')})" if name == "CUSTOM" else name)
    g = _checked(model.Subgraphs(0))
    tensors = [_read_tensor(buf, model, _checked(g.Tensors(i)), i, type_names) for i in range(g.TensorsLength())]
    ops = []
    for i in range(g.OperatorsLength()):
        op = _checked(g.Operators(i))
        code = codes[op.OpcodeIndex()]
        ops.append(_RawOp(i, code, tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else (),
                          tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else (),
                          _read_options(tfl, op, code, option_names)))
    inputs = tuple(int(v) for v in g.InputsAsNumpy()) if g.InputsLength() else ()
    outputs = tuple(int(v) for v in g.OutputsAsNumpy()) if g.OutputsLength() else ()
    return tensors, ops, inputs, outputs, model.SubgraphsLength()


# -- step 2: checks and integer parameters -------------------------------------------------------------
def _window(padding: int, kernel, stride, dilation, in_hw, out_hw, where: str) -> Window:
    """TFLite's ``ComputePaddingHeightWidth``: output size from the padding type, then the top/left pad
    ``total // 2`` (the odd row/column goes bottom/right); a negative total means unreached rows."""
    if padding not in _PADDING:
        raise ValueError(f"{where}: padding type {padding} is not SAME or VALID")
    if min(*stride, *dilation, *kernel) < 1:
        raise ValueError(f"{where}: kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    pads, expected = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        effective = (k - 1) * d + 1
        out = (size + s - 1) // s if _PADDING[padding] == "SAME" else (size + s - effective) // s
        total = (out - 1) * s + effective - size
        pads.append((max(total, 0) // 2, total - max(total, 0) // 2))
        expected.append(out)
    if tuple(expected) != tuple(out_hw):
        raise ValueError(f"{where}: output is {tuple(out_hw)}, {_PADDING[padding]} padding gives {tuple(expected)}")
    (pt, pb), (pl, pr) = pads
    return Window(tuple(kernel), tuple(stride), tuple(dilation), (pt, pl, pb, pr))


class _Builder:
    def __init__(self, tensors, ops, inputs, outputs, subgraphs):
        if subgraphs != 1:
            raise UnsupportedOpError(f"the model has {subgraphs} subgraphs; control flow is not supported")
        self.raw, self.ops = tensors, ops
        self.names = self._unique_names(tensors)
        self.tensors: dict = {}
        self._check_quantized(inputs, outputs)
        for i in inputs:
            self._activation(i, "graph input")
        self.nodes = [self._node(op) for op in ops]
        self.graph = Graph(self.tensors, self.nodes, tuple(self.names[i] for i in inputs),
                           tuple(self.names[i] for i in outputs))

    @staticmethod
    def _unique_names(tensors) -> list:
        seen, names = set(), []
        for t in tensors:
            name = t.name if t.name and t.name not in seen else f"{t.name}#{t.index}"
            seen.add(name)
            names.append(name)
        return names

    def _check_quantized(self, inputs, outputs):
        used = {i for op in self.ops for i in (*op.inputs, *op.outputs) if i >= 0} | set(inputs) | set(outputs)
        for i in sorted(used):
            if i >= len(self.raw):
                raise TFLiteFormatError(f"tensor index {i} out of range ({len(self.raw)} tensors)")
            if self.raw[i].dtype in ("FLOAT32", "FLOAT16", "FLOAT64"):
                raise NotQuantizedError(f"the model is not quantized: tensor {self.names[i]!r} is "
                                        f"{self.raw[i].dtype.lower()}; {HOW_TO_QUANTIZE}")

    # -- tensors ---------------------------------------------------------------------------------
    def _activation(self, i: int, where: str) -> str:
        """An int8 per-tensor activation, registered with its per-sample shape; returns its name."""
        t, name = self.raw[i], self.names[i]
        if name in self.tensors:
            return name
        if t.data is not None:
            raise UnsupportedOpError(f"{where}: tensor {name!r} is a constant where an activation is expected")
        if t.dtype != "INT8":
            raise UnsupportedOpError(f"{where}: tensor {name!r} is {t.dtype.lower()}; only int8 activations "
                                     f"are supported ({HOW_TO_QUANTIZE})")
        if len(t.scale) != 1 or len(t.zero_point) != 1:
            raise UnsupportedOpError(f"{where}: activation {name!r} needs one scale and zero point, "
                                     f"got {len(t.scale)}")
        if not t.shape or t.shape[0] != 1:
            raise UnsupportedOpError(f"{where}: activation {name!r} of shape {t.shape} must have the batch "
                                     f"axis first, of size 1")
        self.tensors[name] = QTensor(name, t.shape[1:], "int8", t.scale, t.zero_point)
        return name

    def _const(self, i: int, dtype: str, where: str, what: str) -> str:
        t, name = self.raw[i], self.names[i]
        if t.data is None:
            raise UnsupportedOpError(f"{where}: {what} {name!r} must be a constant")
        if t.dtype != dtype:
            raise UnsupportedOpError(f"{where}: {what} {name!r} is {t.dtype.lower()}, expected {dtype.lower()}")
        self.tensors[name] = QTensor(name, t.shape, dtype.lower(), t.scale, t.zero_point, t.axis, t.data)
        return name

    def _weights(self, i: int, channels: int, axis: int, where: str) -> str:
        name = self._const(i, "INT8", where, "weights")
        t = self.raw[i]
        if len(t.scale) not in (1, channels) or (len(t.scale) > 1 and t.axis != axis):
            raise UnsupportedOpError(f"{where}: weights {name!r} have {len(t.scale)} scales along axis {t.axis}; "
                                     f"expected 1 or {channels} along axis {axis}")
        if any(t.zero_point):
            raise UnsupportedOpError(f"{where}: weights {name!r} have non-zero zero points; int8 TFLite "
                                     f"weights are symmetric")
        return name

    def _bias(self, i: int, channels: int, where: str):
        if i < 0:
            return None
        name = self._const(i, "INT32", where, "bias")
        if self.raw[i].data.shape != (channels,):
            raise UnsupportedOpError(f"{where}: bias {name!r} has shape {self.raw[i].data.shape}, "
                                     f"expected ({channels},)")
        return name

    # -- nodes -------------------------------------------------------------------------------------------
    def _node(self, op: _RawOp) -> Node:
        out_name = self.names[op.outputs[0]] if op.outputs and 0 <= op.outputs[0] < len(self.raw) else "?"
        where = f"{op.code} node {op.index} (output {out_name!r})"
        if op.code not in SUPPORTED_OPS:
            raise UnsupportedOpError(f"{where}: op {op.code} is not supported (no host kernel, no NPU mapping); "
                                     f"supported: {', '.join(SUPPORTED_OPS)}")
        if op.options is None and _OPTIONS.get(op.code, ("", ()))[1]:
            raise TFLiteFormatError(f"{where}: the {_OPTIONS[op.code][0]} table is missing")
        if len(op.outputs) != 1:
            raise UnsupportedOpError(f"{where}: expected one output, got {len(op.outputs)}")
        ins = [self._activation(op.inputs[0], where)]
        inputs, attrs = getattr(self, "_" + SUPPORTED_OPS[op.code])(op, ins, where)
        out = self._activation(op.outputs[0], where)
        return Node(SUPPORTED_OPS[op.code], out, tuple(inputs), out, attrs)

    def _q(self, name: str) -> tuple:
        t = self.tensors[name]
        return t.scale[0], t.zero_point[0]

    def _conv(self, op, ins, where, depthwise: bool):
        o = op.options
        x, out = self.tensors[ins[0]], self.raw[op.outputs[0]]
        if len(x.shape) != 3 or len(out.shape) != 4:
            raise UnsupportedOpError(f"{where}: input and output must be (1, H, W, C), got {x.shape} / {out.shape}")
        channels = out.shape[3]
        w = self._weights(op.inputs[1], channels, 3 if depthwise else 0, where)
        wt = self.raw[op.inputs[1]]
        if depthwise and (wt.shape[0] != 1 or wt.shape[3] != channels or channels % x.shape[2]):
            raise UnsupportedOpError(f"{where}: depthwise weights {wt.shape} do not fit input channels "
                                     f"{x.shape[2]} and output channels {channels}")
        if not depthwise and (wt.shape[0] != channels or wt.shape[3] != x.shape[2]):
            raise UnsupportedOpError(f"{where}: weights {wt.shape} do not fit input channels {x.shape[2]} and "
                                     f"output channels {channels}")
        bias = self._bias(op.inputs[2] if len(op.inputs) > 2 else -1, channels, where)
        if bias is None and not depthwise:
            raise UnsupportedOpError(f"{where}: an int8 CONV_2D needs a bias tensor (LiteRT refuses one without)")
        window = _window(o["Padding"], wt.shape[1:3], (o["StrideH"], o["StrideW"]),
                         (o["DilationHFactor"], o["DilationWFactor"]), x.shape[:2], out.shape[1:3], where)
        s_in, z_in = self._q(ins[0])
        requant = tflite_params.conv_requant(s_in, wt.scale, out.scale[0], out.zero_point[0],
                                             o["FusedActivationFunction"])
        return [ins[0], w, bias], ConvAttrs(window, int(z_in), requant)

    def _conv2d(self, op, ins, where):
        return self._conv(op, ins, where, depthwise=False)

    def _depthwise_conv2d(self, op, ins, where):
        return self._conv(op, ins, where, depthwise=True)

    def _fully_connected(self, op, ins, where):
        o = op.options
        if o["WeightsFormat"] != 0:
            raise UnsupportedOpError(f"{where}: shuffled weights format {o['WeightsFormat']} is not supported")
        wt, out = self.raw[op.inputs[1]], self.raw[op.outputs[0]]
        if len(wt.shape) != 2:
            raise UnsupportedOpError(f"{where}: weights must be (N, K), got {wt.shape}")
        n, k = wt.shape
        size = int(np.prod(self.tensors[ins[0]].shape))
        if size != k or int(np.prod(out.shape)) != n:
            raise UnsupportedOpError(f"{where}: input of {size} values per sample and output {out.shape} do not "
                                     f"fit weights (N={n}, K={k})")
        w = self._weights(op.inputs[1], n, 0, where)
        bias = self._bias(op.inputs[2] if len(op.inputs) > 2 else -1, n, where)
        s_in, z_in = self._q(ins[0])
        requant = tflite_params.conv_requant(s_in, wt.scale, out.scale[0], out.zero_point[0],
                                             o["FusedActivationFunction"], rounding="single")
        return [ins[0], w, bias], FullyConnectedAttrs(int(z_in), requant)

    def _second_operand(self, op, ins, where):
        """ADD / MUL: append the second input (an activation or an int8 per-tensor constant), after checking
        that the two broadcast to the output as numpy broadcasts the batched arrays."""
        if len(op.inputs) != 2:
            raise UnsupportedOpError(f"{where}: expected two inputs, got {len(op.inputs)}")
        second = self.raw[op.inputs[1]]
        if second.data is None:
            ins.append(self._activation(op.inputs[1], where))
        else:
            ins.append(self._const(op.inputs[1], "INT8", where, "constant operand"))
            if len(second.scale) != 1 or len(second.zero_point) != 1:
                raise UnsupportedOpError(f"{where}: constant operand {ins[1]!r} needs one scale and zero point")
        out = self.raw[op.outputs[0]]
        shapes = [(1, *self.tensors[ins[0]].shape), second.shape if second.data is not None else
                  (1, *self.tensors[ins[1]].shape)]
        if len(shapes[1]) > len(shapes[0]) or (second.data is None and len(shapes[1]) != len(shapes[0])):
            raise UnsupportedOpError(f"{where}: inputs of shapes {shapes} have different ranks; only a constant "
                                     f"second operand may have fewer axes")
        if tuple(np.broadcast_shapes(*shapes)) != out.shape:
            raise UnsupportedOpError(f"{where}: inputs {shapes} do not broadcast to the output {out.shape}")

    def _add(self, op, ins, where):
        self._second_operand(op, ins, where)
        out = self.raw[op.outputs[0]]
        attrs = tflite_params.add_attrs(tuple(self._q(n) for n in ins), (out.scale[0], out.zero_point[0]),
                                        op.options["FusedActivationFunction"])
        return ins, attrs

    def _mul(self, op, ins, where):
        self._second_operand(op, ins, where)
        out = self.raw[op.outputs[0]]
        return ins, tflite_params.mul_attrs(tuple(self._q(n) for n in ins), (out.scale[0], out.zero_point[0]),
                                            op.options["FusedActivationFunction"])

    def _pool(self, op, ins, where):
        o, x, out = op.options, self.tensors[ins[0]], self.raw[op.outputs[0]]
        if len(x.shape) != 3 or len(out.shape) != 4:
            raise UnsupportedOpError(f"{where}: input and output must be (1, H, W, C), got {x.shape} / {out.shape}")
        window = _window(o["Padding"], (o["FilterHeight"], o["FilterWidth"]), (o["StrideH"], o["StrideW"]), (1, 1),
                         x.shape[:2], out.shape[1:3], where)
        qmin, qmax = tflite_params.activation_range(o["FusedActivationFunction"], out.scale[0], out.zero_point[0])
        return ins, PoolAttrs(window, qmin, qmax)

    _average_pool2d = _pool
    _max_pool2d = _pool

    def _reshape(self, op, ins, where):
        out = self.raw[op.outputs[0]]
        if int(np.prod(out.shape)) != int(np.prod(self.raw[op.inputs[0]].shape)):
            raise UnsupportedOpError(f"{where}: output shape {out.shape} changes the number of values")
        return ins, None

    def _softmax(self, op, ins, where):
        out = self.raw[op.outputs[0]]
        scale, zp = tflite_params.SOFTMAX_OUTPUT
        if len(out.scale) != 1 or zp != out.zero_point[0] or abs(out.scale[0] - scale) > 0.001 * scale:
            raise UnsupportedOpError(f"{where}: int8 softmax output must have scale 1/256 and zero point -128, "
                                     f"got {out.scale} / {out.zero_point}")
        return ins, tflite_params.softmax_attrs(op.options["Beta"], self._q(ins[0])[0])

    def _const_ints(self, i: int, where: str, what: str) -> np.ndarray:
        """The values of a constant int32 / int64 operand that configures an op (paddings, axes)."""
        t = self.raw[i] if 0 <= i < len(self.raw) else None
        if t is None or t.data is None or t.dtype not in ("INT32", "INT64"):
            raise UnsupportedOpError(f"{where}: {what} must be a constant int32 tensor; computed {what} are not "
                                     f"supported")
        return t.data.astype(np.int64)

    def _pad(self, op, ins, where):
        if len(op.inputs) not in (2, 3):
            raise UnsupportedOpError(f"{where}: expected 2 or 3 inputs, got {len(op.inputs)}")
        shape, out = self.raw[op.inputs[0]].shape, self.raw[op.outputs[0]]
        pads = self._const_ints(op.inputs[1], where, "paddings")
        if pads.shape != (len(shape), 2) or pads.min() < 0 or pads[0].any():
            raise UnsupportedOpError(f"{where}: paddings {pads.tolist()} must be ({len(shape)}, 2), non-negative, "
                                     f"with none on the batch axis")
        if tuple(int(d + b + a) for d, (b, a) in zip(shape, pads)) != out.shape:
            raise UnsupportedOpError(f"{where}: output shape {out.shape} does not fit input {shape} padded by "
                                     f"{pads.tolist()}")
        value = out.zero_point[0]
        if len(op.inputs) == 3 and op.inputs[2] >= 0:
            c = self.raw[op.inputs[2]]
            if c.data is None or c.dtype != "INT8" or c.data.size != 1 or (c.scale, c.zero_point) != (
                    out.scale, out.zero_point):
                raise UnsupportedOpError(f"{where}: the pad value must be one int8 constant on the output's grid "
                                         f"(LiteRT requires it)")
            value = int(c.data.ravel()[0])
        return ins, PadAttrs(tuple((int(b), int(a)) for b, a in pads[1:]), int(value))

    def _mean(self, op, ins, where):
        if len(op.inputs) != 2:
            raise UnsupportedOpError(f"{where}: expected two inputs, got {len(op.inputs)}")
        shape, out = self.raw[op.inputs[0]].shape, self.raw[op.outputs[0]]
        given = self._const_ints(op.inputs[1], where, "axes").ravel().tolist()
        axes = sorted({a + len(shape) if a < 0 else a for a in given})
        if not axes or axes[0] < 1 or axes[-1] >= len(shape):
            raise UnsupportedOpError(f"{where}: axes {given} must name at least one axis of the rank-{len(shape)} "
                                     f"input other than the batch axis 0")
        keep = bool(op.options["KeepDims"])
        expected = tuple(1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes)
        if expected != out.shape:
            raise UnsupportedOpError(f"{where}: output shape {out.shape}, expected {expected}")
        count = int(np.prod([shape[a] for a in axes]))
        return ins, tflite_params.mean_attrs(tuple(a - 1 for a in axes), keep, count, self._q(ins[0]),
                                             (out.scale[0], out.zero_point[0]))

    def _concatenation(self, op, ins, where):
        o, out = op.options, self.raw[op.outputs[0]]
        if o["FusedActivationFunction"] != 0:
            raise UnsupportedOpError(f"{where}: fused activation {o['FusedActivationFunction']}; LiteRT's "
                                     f"concatenation accepts none")
        ins += [self._activation(i, where) for i in op.inputs[1:]]
        axis = o["Axis"] + len(out.shape) if o["Axis"] < 0 else o["Axis"]
        if not 1 <= axis < len(out.shape):
            raise UnsupportedOpError(f"{where}: axis {o['Axis']} is the batch axis or outside the rank-"
                                     f"{len(out.shape)} output")
        shapes = [(1, *self.tensors[n].shape) for n in ins]
        rest = {s[:axis] + s[axis + 1:] for s in shapes} | {out.shape[:axis] + out.shape[axis + 1:]}
        if len(rest) != 1 or any(len(s) != len(out.shape) for s in shapes) or \
                sum(s[axis] for s in shapes) != out.shape[axis]:
            raise UnsupportedOpError(f"{where}: inputs {shapes} do not concatenate along axis {axis} to {out.shape}")
        if any(self.tensors[n].scale != out.scale or self.tensors[n].zero_point != out.zero_point for n in ins):
            raise UnsupportedOpError(f"{where}: int8 concatenation needs every input on the output's grid "
                                     f"{out.scale} / {out.zero_point} (LiteRT does not rescale)")
        return ins, ConcatAttrs(axis - 1)

    def _lut(self, op, ins, where):
        out = self.raw[op.outputs[0]]
        if out.shape != self.raw[op.inputs[0]].shape:
            raise UnsupportedOpError(f"{where}: output shape {out.shape} differs from the input's")
        if op.code == "LOGISTIC" and out.scale[0] != tflite_params.LOGISTIC_OUTPUT_SCALE:
            raise UnsupportedOpError(f"{where}: int8 logistic output must have scale 1/256, got {out.scale[0]}")
        return ins, tflite_params.lut_attrs(SUPPORTED_OPS[op.code], self._q(ins[0]), (out.scale[0], out.zero_point[0]))

    _logistic = _lut
    _tanh = _lut


def _load(model) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "model"
    path = os.fspath(model)
    with open(path, "rb") as f:
        return f.read(), path


def import_tflite(model) -> Graph:
    """An int8 TFLite model (path or bytes) -> ``Graph``. Raises the ``ValueError`` subclasses of the
    module docstring, each with a one-line message."""
    buf, label = _load(model)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteFormatError(f"{label}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        raw = _read_flatbuffer(buf)
    except Exception as error:          # any failure inside the flatbuffer reader: bad offsets, sizes, text
        raise TFLiteFormatError(f"{label}: truncated or corrupt TFLite file ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from None
    try:
        return _Builder(*raw).graph
    except ValueError as error:
        raise type(error)(f"{label}: {error}") from None
