"""Write small TFLite flatbuffers for tests (the ``tflite`` package's generated builders), so that each
op can be checked against LiteRT at shapes, strides, paddings and scales the MLPerf models lack."""
from __future__ import annotations

import importlib

import flatbuffers
import numpy as np
import tflite

_TYPES = {"int8": tflite.TensorType.INT8, "int32": tflite.TensorType.INT32, "float32": tflite.TensorType.FLOAT32}


def _module(name):
    return importlib.import_module(f"tflite.{name}")


class ModelBuilder:
    """Collects tensors and ops, then ``build(inputs, outputs)`` returns the .tflite bytes."""

    def __init__(self):
        self.tensors, self.buffers, self.ops, self.codes = [], [b""], [], []

    def tensor(self, name, shape, dtype="int8", scale=None, zero_point=None, axis=0, data=None) -> int:
        """Add a tensor (``data``: constant values); returns its index."""
        buffer = 0
        if data is not None:
            self.buffers.append(np.asarray(data, dtype).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, tuple(shape), dtype, scale, zero_point, axis, buffer))
        return len(self.tensors) - 1

    def op(self, code: str, inputs, outputs, options: str | None = None, **fields):
        """Add builtin ``code`` (e.g. "CONV_2D") with its options table ``options`` and ``fields``
        (e.g. ``StrideW=2``)."""
        value = getattr(tflite.BuiltinOperator, code)
        if value not in self.codes:
            self.codes.append(value)
        self.ops.append((self.codes.index(value), tuple(inputs), tuple(outputs), options, fields))

    def build(self, inputs, outputs) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = [self._buffer(b, data) for data in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        ops = [self._op(b, op) for op in self.ops]
        codes = [self._code(b, value) for value in self.codes]
        m = _module("SubGraph")
        vectors = [self._offsets(b, tensors), b.CreateNumpyVector(np.asarray(inputs, np.int32)),
                   b.CreateNumpyVector(np.asarray(outputs, np.int32)), self._offsets(b, ops)]
        m.SubGraphStart(b)
        m.SubGraphAddTensors(b, vectors[0])
        m.SubGraphAddInputs(b, vectors[1])
        m.SubGraphAddOutputs(b, vectors[2])
        m.SubGraphAddOperators(b, vectors[3])
        subgraph = m.SubGraphEnd(b)
        subgraphs = self._offsets(b, [subgraph])
        code_vec, buffer_vec = self._offsets(b, codes), self._offsets(b, buffers)
        m = _module("Model")
        m.ModelStart(b)
        m.ModelAddVersion(b, 3)
        m.ModelAddOperatorCodes(b, code_vec)
        m.ModelAddSubgraphs(b, subgraphs)
        m.ModelAddBuffers(b, buffer_vec)
        b.Finish(m.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _offsets(b, offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    @staticmethod
    def _buffer(b, data: bytes):
        vec = None
        if data:
            b.StartVector(1, len(data), 16)
            b.head -= len(data)
            b.Bytes[b.head:b.head + len(data)] = data
            b.vectorNumElems = len(data)
            vec = b.EndVector()
        m = _module("Buffer")
        m.BufferStart(b)
        if vec is not None:
            m.BufferAddData(b, vec)
        return m.BufferEnd(b)

    @staticmethod
    def _tensor(b, t):
        name, shape, dtype, scale, zero_point, axis, buffer = t
        name_off = b.CreateString(name)
        shape_off = b.CreateNumpyVector(np.asarray(shape, np.int32))
        quant = None
        if scale is not None:
            q = _module("QuantizationParameters")
            scale_off = b.CreateNumpyVector(np.asarray(scale, np.float32).ravel())
            zp_off = b.CreateNumpyVector(np.asarray(zero_point, np.int64).ravel())
            q.QuantizationParametersStart(b)
            q.QuantizationParametersAddScale(b, scale_off)
            q.QuantizationParametersAddZeroPoint(b, zp_off)
            q.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = q.QuantizationParametersEnd(b)
        m = _module("Tensor")
        m.TensorStart(b)
        m.TensorAddShape(b, shape_off)
        m.TensorAddType(b, _TYPES[dtype])
        m.TensorAddBuffer(b, buffer)
        m.TensorAddName(b, name_off)
        if quant is not None:
            m.TensorAddQuantization(b, quant)
        return m.TensorEnd(b)

    @staticmethod
    def _op(b, op):
        code, inputs, outputs, options, fields = op
        opts = None
        if options is not None:
            m = _module(options)
            getattr(m, f"{options}Start")(b)
            for field, value in fields.items():
                getattr(m, f"{options}Add{field}")(b, value)
            opts = getattr(m, f"{options}End")(b)
        in_off = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        out_off = b.CreateNumpyVector(np.asarray(outputs, np.int32))
        m = _module("Operator")
        m.OperatorStart(b)
        m.OperatorAddOpcodeIndex(b, code)
        m.OperatorAddInputs(b, in_off)
        m.OperatorAddOutputs(b, out_off)
        if opts is not None:
            m.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, options))
            m.OperatorAddBuiltinOptions(b, opts)
        return m.OperatorEnd(b)

    @staticmethod
    def _code(b, value):
        m = _module("OperatorCode")
        m.OperatorCodeStart(b)
        m.OperatorCodeAddDeprecatedBuiltinCode(b, min(value, 127))
        m.OperatorCodeAddBuiltinCode(b, value)
        m.OperatorCodeAddVersion(b, 1)
        return m.OperatorCodeEnd(b)
