"""Model compiler: quantized ONNX graphs (QDQ and QLinear forms) imported, compiled and run on the golden
model against onnxruntime (within 1 LSB) and the integer reference (bit-exact); on-chip chaining saves
DMA; bad models and inputs fail with clear errors."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import opennpu  # noqa: E402
from opennpu.compiler.model_program import compile_model, run_model  # noqa: E402
from opennpu.compiler.onnx_import import import_onnx, onnxruntime_session  # noqa: E402
from opennpu.compiler.qlayers import QLayer  # noqa: E402
from opennpu.compiler.torch_quant import quantize_onnx  # noqa: E402
from opennpu.config import NpuConfig  # noqa: E402
from opennpu.golden.model import GoldenNpu  # noqa: E402

RNG = np.random.default_rng(1)


def _model(nodes, inits, in_shape, out_shape, opset=13) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def _w(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(shape[0] if len(shape) == 2 else np.prod(shape[1:]))
            ).astype(np.float32)


def _mlp(act="Relu", hidden=24) -> bytes:
    """MatMul + Add + act, MatMul + Add."""
    return _model([helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
                   helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
                   helper.make_node(act, ["h1"], ["h2"], name="act1"),
                   helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="fc2"),
                   helper.make_node("Add", ["h3", "b2"], ["y"], name="bias2")],
                  {"w1": _w(20, hidden), "b1": _w(hidden) * 0.1, "w2": _w(hidden, 10), "b2": _w(10) * 0.1},
                  (20,), (10,))


def _gemm_relu6() -> bytes:
    return _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="gemm1", transB=1),
                   helper.make_node("Clip", ["h", "lo", "hi"], ["h6"], name="relu6"),
                   helper.make_node("Gemm", ["h6", "w2", "b2"], ["y"], name="gemm2", transB=1)],
                  {"w1": _w(17, 33), "b1": _w(17), "lo": np.float32(0), "hi": np.float32(6),
                   "w2": _w(5, 17), "b2": _w(5)}, (33,), (5,))


def _cnn(second_conv=False) -> bytes:
    nodes = [helper.make_node("Conv", ["x", "c1", "cb1"], ["a"], name="conv1", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="relu1")]
    inits = {"c1": _w(6, 2, 3, 3), "cb1": _w(6) * 0.1}
    last, flat = "ar", 6 * 8 * 8
    if second_conv:
        nodes += [helper.make_node("Conv", ["ar", "c2", "cb2"], ["b"], name="conv2", kernel_shape=[3, 3],
                                   strides=[2, 2]),
                  helper.make_node("Tanh", ["b"], ["bt"], name="tanh2")]
        inits.update(c2=_w(4, 6, 3, 3), cb2=_w(4) * 0.1)
        last, flat = "bt", 4 * 3 * 3
    nodes += [helper.make_node("Flatten", [last], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["g"], name="fc", transB=1),
              helper.make_node("Sigmoid", ["g"], ["y"], name="sigmoid")]
    inits.update(wf=_w(10, flat), bf=_w(10) * 0.1)
    return _model(nodes, inits, (2, 8, 8), (10,))


def _check(blob: bytes, x: np.ndarray, config=NpuConfig(), lsb=1, **options):
    """Golden run vs onnxruntime (<= ``lsb`` LSB, >= 95 % within 1 LSB) and vs the integer reference
    (bit-exact)."""
    qm = import_onnx(blob)
    compiled = compile_model(qm, config, batch=len(x), **options)
    run = run_model(compiled, x)
    expected = onnxruntime_session(blob).run(None, {"x": x})[0]
    assert run.outputs.shape == expected.shape and run.outputs.dtype == expected.dtype
    diff = np.abs(qm.output_lsb(run.outputs) - qm.output_lsb(expected))
    assert diff.max() <= lsb and (diff <= 1).mean() >= 0.95
    assert np.array_equal(run.values, qm.reference(x))
    return qm, compiled, run


@pytest.fixture(scope="module")
def models():
    x20 = RNG.random((40, 20), dtype=np.float32) * 2 - 1
    x33 = RNG.random((40, 33), dtype=np.float32) * 2 - 1
    img = RNG.random((12, 2, 8, 8), dtype=np.float32)
    out = {}
    for name, blob, x in (("mlp", _mlp(), x20), ("sigmoid_mlp", _mlp("Sigmoid"), x20), ("tanh_mlp", _mlp("Tanh"), x20),
                          ("gemm_relu6", _gemm_relu6(), x33), ("cnn", _cnn(), img), ("cnn2", _cnn(True), img)):
        for qop in (False, True):
            out[name, qop] = (quantize_onnx(blob, x[:16], qoperator=qop), x)
            out[name, qop, "per_channel"] = (quantize_onnx(blob, x[:16], qoperator=qop, per_channel=True), x)
    return out


@pytest.mark.parametrize("qop", [False, True], ids=["qdq", "qlinear"])
@pytest.mark.parametrize("name", ["mlp", "sigmoid_mlp", "tanh_mlp", "gemm_relu6", "cnn", "cnn2"])
def test_quantized_graphs_match_onnxruntime(models, name, qop):
    blob, x = models[name, qop]
    ops = {n.op_type for n in onnx.load_from_string(blob).graph.node}
    assert ops & ({"QLinearMatMul", "QGemm", "QLinearConv"} if qop else {"MatMul", "Gemm", "Conv"})
    qm, compiled, _ = _check(blob, x)
    if name in ("sigmoid_mlp", "tanh_mlp", "cnn", "cnn2"):      # a LUT layer is part of the chain
        assert any(layer.lut is not None for layer in qm.layers)


@pytest.mark.parametrize("qop", [False, True], ids=["qdq", "qlinear"])
@pytest.mark.parametrize("name", ["mlp", "sigmoid_mlp", "tanh_mlp", "gemm_relu6", "cnn", "cnn2"])
def test_per_channel_graphs_match_onnxruntime(models, name, qop):
    """``quantize_static(per_channel=True)``: weight scales per output channel (Conv axis 0, MatMul axis 1,
    Gemm transB axis 0; QLinearConv/QLinearMatMul/QGemm per output channel) -> per-channel multipliers
    and shifts, the per-channel int32 bias in each channel's accumulator units. Every layer is within
    1 LSB of onnxruntime (ORT rounds float math, the NPU integers); the CNNs end in a sigmoid table whose
    steps reach 3 output LSBs per input LSB, so a 1-LSB logit difference can show as up to 3 LSB there
    (measured: 1 LSB max on the three MLPs and cnn2, 0 on gemm_relu6; cnn: 1 LSB before its sigmoid,
    3 after, 98 % of outputs within 1 LSB)."""
    blob, x = models[name, qop, "per_channel"]
    graph = onnx.load_from_string(blob).graph
    scales = {t.name: t.dims for t in graph.initializer if t.name.endswith("_scale")}
    assert any(dims and dims[0] > 1 for dims in scales.values())        # the quantizer wrote per-channel scales
    last = import_onnx(blob).layers[-1]
    qm, compiled, run = _check(blob, x, lsb=1 if last.lut is None else int(np.abs(np.diff(last.lut)).max()))
    if last.lut is not None:        # before the table: onnxruntime's quantized logits, within 1 LSB
        model = onnx.load_from_string(blob)
        table = next(n for n in reversed(model.graph.node) if n.op_type in ("Sigmoid", "QLinearSigmoid"))
        logits = next((n.input[0] for n in model.graph.node if n.output[0] == table.input[0]
                       and n.op_type == "DequantizeLinear"), table.input[0])
        model.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.INT8, None))
        expected = onnxruntime_session(model.SerializeToString()).run([logits], {"x": x})[0]
        t = qm.quantize_input(x)
        for layer in qm.layers[:-1]:
            t = layer.reference(t.reshape(len(t), *layer.in_shape))
        ours = QLayer(**{**last.__dict__, "lut": None}).reference(t.reshape(len(t), *last.in_shape))
        assert np.abs(ours - expected.reshape(ours.shape)).max() <= 1
    gemms = [layer for layer in qm.layers if layer.op != "Add"]
    assert all(np.ndim(layer.multiplier) == 1 and np.ptp(layer.multiplier) > 0 for layer in gemms)
    per_tensor = import_onnx(models[name, qop][0])
    assert all(np.ndim(layer.multiplier) == 0 for layer in per_tensor.layers)


@pytest.mark.parametrize("array", [(4, 8), (8, 4), (3, 5)])
def test_other_arrays_and_small_srams(models, array):
    blob, x = models["cnn", False]
    config = NpuConfig(rows=array[0], cols=array[1], act_depth=512, wgt_depth=512, acc_depth=64)
    _check(blob, x, config)
    blob, x = models["mlp", True]
    _check(blob, x, config)
    blob, x = models["cnn2", False, "per_channel"]        # per-channel parameters on every N tile
    _check(blob, x, config)


def test_hand_written_qdq_uint8_with_bias_add_and_relu():
    """uint8 activations, int8 weights, float bias Add and an int32 DequantizeLinear bias, Relu between."""
    s_x, s_h, s_y = 1 / 64, 1 / 16, 1 / 8
    w1 = RNG.integers(-127, 128, (12, 16), dtype=np.int8)
    w2 = RNG.integers(-127, 128, (16, 4), dtype=np.int8)
    b2 = RNG.integers(-2000, 2000, 4).astype(np.int32)
    s_w = np.float32(0.01)
    inits = {"sx": np.float32(s_x), "zx": np.uint8(100), "sh": np.float32(s_h), "zh": np.uint8(3),
             "sy": np.float32(s_y), "zy": np.uint8(128), "w1": w1, "w2": w2, "sw": s_w, "zw": np.int8(0),
             "b1": (RNG.standard_normal(16) * 0.3).astype(np.float32), "b2": b2,
             "sb2": np.float32(s_h * s_w), "zb2": np.int32(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w1", "sw", "zw"], ["w1d"]),
             helper.make_node("MatMul", ["xd", "w1d"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("QuantizeLinear", ["r1", "sh", "zh"], ["hq"]),
             helper.make_node("DequantizeLinear", ["hq", "sh", "zh"], ["hd"]),
             helper.make_node("DequantizeLinear", ["w2", "sw", "zw"], ["w2d"]),
             helper.make_node("DequantizeLinear", ["b2", "sb2", "zb2"], ["b2d"]),
             helper.make_node("MatMul", ["hd", "w2d"], ["m2"], name="mm2"),
             helper.make_node("Add", ["m2", "b2d"], ["a2"]),
             helper.make_node("QuantizeLinear", ["a2", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    blob = _model(nodes, inits, (12,), (4,))
    x = RNG.random((30, 12), dtype=np.float32) * 3 - 1
    qm, _, _ = _check(blob, x)
    assert qm.layers[0].qmin == 3 - 128          # ReLU is a clamp at the (shifted) zero point


def test_digits_mlp_same_argmax_as_onnxruntime():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from opennpu.compiler.demo_digits import load_digits, train_mlp
    from opennpu.compiler.torch_quant import quantize_torch
    x_train, y_train, x_test, y_test = load_digits()
    blob = quantize_torch(train_mlp(x_train, y_train, epochs=8), x_train[:128])
    _, _, run = _check(blob, x_test)
    expected = onnxruntime_session(blob).run(None, {"x": x_test})[0]
    assert np.array_equal(run.outputs.argmax(1), expected.argmax(1))
    assert (run.outputs.argmax(1) == y_test).mean() > 0.85


def test_fusion_keeps_activations_on_chip(models):
    blob, x = models["cnn", False]
    qm = import_onnx(blob)
    fused = compile_model(qm, NpuConfig(), batch=len(x))
    unfused = compile_model(qm, NpuConfig(), batch=len(x), fuse=False)
    assert fused.stages == 1 and unfused.stages == 2
    assert [layer.output for layer in fused.layers] == ["chip", "host"]
    a, b = run_model(fused, x), run_model(unfused, x)
    assert np.array_equal(a.values, b.values)
    row_bytes = NpuConfig().bus_bytes
    assert a.counters["dma_out_bytes"] == len(x) * row_bytes * 2          # only the 10 outputs (two N tiles)
    assert a.counters["dma_in_bytes"] < b.counters["dma_in_bytes"]
    assert a.counters["energy_fj"] < b.counters["energy_fj"]


def test_conv_to_conv_chains_on_chip(models):
    """The second convolution reads the first one's output where its ACTIVATE left it (in place: a K tile
    per tap and channel group); the fully connected layer after them starts a program of its own (its
    rows position-major, the chain's sample-major). Same values as one program per layer, fewer bytes.
    (On 3x3: conv2's 6 input channels are 2 groups of 3, its 9 taps 18 K tiles, as many as its im2col rows
    take; on 8x8 it would take 9 K tiles for 7 and not chain.)"""
    blob, x = models["cnn2", True]
    qm = import_onnx(blob)
    config = NpuConfig(rows=3, cols=3)
    on_8x8 = compile_model(qm, NpuConfig(), batch=len(x))           # conv2 + fc chain instead (position-major)
    assert [(info.input, info.output) for info in on_8x8.layers] == [("host", "host"), ("host", "chip"),
                                                                   ("chip", "host")]
    compiled = compile_model(qm, config, batch=len(x))
    assert compiled.stages == 2
    assert [(info.input, info.output) for info in compiled.layers] == [("host", "chip"), ("chip", "host"),
                                                                     ("host", "host")]
    with pytest.raises(ValueError, match="use run_model"):
        compiled.program(x)
    chained, apart = run_model(compiled, x), run_model(compile_model(qm, config, batch=len(x), fuse=False), x)
    assert np.array_equal(chained.values, apart.values) and np.array_equal(chained.values, qm.reference(x))
    assert chained.counters["dma_in_bytes"] < apart.counters["dma_in_bytes"]
    assert chained.counters["dma_out_bytes"] < apart.counters["dma_out_bytes"]


def test_profiled_layers_add_up(models):
    blob, x = models["mlp", False]
    qm = import_onnx(blob)
    plain = run_model(compile_model(qm, batch=len(x)), x)
    prof = run_model(compile_model(qm, batch=len(x), profile=True), x)
    assert np.array_equal(plain.values, prof.values)
    for name in ("macs", "busy_cycles", "act_ops", "dma_in_bytes", "dma_out_bytes"):
        assert sum(c[name] for c in prof.layer_counters) == plain.counters[name]
    # onnxruntime quantizes MatMul + Add as MatMul -> Q -> DQ -> Add: the Adds are identity layers
    assert [info.op for info in compile_model(qm).layers] == ["MatMul", "Add", "MatMul", "Add"]
    # (an Add's identity weights on chip: only the 8x8 tiles on the diagonal run, the zero ones are skipped)
    assert NpuConfig().rows == NpuConfig().cols == 8
    assert [c["macs"] for c in prof.layer_counters] == [len(x) * macs for macs in
                                                       (20 * 24, 3 * 8 * 8, 24 * 10, 8 * 8 + 2 * 2)]


def test_single_program_api_and_lazy_compile(models):
    blob, x = models["mlp", True]
    compiled = opennpu.compile(blob, NpuConfig(rows=4, cols=4), batch=len(x))
    result = GoldenNpu(compiled.config).run(compiled.program(x))
    assert np.array_equal(compiled.decode_outputs(result), run_model(compiled, x).outputs)


def test_wrong_input_shape_is_refused_before_running(models):
    blob, x = models["mlp", False]
    compiled = compile_model(import_onnx(blob), batch=len(x))

    class Backend:
        def run(self, program):
            raise AssertionError("nothing may run")
    for bad in (x[:5], x[:, :10], x.astype(np.int8)):
        with pytest.raises(ValueError, match="input 'x'"):
            run_model(compiled, bad, Backend())
    for value in (np.nan, np.inf, -np.inf):             # no int8 value: refused, not quantized to garbage
        bad = x.copy()
        bad[2, 3] = value
        with pytest.raises(ValueError, match=r"input 'x' holds 1 NaN or infinite value\(s\), the first at index \(2, 3\)"):
            run_model(compiled, bad, Backend())


def test_unsupported_op_names_op_and_node():
    blob = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                   helper.make_node("Sin", ["h"], ["y"], name="wave")], {"w": _w(8, 4)}, (8,), (4,))
    q = quantize_onnx(blob, RNG.random((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="Sin node 'wave': unsupported op"):
        import_onnx(q)


def test_float_weights_are_refused_and_per_channel_scales_compile(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    blob = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": _w(8, 4)}, (8,), (4,))
    with pytest.raises(ValueError, match="MatMul node 'fc'.*must be quantized"):
        import_onnx(blob)
    x = RNG.random((6, 8), dtype=np.float32)

    class Reader(CalibrationDataReader):
        it = iter([{"x": row[None]} for row in x])

        def get_next(self):
            return next(self.it, None)
    (tmp_path / "f.onnx").write_bytes(blob)
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    qm, _, _ = _check((tmp_path / "q.onnx").read_bytes(), x)
    assert qm.layers[0].multiplier.shape == (4,)


def _per_channel_qdq(w_shape, axis, zp, op="MatMul", **attrs):
    """x -> Q -> DQ -> op(DQ(int8 weights, 4 per-channel scales along ``axis``)) -> Q -> DQ."""
    n = w_shape[axis]
    inits = {"s": np.float32(0.05), "z": np.int8(0), "w": RNG.integers(-100, 100, w_shape).astype(np.int8),
             "sw": np.linspace(0.01, 0.04, n).astype(np.float32), "zw": np.asarray(zp, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=axis),
             helper.make_node(op, ["xd", "wd"], ["m"], name="layer", **attrs),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    return nodes, inits


def test_per_channel_axis_and_zero_points_are_checked():
    nodes, inits = _per_channel_qdq((6, 4), 1, [0] * 4)
    _check(_model(nodes, inits, (6,), (4,)), RNG.random((5, 6), dtype=np.float32))
    nodes, inits = _per_channel_qdq((4, 6), 0, [0] * 4, "Gemm", transB=1)
    _check(_model(nodes, inits, (6,), (4,)), RNG.random((5, 6), dtype=np.float32))
    nodes, inits = _per_channel_qdq((4, 4), 0, [0] * 4)        # MatMul scales per input row
    with pytest.raises(ValueError, match="MatMul node 'layer'.*axis 0 .*per output channel \\(axis 1\\)"):
        import_onnx(_model(nodes, inits, (4,), (4,)))
    nodes, inits = _per_channel_qdq((4, 4), 1, [0] * 4, "Gemm", transB=1)
    with pytest.raises(ValueError, match="Gemm node 'layer'.*axis 1 .*\\(axis 0\\)"):
        import_onnx(_model(nodes, inits, (4,), (4,)))
    nodes, inits = _per_channel_qdq((4, 2, 3, 3), 1, [0] * 2, "Conv")
    with pytest.raises(ValueError, match="Conv node 'layer'.*axis 1 .*\\(axis 0\\)"):
        import_onnx(_model(nodes, inits, (2, 5, 5), (4, 3, 3)))
    nodes, inits = _per_channel_qdq((6, 4), 1, [0, 0, 3, 0])   # zero points per channel fold into the weights
    _check(_model(nodes, inits, (6,), (4,)), RNG.random((5, 6), dtype=np.float32))
    nodes, inits = _per_channel_qdq((6, 4), 1, [0] * 3)
    with pytest.raises(ValueError, match="MatMul node 'layer'.*3 scales and 3 zero points"):
        import_onnx(_model(nodes, inits | {"sw": inits["sw"][:3]}, (6,), (4,)))


def test_cli_runs_a_branching_graph(tmp_path, capsys):
    """A residual graph is not a chain: ``import_onnx`` says so, ``opennpu run`` runs it as a graph (every op
    reported with where it ran) and writes the same output as the graph importer's own run."""
    from opennpu.cli import main
    from opennpu.compiler.onnx_import import NotAChain, import_onnx_graph
    x = RNG.random((8, 8), dtype=np.float32)
    blob = quantize_onnx(_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                                 helper.make_node("MatMul", ["h", "w2"], ["h2"], name="fc2"),
                                 helper.make_node("Add", ["h", "h2"], ["y"], name="residual")],
                                {"w": _w(8, 8), "w2": _w(8, 8)}, (8,), (8,)), x)
    with pytest.raises(NotAChain, match="fc2.*runs as a graph"):
        import_onnx(blob)
    (tmp_path / "m.onnx").write_bytes(blob)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(layer["op"], layer["device"]) for layer in report["layers"]] == \
        [("fully_connected", "npu"), ("fully_connected", "npu"), ("add", "npu")]
    y, _ = import_onnx_graph(blob).run(x)
    assert np.array_equal(np.load(tmp_path / "y.npy"), y)


