"""ONNX's own conformance data for the quantized operators: the node test cases that the ``onnx``
package regenerates (``onnx.backend.test.case.node``), run through the importer, the host kernels and
the NPU.

A node test case is one ONNX node whose every input is a graph input, with data sets of inputs and
expected outputs. The NPU needs weights, scales and zero points at compile time, so ``bind_inputs``
turns every input but the activation (input 0) into an initializer holding the data set's value before
the model is imported. ``check_case`` then runs the model on the host kernels (``OnnxGraph.reference``)
and on the NPU (``OnnxGraph.run``, golden backend) and compares both with the expected output: exactly
for integer outputs, within the case's tolerance for float ones.

``unsupported`` names what a case needs that the NPU does not have (element types beyond int8/uint8 and
float32, blocked quantization): those cases are skipped with that reason. DynamicQuantizeLinear's cases
(three outputs: the values and their run-time grid) are checked against the host kernel that the
importer's ``dynamic_matmul`` nodes use.
"""
from __future__ import annotations

import importlib

import numpy as np

from .onnx_import import OnnxGraph, import_onnx_graph

__all__ = ["CASE_MODULES", "conformance_cases", "unsupported", "bind_inputs", "check_case"]

#: modules of ``onnx.backend.test.case.node`` whose cases are the quantized operators
CASE_MODULES = ("qlinearmatmul", "qlinearconv", "matmulinteger", "convinteger", "quantizelinear",
                "dequantizelinear", "dynamicquantizelinear")
_KEYWORDS = ("qlinear", "integer", "quantizelinear")


def conformance_cases() -> list:
    """The quantized operators' node test cases (``onnx.backend.test.case.TestCase``: ``name``, ``model``,
    ``data_sets``, ``rtol``, ``atol``), by name. Only ``CASE_MODULES`` are imported (importing a case module
    generates its cases into the package's list, which ``collect_testcases`` would fill with every op's:
    seconds slower)."""
    import onnx.backend.test.case.node as node_cases
    for module in CASE_MODULES:
        importlib.import_module(f"{node_cases.__name__}.{module}")
    cases = {c.name: c for c in node_cases._NodeTestCases if any(k in c.name for k in _KEYWORDS)}
    return [cases[name] for name in sorted(cases)]


#: ONNX element types the NPU lacks -> what they are
_MISSING_TYPES = {"FLOAT8E4M3FN": "float8 e4m3fn", "FLOAT8E4M3FNUZ": "float8 e4m3fnuz", "FLOAT8E5M2": "float8 e5m2",
                  "FLOAT8E5M2FNUZ": "float8 e5m2fnuz", "INT4": "int4", "UINT4": "uint4", "INT2": "int2",
                  "UINT2": "uint2", "FLOAT4E2M1": "float4e2m1", "INT16": "int16", "UINT16": "uint16"}


def unsupported(case) -> str | None:
    """Why the NPU cannot run ``case`` (None if it can): an element type it lacks, blocked quantization,
    float16 scales are no obstacle: the importer reads every scale as a float."""
    import onnx
    graph = case.model.graph
    types = {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output)}
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "output_dtype":
                types.add(onnx.TensorProto.DataType.Name(attr.i))
            if attr.name == "block_size" and attr.i:
                return "blocked quantization (block_size): the NPU has per-tensor and per-channel grids"
    missing = sorted(_MISSING_TYPES[t] for t in types & _MISSING_TYPES.keys())
    if missing:
        return f"element type {', '.join(missing)}: the NPU has int8/uint8 (and int32 accumulators, float32 I/O)"
    return None


def bind_inputs(model, inputs: list):
    """A copy of ``model`` whose graph inputs after the first are initializers holding ``inputs`` (one
    data set's values, in graph-input order): the weights, scales and zero points the NPU compiles in."""
    import onnx
    from onnx import numpy_helper
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    graph = bound.graph
    constants = list(graph.input)[1:]
    for value_info, value in zip(constants, inputs[1:]):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), value_info.name))
        graph.input.remove(value_info)
    return bound


def _compare(got, expected, rtol: float, atol: float, what: str):
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape or got.dtype != expected.dtype:
        raise AssertionError(f"{what}: {got.dtype} {got.shape}, expected {expected.dtype} {expected.shape}")
    if np.issubdtype(expected.dtype, np.floating):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(got, expected, err_msg=what)


_DYNAMIC_CASES = "test_dynamicquantizelinear"


def _check_dynamic_case(case) -> None:
    """A DynamicQuantizeLinear case (and its ``_expanded`` twin, the op written out in ReduceMin / ReduceMax /
    Div / Round / Cast nodes, with the same data): its three outputs (values, scale, zero point) against
    ``host_kernels.dynamic_quantize``, the kernel every ``dynamic_matmul`` node quantizes its operands
    with. (The importer takes models with one output, and a graph uses the op only inside that node.)"""
    from .host_kernels import dynamic_quantize
    for index, (inputs, outputs) in enumerate(case.data_sets):
        q, scale, zp = dynamic_quantize(inputs[0])
        got = (q.astype(np.uint8), np.asarray(scale, np.float32), np.asarray(zp, np.uint8))
        for what, value, expected in zip(("y", "y_scale", "y_zero_point"), got, outputs):
            _compare(value, expected, case.rtol, case.atol, f"{case.name} data set {index}, {what}")


def check_case(case, config=None) -> OnnxGraph | None:
    """Run every data set of ``case`` on the host kernels and on the NPU (``config``: 4x4 by default,
    golden backend) and compare with the expected output; ``AssertionError`` naming the case and the
    backend otherwise. Returns the imported graph of the last data set (None for a DynamicQuantizeLinear
    case, whose outputs are checked against the host kernel: ``_check_dynamic_case``)."""
    from opennpu.config import NpuConfig
    config = config or NpuConfig(rows=4, cols=4)
    if case.name.startswith(_DYNAMIC_CASES):
        return _check_dynamic_case(case)
    for index, (inputs, outputs) in enumerate(case.data_sets):
        if len(outputs) != 1:
            raise AssertionError(f"{case.name}: {len(outputs)} outputs; the importer takes one")
        og = import_onnx_graph(bind_inputs(case.model, inputs))
        x, expected = inputs[0], outputs[0]
        _compare(og.output.value(og.reference(x)), expected, case.rtol, case.atol,
                 f"{case.name} data set {index}, host kernels")
        _compare(og.run(x, config)[0], expected, case.rtol, case.atol, f"{case.name} data set {index}, NPU")
    return og
