"""ONNX QOperator and integer op handlers of the importer (``onnx_import._Importer`` mixes them in):
QLinearMatMul, QLinearConv, QGemm, QLinearAdd, QLinearAveragePool, QLinearGlobalAveragePool,
QLinearConcat, QLinearMul, QLinearSoftmax, QLinearSigmoid, QLinearLeakyRelu (com.microsoft), MatMulInteger and
ConvInteger: the scales and zero points are inputs of the op instead of QuantizeLinear /
DequantizeLinear pairs around it."""
from __future__ import annotations

import numpy as np

from .onnx_tensor_ops import UNARY_FUNCTIONS
from .onnx_values import _Const, _DeqConst, _Float, _Q

__all__ = ["QLinearOps"]


class QLinearOps:
    """Handlers ``_op_<Type>`` for the ops above."""

    def _op_QLinearConcat(self, node):
        s_y, zp_y, dtype = self._scalar_q(node, self._const(node, 0), self._const(node, 1), "output")
        parts = [self._quant_input(node, self._get(node, i), self._const(node, i + 1), self._const(node, i + 2))
                 for i in range(2, len(node.input), 3)]
        return self._emit_float(node, self._concat(node, parts, "QLinearConcat"), s_y, zp_y, dtype)

    def _qlinear_args(self, node, names):
        return {name: self._const(node, i, optional=True) for i, name in enumerate(names) if i > 0 and name}

    def _op_QLinearMatMul(self, node):
        b = self._get(node, 3)
        c = self._qlinear_args(node, ["a", "a_scale", "a_zp", "" if isinstance(b, _Q) else "b", "b_scale", "b_zp",
                                      "y_scale", "y_zp"])
        a = self._quant_input(node, self._get(node, 0), c["a_scale"], c["a_zp"])
        if isinstance(b, _Q):
            b = self._quant_input(node, b, c["b_scale"], c["b_zp"])
            return self._finish_float(node, self._product(node, a, b, "QLinearMatMul"), c["y_scale"], c["y_zp"])
        w, s_w = self._weights(node, self._shared_matrix(node, c["b"]), c["b_scale"], c["b_zp"], 1)
        return self._finish(node, self._gemm(node, a, w, s_w, None), c["y_scale"], c["y_zp"])

    def _shared_matrix(self, node, b) -> np.ndarray:
        """MatMul weights of rank > 2 (one (K, N) matrix per batch entry, ONNX broadcasting) -> the one
        matrix, when every entry holds the same (the NPU's weights are shared by all samples)."""
        b = np.asarray(b)
        if b.ndim <= 2:
            return b
        matrices = b.reshape(-1, *b.shape[-2:])
        if any(not np.array_equal(matrices[0], m) for m in matrices[1:]):
            raise self._error(node, f"weights {b.shape} hold a different matrix per batch entry; the NPU shares "
                                    f"one (K, N) matrix between all samples")
        return matrices[0]

    def _integer_input(self, node, zp) -> _Q:
        """Input 0 of MatMulInteger / ConvInteger: a quantized tensor read as integers with zero point
        ``zp`` (its scale does not matter: the output is the integer accumulator)."""
        v = self._get(node, 0)
        if not isinstance(v, _Q):
            raise self._error(node, f"input 0 must be an int8/uint8 tensor (the graph input or a QLinear op's "
                                    f"output), got {type(v).__name__.strip('_')}")
        zp = np.zeros(1, v.dtype) if zp is None else zp
        s, z, _ = self._scalar_q(node, 1.0 if v.zp is None else v.scale, zp, "input")
        self._check_grid(node, v, s, z)
        return v

    def _op_MatMulInteger(self, node):
        a = self._integer_input(node, self._const(node, 2, optional=True))
        b = self._shared_matrix(node, self._const(node, 1))
        w, _ = self._weights(node, b, 1.0, self._const(node, 3, optional=True), 1)
        return self._emit_gemm(node, self._gemm(node, a, w, 1.0, None), 1.0, 0, "int32")

    def _op_ConvInteger(self, node):
        x = self._integer_input(node, self._const(node, 2, optional=True))
        w, _ = self._weights(node, self._const(node, 1), 1.0, self._const(node, 3, optional=True), 0)
        return self._emit_gemm(node, self._conv(node, x, w, 1.0, None, self._attrs(node)), 1.0, 0, "int32")

    def _op_QGemm(self, node):
        attrs = self._attrs(node)
        if attrs.get("transA", 0):
            raise self._error(node, "transA=1 is not supported")
        c = self._qlinear_args(node, ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "", "y_scale", "y_zp"])
        a = self._quant_input(node, self._get(node, 0), c["a_scale"], c["a_zp"])
        transposed = bool(attrs.get("transB", 0))
        w, s_w = self._weights(node, c["b"], c["b_scale"], c["b_zp"], 0 if transposed else 1)
        bias = self._get(node, 6, optional=True)
        acc = self._gemm(node, a, w, s_w, bias, transposed, float(attrs.get("alpha", 1.0)))
        return acc if c.get("y_scale") is None else self._finish(node, acc, c["y_scale"], c["y_zp"])

    def _op_QLinearConv(self, node):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"])
        x = self._quant_input(node, self._get(node, 0), c["x_scale"], c["x_zp"])
        w, s_w = self._weights(node, c["w"], c["w_scale"], c["w_zp"], 0)
        bias = None if c["b"] is None else _Const(np.asarray(c["b"], np.int32))
        acc = self._conv(node, x, w, s_w, bias, self._attrs(node))
        return self._finish(node, acc, c["y_scale"], c["y_zp"])

    def _binary_qlinear(self, node) -> tuple:
        """QLinearAdd / QLinearMul operands: (the quantized tensor, the other operand: a quantized tensor, or
        a ``_DeqConst`` when it is a constant, output scale, output zero point); a constant first operand
        is swapped to second."""
        a, b = self._get(node, 0), self._get(node, 3)
        (sa, za, sb, zb, sy, zy) = [self._const(node, i, optional=True) for i in (1, 2, 4, 5, 6, 7)]
        if isinstance(a, _Const):
            (sa, za, sb, zb), (a, b) = (sb, zb, sa, za), (b, a)
        qa = self._quant_input(node, a, sa, za)
        if isinstance(b, _Const):
            return qa, _DeqConst(np.asarray(b.value), np.asarray(sb, np.float64),
                                 np.zeros(1, np.int64) if zb is None else np.asarray(zb, np.int64), ""), sy, zy
        return qa, self._quant_input(node, b, sb, zb), sy, zy

    def _op_QLinearAdd(self, node):
        qa, other, sy, zy = self._binary_qlinear(node)
        if isinstance(other, _DeqConst):
            return self._finish(node, self._add_bias(node, self._offset(node, qa, other), other), sy, zy)
        return self._finish_float(node, self._sum(node, qa, other, "QLinearAdd"), sy, zy)

    def _op_QLinearMul(self, node):
        """com.microsoft QLinearMul: two tensors (TFLite's integer MUL), or a tensor and a scalar constant
        (a table)."""
        qa, other, sy, zy = self._binary_qlinear(node)
        if isinstance(other, _DeqConst):
            k = other.real()
            if k.size != 1:
                raise self._error(node, f"a constant factor of {k.size} values is not supported (a scalar is)")
            factor = float(k.ravel()[0])
            return self._table(node, qa, (("Mul", lambda x: x * factor),), *self._scalar_q(node, sy, zy, "output"))
        a2, b2, shape = self._pair(node, qa, other)
        return self._finish_float(node, _Float("mul", self._name(node), "QLinearMul", (a2, b2), shape), sy, zy)

    def _qlinear_pool(self, node, global_pool: bool):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "y_scale", "y_zp"])
        x = self._quant_input(node, self._get(node, 0), c["x_scale"], c["x_zp"])
        if global_pool and self._attrs(node).get("channels_last", 0):
            raise self._error(node, "channels_last=1 is not supported")
        pool = self._pool(node, "avg_pool", None, global_pool, node.op_type, x)
        return self._finish_float(node, pool, c["y_scale"], c["y_zp"])

    def _op_QLinearAveragePool(self, node):
        return self._qlinear_pool(node, False)

    def _op_QLinearGlobalAveragePool(self, node):
        return self._qlinear_pool(node, True)

    def _qlinear_unary(self, node, name, fn):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "y_scale", "y_zp"])
        q = self._quant_input(node, self._get(node, 0), c["x_scale"], c["x_zp"])
        return self._table(node, q, ((name, fn),), *self._scalar_q(node, c["y_scale"], c["y_zp"], "output"))

    def _op_QLinearSoftmax(self, node):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "y_scale", "y_zp"])
        q = self._quant_input(node, self._get(node, 0), c["x_scale"], c["x_zp"])
        return self._finish_float(node, self._softmax(node, q, "QLinearSoftmax"), c["y_scale"], c["y_zp"])

    def _op_QLinearSigmoid(self, node):
        return self._qlinear_unary(node, "Sigmoid", lambda x: UNARY_FUNCTIONS["Sigmoid"](x, {}))

    def _op_QLinearLeakyRelu(self, node):
        attrs = self._attrs(node)
        return self._qlinear_unary(node, "LeakyRelu", lambda x: UNARY_FUNCTIONS["LeakyRelu"](x, attrs))