def test_cli_run(models, tmp_path, capsys):
    from opennpu.cli import main
    blob, x = models["cnn", True]
    (tmp_path / "m.onnx").write_bytes(blob)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == str(tmp_path / "y.npy") and len(report["layers"]) == 2
    assert report["total"]["dma_bytes"] < report["unfused"]["dma_bytes"]
    assert sum(layer["macs"] for layer in report["layers"]) == report["total"]["macs"]
    y = np.load(tmp_path / "y.npy")
    expected = onnxruntime_session(blob).run(None, {"x": x})[0]
    assert y.shape == expected.shape
    np.save(tmp_path / "bad.npy", x[:, :1])
    assert main(["run", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "must have shape" in capsys.readouterr().err


def test_cli_report_on_a_model(models, tmp_path, capsys):
    """``opennpu report MODEL.onnx``: per-layer figures, fused vs unfused from the model compiler."""
    from opennpu.cli import main
    blob, _ = models["mlp", False]
    (tmp_path / "m.onnx").write_bytes(blob)
    assert main(["report", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "rep"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    from opennpu.compiler.onnx_import import import_onnx
    assert len(report["layers"]) == len(import_onnx(blob).layers)
    assert (tmp_path / "rep" / "fusion.png").stat().st_size > 0
    fused, unfused = report["fused"]["fused"], report["fused"]["unfused"]
    assert fused["dma_in_bytes"] + fused["dma_out_bytes"] < unfused["dma_in_bytes"] + unfused["dma_out_bytes"]
    assert report["total"]["macs"] == unfused["macs"]
    assert fused["macs"] < unfused["macs"]      # on chip, the identity Adds' all-zero weight tiles are skipped


def _conv_model(channels, hw, kernel, stride, pads, dilation, n, seed, in_zp=-128):
    from opennpu.compiler.qlayers import ConvGeom, QuantModel, TensorSpec
    rng = np.random.default_rng(seed)
    geom = ConvGeom((channels, *hw), kernel, stride, pads, dilation, 1)
    k = channels * kernel[0] * kernel[1]
    layer = QLayer("conv", "Conv", rng.integers(-128, 128, (k, n)), rng.integers(-5000, 5000, n),
                   rng.integers(1 << 29, 1 << 31, n), rng.integers(-12, -6, n), 3, -128, 127, None,
                   (channels, *hw), (1.0, in_zp), (1.0, 3), geom)
    spec_in = TensorSpec("x", (channels, *hw), None, "int8", 1.0, in_zp)
    spec_out = TensorSpec("y", layer.out_shape, None, "int8", 1.0, 3)
    return QuantModel([layer], spec_in, spec_out)


@pytest.mark.parametrize("channels, hw, kernel, stride, pads, dilation, n, rows, batch", [
    (16, (7, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 20, 16, 2),    # 'same' 3x3, two N tiles
    (8, (9, 8), (3, 3), (2, 2), (0, 0, 1, 1), (1, 1), 5, 4, 3),       # stride 2, TFLite's SAME (pad after)
    (8, (5, 11), (3, 1), (1, 2), (2, 0, 1, 0), (2, 1), 7, 4, 2),      # dilated rows, stride-2 columns
    (12, (6, 6), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 9, 4, 5),      # stride 2, padded on both sides
    (4, (3, 5), (3, 3), (1, 1), (2, 2, 2, 2), (1, 1), 3, 4, 1),       # pads wider than the kernel reach
])
def test_direct_convolution_reads_its_input_in_place(channels, hw, kernel, stride, pads, dilation, n, rows, batch):
    """A convolution that starts a stage loads its input once, as it is, and reads it with strided and
    padding-row COMPUTE runs (``model_program.direct_conv``): bit-exact with the layer's reference, with
    input bytes those of the input tensor (not the im2col rows), on golden and (one case) pysim."""
    from opennpu.compiler import model_program
    from opennpu.golden.isa import AStep, Opcode
    config = NpuConfig(rows=rows, cols=rows, act_depth=512, wgt_depth=256, acc_depth=128)
    qm = _conv_model(channels, hw, kernel, stride, pads, dilation, n, seed=channels + n)
    compiled = compile_model(qm, config, batch=batch)
    assert compiled._stages[0].plans[0].in_place
    x = np.random.default_rng(3).integers(-128, 128, (batch, channels, *hw)).astype(np.int8)
    run = run_model(compiled, x)
    assert np.array_equal(run.values, qm.reference(x))
    program = compiled._stage_program(0, qm.quantize_input(x))
    steps = {cmd.astep for cmd in program.commands if cmd.op == Opcode.COMPUTE}
    assert AStep.HOLD in steps or not any(pads)
    assert (AStep.DOUBLE in steps) == (stride[1] == 2)
    words = -(-channels // rows) * hw[0] * hw[1] * batch + 1          # the input and the padding row
    assert sum(cmd.rows for cmd in program.commands if cmd.op == Opcode.LOAD and cmd.buf == 0) == words
    if batch == 3:
        from opennpu.sim.driver import Npu
        assert run_model(compiled, x, backend=Npu(config, "pysim")).counters == run.counters
    if kernel == (3, 3):                # 3 channels: a K tile per tap, where im2col takes 7 K tiles
        assert not model_program.direct_conv(_conv_model(3, hw, kernel, stride, pads, dilation, n, 0).layers[0], config)
    pointwise = _conv_model(channels, hw, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), n, 0).layers[0]   # the same bytes
    assert not model_program.direct_conv(pointwise, config)


def _conv_layer(name, channels, hw, kernel, stride, pads, n, rng, in_zp, out_zp):
    from opennpu.compiler.qlayers import ConvGeom
    geom = ConvGeom((channels, *hw), kernel, stride, pads, (1, 1), 1)
    return QLayer(name, "Conv", rng.integers(-128, 128, (channels * kernel[0] * kernel[1], n)),
                  rng.integers(-5000, 5000, n), rng.integers(1 << 29, 1 << 31, n), rng.integers(-12, -8, n),
                  out_zp, -128, 127, None, (channels, *hw), (1.0, in_zp), (1.0, out_zp), geom)


@pytest.mark.parametrize("first_in_place", [True, False])
def test_convolution_chain_reads_each_output_in_place(first_in_place):
    """conv -> conv (stride 2) -> 1x1 conv -> conv in one program: each later convolution reads the one before
    where its ACTIVATE left it, with its own padding row (its input zero point); several micro-batches
    (the next one's input loads while the current one runs its later layers); the third layer's output
    overwrites the first one's, dead by then. Bit-exact with the
    reference; the host bus carries the input and the last output only."""
    from opennpu.compiler.qlayers import QuantModel, TensorSpec
    rng = np.random.default_rng(11)
    c0 = 8 if first_in_place else 2                    # 2 channels: im2col takes fewer K tiles
    layers = [_conv_layer("a", c0, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), 8, rng, -128, -20),
              _conv_layer("b", 8, (6, 6), (3, 3), (2, 2), (0, 0, 1, 1), 4, rng, -20, 7),
              _conv_layer("c", 4, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), 8, rng, 7, 0),
              _conv_layer("d", 8, (3, 3), (3, 3), (1, 1), (1, 1, 1, 1), 6, rng, 0, 0)]   # writes over a's
    qm = QuantModel(layers, TensorSpec("x", (c0, 6, 6), None, "int8", 1.0, -128),
                    TensorSpec("y", (6, 3, 3), None, "int8", 1.0, 0))
    config = NpuConfig(rows=4, cols=4, act_depth=512, wgt_depth=256, acc_depth=64)
    compiled = compile_model(qm, config, batch=5)
    assert compiled.stages == 1 and compiled._stages[0].mb < 5
    plans = compiled._stages[0].plans
    assert [plan.in_place for plan in plans] == [first_in_place, True, True, True]
    assert plans[2].out_base == plans[0].out_base != plans[1].out_base     # outputs alternate two regions
    x = rng.integers(-128, 128, (5, c0, 6, 6)).astype(np.int8)
    run = run_model(compiled, x)
    assert np.array_equal(run.values, qm.reference(x))
    assert run.counters["dma_out_bytes"] == 5 * 9 * 2 * config.bus_bytes       # 6 channels: two N tiles
    if first_in_place:
        from opennpu.sim.driver import Npu
        assert run_model(compiled, x, backend=Npu(config, "pysim")).counters == run.counters


def _residual_model(rng, channels=8):
    """a (3x3) -> b (3x3) -> add(x, b) -> c (3x3, stride 2), s (1x1, stride 2, from the add) -> add(c, s): two
    residual blocks, the second with a strided shortcut, as ResNet's."""
    from opennpu.compiler.qlayers import QAdd, QuantModel, TensorSpec
    from test_elementwise import tflite_add_attrs
    n = channels
    attrs = []
    for relu in (True, False):
        z1, z2, zo = (int(z) for z in rng.integers(-100, 100, 3))
        attrs.append(tflite_add_attrs(*np.exp(rng.uniform(-5, -1, 3)), (z1, z2), zo, qmin=zo if relu else -128))
    layers = [_conv_layer("a", channels, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), n, rng, attrs[0].in_zp[0], -20),
              _conv_layer("b", n, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), n, rng, -20, attrs[0].in_zp[1]),
              QAdd("add1", attrs[0], (n, 6, 6), (-1, None), (1.0, attrs[0].out_zp)),
              _conv_layer("c", n, (6, 6), (3, 3), (2, 2), (0, 0, 1, 1), n, rng, attrs[0].out_zp, attrs[1].in_zp[0]),
              _conv_layer("s", n, (6, 6), (1, 1), (2, 2), (0, 0, 0, 0), n, rng, attrs[0].out_zp, attrs[1].in_zp[1]),
              QAdd("add2", attrs[1], (n, 3, 3), (3, None), (1.0, attrs[1].out_zp))]
    layers[4].source = 2
    return QuantModel(layers, TensorSpec("x", (channels, 6, 6), None, "int8", 1.0, attrs[0].in_zp[0]),
                      TensorSpec("y", (n, 3, 3), None, "int8", 1.0, attrs[1].out_zp))


@pytest.mark.parametrize("seed", range(3))
def test_residual_blocks_run_in_one_program(seed):
    """Two residual blocks (the first ADD reads the stage input, the second a strided 1x1 shortcut) in
    one program: every tensor but the input and the last ADD's output stays on chip, the block input
    keeps its region until its ADD (the next micro-batch's input loads only after it), the outputs
    reuse the regions of dead ones. Bit-exact with the reference (the host's TFLite ADD) on golden over
    several micro-batches, and on pysim (one seed) with the same counters."""
    from opennpu.compiler import model_program
    from opennpu.golden.isa import LutTable, Opcode
    rng = np.random.default_rng(seed)
    qm = _residual_model(rng)
    assert qm.is_graph and qm.sources(2) == (-1, 1) and qm.sources(4) == (2,) and qm.sources(5) == (3, 4)
    config = NpuConfig(rows=4, cols=4, act_depth=512, wgt_depth=256, acc_depth=64)
    batch = 3
    compiled = compile_model(qm, config, batch=batch)
    stage = compiled._stages[0]
    assert compiled.stages == 1 and 1 <= stage.mb < batch
    assert [info.output for info in compiled.layers] == ["chip"] * 5 + ["host"]
    plans = stage.plans
    assert plans[2].out_base == plans[0].out_base        # a's output is dead once b has read it
    assert len({plans[k].out_base for k in (0, 1, 3, 4)}) == 3   # add1's output lives until s has read it
    x = rng.integers(-128, 128, (batch, 8, 6, 6)).astype(np.int8)
    run = run_model(compiled, x)
    assert np.array_equal(run.values, qm.reference(x))
    words_in = batch * 2 * 36 + 4                         # the input (two channel groups) and 4 padding rows
    program = compiled._stage_program(0, qm.quantize_input(x))
    assert sum(c.rows for c in program.commands if c.op == Opcode.LOAD and c.buf == 0) == words_in
    assert run.counters["dma_out_bytes"] == batch * 9 * 2 * config.bus_bytes
    assert model_program.one_program(qm, config, batch)
    # the hardware holds one set of ADD tables: two ADDs reload theirs in every micro-batch
    tables = [c for c in program.commands if c.op == Opcode.LOAD_LUT and c.table == LutTable.EW]
    assert len(tables) == 2 * len(stage.micro_batches)
    if seed == 0:
        from opennpu.sim.driver import Npu
        assert run_model(compiled, x, backend=Npu(config, "pysim")).counters == run.counters


def test_one_residual_block_loads_its_add_tables_once():
    """A stage with one ADD loads its tables once, while the layers before it compute (not behind the ADD's
    CONFIG barrier), for all its micro-batches; bit-exact with the reference."""
    from opennpu.compiler.qlayers import QuantModel, TensorSpec
    from opennpu.golden.isa import LutTable, Opcode
    full = _residual_model(np.random.default_rng(4))
    qm = QuantModel(full.layers[:3], full.input, TensorSpec("y", (8, 6, 6), None, "int8", *full.layers[2].out_q))
    config = NpuConfig(rows=4, cols=4, act_depth=512, wgt_depth=256, acc_depth=64)
    compiled = compile_model(qm, config, batch=4)
    assert len(compiled._stages[0].micro_batches) > 1
    x = np.random.default_rng(5).integers(-128, 128, (4, 8, 6, 6)).astype(np.int8)
    program = compiled._stage_program(0, qm.quantize_input(x))
    kinds = [(c.op, getattr(c, "table", None)) for c in program.commands]
    first_table = kinds.index((Opcode.LOAD_LUT, LutTable.EW))
    assert kinds.count((Opcode.LOAD_LUT, LutTable.EW)) == 1
    configs = [k for k, (op, _) in enumerate(kinds) if op == Opcode.CONFIG]
    assert configs[0] < first_table < configs[2]          # while a or b computes, not behind the ADD's CONFIG
    assert np.array_equal(run_model(compiled, x).values, qm.reference(x))


def test_residual_model_that_does_not_fit_one_program_is_refused():
    """A graph model must be one program (its ADD reads a tensor an earlier stage would have sent away):
    ``one_program`` says so, and ``compile_model`` refuses it with the reason."""
    from opennpu.compiler import model_program
    qm = _residual_model(np.random.default_rng(0))
    small = NpuConfig(rows=4, cols=4, act_depth=128, wgt_depth=256, acc_depth=64)
    assert not model_program.one_program(qm, small, 1)
    with pytest.raises(ValueError, match="one program"):
        compile_model(qm, small, batch=1)


def test_quant_model_refuses_sources_it_cannot_read():
    """A layer that reads a later layer, an ADD whose source has another shape, an ADD first: ValueError."""
    from opennpu.compiler.qlayers import QAdd, QuantModel
    qm = _residual_model(np.random.default_rng(1))
    spec = qm.input
    with pytest.raises(ValueError, match="only the input"):
        QuantModel([qm.layers[0], QAdd("z", qm.layers[2].attrs, (8, 6, 6), (1, None), (1.0, 0))], spec, qm.output)
    with pytest.raises(ValueError, match="source gives"):
        QuantModel([qm.layers[0], qm.layers[1], QAdd("z", qm.layers[2].attrs, (8, 3, 3), (-1, None), (1.0, 0))],
                   spec, qm.output)
    with pytest.raises(ValueError, match="first layer"):
        QuantModel([qm.layers[2]], spec, qm.output)


def _random_graph_model(rng, lanes):
    """A random residual graph of one shape (C, H, W): a first convolution (3x3 read in place, or a 1x1
    one), then convolutions (3x3 'same' or 1x1) and ADDs, each reading random earlier tensors (the
    input included)."""
    from opennpu.compiler.qlayers import QAdd, QuantModel, TensorSpec
    from test_elementwise import tflite_add_attrs
    c = int(rng.choice([lanes, 2 * lanes, lanes + lanes // 2]))
    hw = (int(rng.integers(3, 6)), int(rng.integers(3, 6)))
    zps = {-1: int(rng.integers(-100, 100))}

    def conv(name, src, kernel):
        pads = (1, 1, 1, 1) if kernel == (3, 3) else (0, 0, 0, 0)
        zp = int(rng.integers(-100, 100))
        layer = _conv_layer(name, c, hw, kernel, (1, 1), pads, c, rng, zps[src], zp)
        return layer, zp

    layers = []
    first, zps[0] = conv("l0", -1, (3, 3) if rng.random() < 0.7 else (1, 1))
    layers.append(first)
    for k in range(1, int(rng.integers(3, 8))):
        if rng.random() < 0.4:
            a, b = (int(s) for s in rng.integers(-1, k, 2))
            zp = int(rng.integers(-100, 100))
            attrs = tflite_add_attrs(*np.exp(rng.uniform(-4, -1, 3)), (zps[a], zps[b]), zp,
                                     qmin=zp if rng.random() < 0.5 else -128)
            layers.append(QAdd(f"l{k}", attrs, (c, *hw), tuple(None if s == k - 1 else s for s in (a, b)), (1.0, zp)))
        else:
            src = int(rng.integers(-1, k))
            layer, zp = conv(f"l{k}", src, (3, 3) if rng.random() < 0.6 else (1, 1))
            layer.source = None if src == k - 1 else src
            layers.append(layer)
        zps[k] = zp
    return QuantModel(layers, TensorSpec("x", (c, *hw), None, "int8", 1.0, zps[-1]),
                      TensorSpec("y", (c, *hw), None, "int8", 1.0, zps[len(layers) - 1]))


@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.sampled_from([2, 4]), depth=st.sampled_from([96, 192, 512]),
       batch=st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_random_residual_graphs_compile_exactly_or_are_refused(seed, rows, depth, batch):
    """Random graphs of convolutions and ADDs (any layer reading any earlier tensor or the input, lanes
    partly empty too) on small SRAMs: where ``one_program`` says they fit, golden equals the reference
    over every micro-batch; where not, ``compile_model`` refuses them."""
    from opennpu.compiler import model_program
    rng = np.random.default_rng(seed)
    qm = _random_graph_model(rng, rows)
    config = NpuConfig(rows=rows, cols=rows, act_depth=depth, wgt_depth=128, acc_depth=32)
    if not qm.is_graph or not model_program.one_program(qm, config, batch):
        if qm.is_graph:
            with pytest.raises(ValueError, match="one program"):
                compile_model(qm, config, batch=batch)
        return
    compiled = compile_model(qm, config, batch=batch)
    x = rng.integers(-128, 128, (batch, *qm.input.shape)).astype(np.int8)
    assert np.array_equal(run_model(compiled, x).values, qm.reference(x))


def test_weight_slots_count_only_the_tiles_that_run():
    """A grouped convolution on chip (two channels a group, block-diagonal weights: half its K x N tiles all
    zero) whose live tiles fit the weight SRAM, though all its tiles would not, loads them once per
    micro-batch, not once per accumulator chunk (they were counted in slots before); bit-exact with the
    reference."""
    from opennpu.compiler.qlayers import QuantModel, TensorSpec
    from opennpu.golden.isa import Buf, Opcode
    rng = np.random.default_rng(7)
    a = _conv_layer("a", 4, (8, 8), (3, 3), (1, 1), (1, 1, 1, 1), 8, rng, -128, -3)
    b = _conv_layer("b", 8, (8, 8), (3, 3), (1, 1), (1, 1, 1, 1), 8, rng, -3, 5)
    b.w[np.arange(72)[:, None] // 18 != np.arange(8)[None, :] // 2] = 0    # channels 2g, 2g+1 -> 2g, 2g+1
    qm = QuantModel([a, b], TensorSpec("x", (4, 8, 8), None, "int8", 1.0, -128),
                    TensorSpec("y", (8, 8, 8), None, "int8", 1.0, 5))
    config = NpuConfig(rows=4, cols=4, act_depth=1024, wgt_depth=128, acc_depth=64)
    compiled = compile_model(qm, config, batch=2)
    stage = compiled._stages[0]
    assert [len(plan.slot_of) for plan in stage.plans] == [18, 18]     # b: 18 of its 36 tiles run
    assert len(stage.micro_batches) == 1 and 2 * 64 > config.acc_depth // 2   # several chunks of rows
    x = rng.integers(-128, 128, (2, 4, 8, 8)).astype(np.int8)
    program = compiled._stage_program(0, qm.quantize_input(x))
    assert sum(c.rows for c in program.commands if c.op == Opcode.LOAD and c.buf == Buf.WGT) == (18 + 18) * 4
    assert np.array_equal(run_model(compiled, x).values, qm.reference(x))
