"""ONNX's conformance data for the quantized operators (issue 17): every node test case of QLinearMatMul,
QLinearConv, MatMulInteger, ConvInteger, QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear that
the ``onnx`` package generates, imported with its non-activation inputs bound as initializers, must give
the expected output on the host kernels and on the NPU (4x4, golden); a case whose types the NPU lacks
is skipped with the reason (``compiler.onnx_conformance``). Plus the importer paths those cases need:
uint8 weights split into int8 parts, int32 accumulator outputs (NPU raw layers), per-axis Q/DQ-only models."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from opennpu.compiler.onnx_conformance import check_case, conformance_cases, unsupported  # noqa: E402
from opennpu.compiler.onnx_import import import_onnx_graph  # noqa: E402
from opennpu.compiler.qlayers import int8_parts  # noqa: E402
from opennpu.config import NpuConfig  # noqa: E402

CASES = {case.name: case for case in conformance_cases()}
FAMILIES = ("qlinearmatmul", "qlinearconv", "matmulinteger", "convinteger")
CONFIG = NpuConfig(rows=4, cols=4)


def test_all_45_cases_are_collected():
    assert len(CASES) == 45


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance_case(name):
    case = CASES[name]
    reason = unsupported(case)
    if reason:
        assert not any(name.startswith(f"test_{f}") for f in FAMILIES), f"{name} must run, not skip: {reason}"
        pytest.skip(f"{name}: {reason}")
    check_case(case, CONFIG)


def _devices(name):
    case = CASES[name]
    og = check_case(case, CONFIG)
    _, records = og.run(case.data_sets[-1][0][0], CONFIG)
    return {r["op"]: r["device"] for r in records}


def test_uint8_weights_beyond_int8_run_split_on_the_npu():
    """QLinearConv's weight 0 with zero point 255 (w - zp = -255): two int8 parts, the input read twice."""
    devices = _devices("test_qlinearconv")
    assert devices["conv2d"] == "npu" and devices["concatenation"] == "cpu"
    assert _devices("test_qlinearmatmul_2D_uint8_float32")["fully_connected"] == "npu"


def test_integer_ops_store_int32_accumulators_from_the_npu():
    assert _devices("test_matmulinteger") == {"fully_connected": "npu"}
    assert _devices("test_convinteger_with_padding")["conv2d"] == "npu"


def test_quantize_only_model_is_a_graph_without_nodes():
    og = check_case(CASES["test_quantizelinear_axis"], CONFIG)
    assert og.graph.nodes == [] and og.output.axis == 0 and og.output.dtype == "uint8"


@pytest.mark.parametrize("low, high, parts", [(-128, 127, 1), (-255, 254, 2), (-256, 254, 2), (-255, 255, 3)])
def test_int8_parts_sum_to_the_weights(low, high, parts):
    w = np.arange(low, high + 1)
    split = int8_parts(w)
    assert len(split) == parts
    assert all(p.min() >= -128 and p.max() <= 127 for p in split)
    np.testing.assert_array_equal(sum(split), w)


def _qlinear_matmul(b, b_zp, a_shape=(3, 4)):
    """QLinearMatMul of a uint8 input (batch, K) and constant uint8 weights."""
    consts = [numpy_helper.from_array(np.asarray(v, dtype), name) for name, v, dtype in [
        ("sa", 0.02, np.float32), ("za", 100, np.uint8), ("b", b, np.uint8), ("sb", 0.01, np.float32),
        ("zb", b_zp, np.uint8), ("sy", 0.5, np.float32), ("zy", 120, np.uint8)]]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, a_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_weight_255_with_zero_point_0_takes_three_parts():
    b = np.array([[255, 0, 128], [255, 255, 1], [0, 7, 255], [200, 255, 3]])
    model = _qlinear_matmul(b, 0)
    a = np.random.default_rng(0).integers(0, 256, (3, 4)).astype(np.uint8)
    from onnx.reference import ReferenceEvaluator
    expected = ReferenceEvaluator(model).run(None, {"a": a})[0].astype(np.int64)
    og = import_onnx_graph(model)
    assert og.graph.tensors["mm:repeat"].shape == (12,)
    y, records = og.run(a, CONFIG)
    np.testing.assert_array_equal(og.reference(a) + 128, y)
    assert np.abs(y.astype(np.int64) - expected).max() <= 1
    assert {r["op"]: r["device"] for r in records}["fully_connected"] == "npu"


def test_batched_weights_must_share_one_matrix():
    b = np.arange(24).reshape(2, 4, 3)
    with pytest.raises(ValueError, match="QLinearMatMul node 'mm'.*different matrix per batch entry"):
        import_onnx_graph(_qlinear_matmul(b, 0, (2, 2, 4)))


def _model(nodes, x_type, x_shape, consts):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
                              [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in consts])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_int32_accumulator_cannot_feed_an_op():
    nodes = [helper.make_node("MatMulInteger", ["x", "w"], ["acc"], name="mmi"),
             helper.make_node("QLinearMatMul", ["acc", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="next")]
    model = _model(nodes, TensorProto.UINT8, (1, 2), [("w", [[1, 2], [3, 4]], np.uint8), ("s", 1.0, np.float32),
                                                       ("z", 0, np.uint8)])
    with pytest.raises(ValueError, match="QLinearMatMul node 'next'.*int32 accumulator"):
        import_onnx_graph(model)


def test_depthwise_weights_beyond_int8_are_refused():
    consts = [("s", 0.1, np.float32), ("z", 128, np.uint8), ("w", np.zeros((2, 1, 1, 1)), np.uint8),
              ("ws", 0.1, np.float32), ("wz", 255, np.uint8)]
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "ws", "wz", "s", "z"], ["y"], name="dw", group=2)
    with pytest.raises(ValueError, match="QLinearConv node 'dw'.*depthwise"):
        import_onnx_graph(_model([node], TensorProto.UINT8, (1, 2, 3, 3), consts))


def test_per_axis_activation_cannot_feed_an_op():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", axis=1)]
    model = _model(nodes, TensorProto.FLOAT, (1, 2), [("s", [0.1, 0.2], np.float32), ("z", [0, 3], np.uint8)])
    with pytest.raises(ValueError, match="DequantizeLinear node 'dq'.*PerAxisQ"):
        import_onnx_graph(model)
