"""TFLite import and host kernels against LiteRT's reference kernels (OpResolverType.BUILTIN_REF), with
0 LSB tolerance: the two MLPerf Tiny models end to end and node by node, and single-op models written
by tests/tflite_builder.py at strides, paddings, dilations, activations and scales the models lack."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tflite")

from opennpu.compiler.host_kernels import run_graph, run_node  # noqa: E402
from opennpu.compiler.mlperf import litert_reference  # noqa: E402
from opennpu.compiler.tflite_import import (NotQuantizedError, TFLiteFormatError, UnsupportedOpError,  # noqa: E402
                                            import_tflite)

from tflite_builder import ModelBuilder  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models" / "mlperf_tiny"
SHA256 = {"pretrainedResnet_quant.tflite": "3c002613d1b2475eb51dd78dfb85a546c8ae658dee71cf6ade43b022fe205415",
          "kws_ref_model.tflite": "aeea436800704fce17b17292e4412630ad856e9d777c044c64ef748a880bd0ae"}
RNG = np.random.default_rng(16)


def _interpreter(model, preserve=False):
    kind = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    it = litert.Interpreter(**kind, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                            experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


_litert = litert_reference          # LiteRT's reference kernels on each sample of a batch


def _structured(shape) -> np.ndarray:
    """Zeros, all -128, all 127, a ramp over the int8 range and its reverse."""
    n = int(np.prod(shape))
    ramp = (np.arange(n) % 256 - 128).astype(np.int8).reshape(shape)
    return np.stack([np.zeros(shape, np.int8), np.full(shape, -128, np.int8), np.full(shape, 127, np.int8),
                     ramp, ramp[::-1].copy()])


def _inputs(shape, random=3) -> np.ndarray:
    return np.concatenate([RNG.integers(-128, 128, (random, *shape), dtype=np.int8), _structured(shape)])


def _assert_exact(model, x):
    graph = import_tflite(model)
    mine = run_graph(graph, x)[0]
    ref = _litert(model, x)
    assert mine.dtype == ref.dtype == np.int8
    assert mine.shape == ref.shape
    diff = np.abs(mine.astype(int) - ref.astype(int))
    assert diff.max() == 0, f"{np.count_nonzero(diff)} of {diff.size} values differ, up to {diff.max()} LSB"


# -- the MLPerf Tiny models ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SHA256))
def test_model_files_are_the_attributed_ones(name):
    assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == SHA256[name]
    assert "Apache License" in (MODELS / "LICENSE.md").read_text()
    assert name in (MODELS / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(SHA256))
def test_mlperf_model_end_to_end_bit_exact(name):
    model = MODELS / name
    shape = tuple(_interpreter(model).get_input_details()[0]["shape"][1:])
    _assert_exact(model, _inputs(shape))


@pytest.mark.parametrize("name", sorted(SHA256))
def test_mlperf_model_each_node_bit_exact(name):
    """Every node, fed LiteRT's own input tensors, reproduces LiteRT's output tensor exactly."""
    model = MODELS / name
    graph = import_tflite(model)
    it = _interpreter(model, preserve=True)
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    x = RNG.integers(-128, 128, (1, *graph.tensors[graph.inputs[0]].shape), dtype=np.int8)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    ops = set()
    for node in graph.nodes:
        values = {n: it.get_tensor(index[n]).astype(np.int64).reshape(1, *graph.tensors[n].shape)
                  for n in node.inputs if n is not None and not graph.tensors[n].is_const}
        mine = run_node(graph, node, values)
        ref = it.get_tensor(index[node.output]).astype(np.int64).reshape(mine.shape)
        assert np.array_equal(mine, ref), f"{node.op} {node.name!r}: {np.count_nonzero(mine != ref)} values differ"
        ops.add(node.op)
    expected = {"conv2d", "average_pool2d", "reshape", "fully_connected", "softmax"} | \
        ({"add"} if "Resnet" in name else {"depthwise_conv2d"})
    assert ops == expected


# -- single-op models ---------------------------------------------------------------------------------------
def _q(scale, zp):
    return {"scale": [scale], "zero_point": [zp]}


def _conv_model(op, in_shape, out_shape, kernel, stride, dilation, padding, act, per_channel, bias=True,
                multiplier=1):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, *in_shape), **_q(0.05, 3))
    cin, cout = in_shape[2], out_shape[2]
    scales = RNG.uniform(0.002, 0.02, cout) if per_channel else np.full(1, 0.01)
    if op == "CONV_2D":
        wshape, axis, options = (cout, *kernel, cin), 0, "Conv2DOptions"
        extra = {}
    else:
        wshape, axis, options = (1, *kernel, cout), 3, "DepthwiseConv2DOptions"
        extra = {"DepthMultiplier": multiplier}
    w = mb.tensor("w", wshape, scale=scales, zero_point=np.zeros(len(scales)), axis=axis,
                  data=RNG.integers(-127, 128, wshape))
    inputs = [x, w]
    if bias:
        inputs.append(mb.tensor("b", (cout,), "int32", scale=scales * 0.05, zero_point=np.zeros(len(scales)),
                                data=RNG.integers(-3000, 3000, cout)))
    y = mb.tensor("y", (1, *out_shape), **_q(0.04, -7))
    mb.op(op, inputs, [y], options, Padding=padding, StrideW=stride[1], StrideH=stride[0],
          FusedActivationFunction=act, DilationWFactor=dilation[1], DilationHFactor=dilation[0], **extra)
    return mb.build([x], [y])


def _out(size, k, s, d, padding):
    eff = (k - 1) * d + 1
    return (size + s - 1) // s if padding == 0 else (size + s - eff) // s


CONV_CASES = [  # kernel, stride, dilation, padding (0 SAME, 1 VALID), fused activation, per-channel
    ((3, 3), (1, 1), (1, 1), 0, 1, True), ((3, 3), (2, 2), (1, 1), 0, 3, True), ((3, 3), (2, 1), (1, 1), 1, 0, False),
    ((5, 2), (1, 3), (1, 1), 0, 2, True), ((3, 3), (1, 1), (2, 2), 0, 0, True), ((2, 3), (2, 2), (2, 1), 1, 1, True),
    ((1, 1), (1, 1), (1, 1), 1, 3, True), ((4, 4), (3, 3), (1, 1), 0, 0, True),
]


@pytest.mark.parametrize("kernel,stride,dilation,padding,act,per_channel", CONV_CASES)
def test_conv2d_bit_exact(kernel, stride, dilation, padding, act, per_channel):
    h, w = 11, 10
    out = (_out(h, kernel[0], stride[0], dilation[0], padding), _out(w, kernel[1], stride[1], dilation[1], padding), 5)
    model = _conv_model("CONV_2D", (h, w, 3), out, kernel, stride, dilation, padding, act, per_channel)
    _assert_exact(model, _inputs((h, w, 3)))


@pytest.mark.parametrize("kernel,stride,dilation,padding,act,per_channel", CONV_CASES)
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d_bit_exact(kernel, stride, dilation, padding, act, per_channel, multiplier):
    h, w, c = 9, 12, 4
    out = (_out(h, kernel[0], stride[0], dilation[0], padding), _out(w, kernel[1], stride[1], dilation[1], padding),
           c * multiplier)
    model = _conv_model("DEPTHWISE_CONV_2D", (h, w, c), out, kernel, stride, dilation, padding, act, per_channel,
                        bias=act != 2, multiplier=multiplier)
    _assert_exact(model, _inputs((h, w, c)))


@pytest.mark.parametrize("act,bias,in_shape", [(0, True, (24,)), (1, True, (2, 3, 4)), (3, False, (24,))])
def test_fully_connected_bit_exact(act, bias, in_shape):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, *in_shape), **_q(0.1, -20))
    w = mb.tensor("w", (7, 24), **_q(0.02, 0), data=RNG.integers(-127, 128, (7, 24)))
    inputs = [x, w] + ([mb.tensor("b", (7,), "int32", **_q(0.002, 0), data=RNG.integers(-5000, 5000, 7))]
                       if bias else [])
    y = mb.tensor("y", (1, 7), **_q(0.15, 4))
    mb.op("FULLY_CONNECTED", inputs, [y], "FullyConnectedOptions", FusedActivationFunction=act)
    model = mb.build([x], [y])
    _assert_exact(model, _inputs(in_shape, random=8))


@pytest.mark.parametrize("q1,q2,qo,act,const_shape", [
    ((0.05, -128), (0.1, 4), (0.05, -128), 1, None),        # ResNet-8's residual form
    ((0.2, 10), (0.03, -3), (0.1, 0), 0, None),
    ((0.07, 0), (0.07, 0), (0.02, 5), 3, None),
    ((0.05, 2), (0.08, -9), (0.06, -1), 0, (1, 1, 1, 6)),  # broadcast constant operand
])
def test_add_bit_exact(q1, q2, qo, act, const_shape):
    mb = ModelBuilder()
    shape = (1, 5, 4, 6)
    a = mb.tensor("a", shape, **_q(*q1))
    if const_shape is None:
        b = mb.tensor("b", shape, **_q(*q2))
        inputs = [a, b]
    else:
        b = mb.tensor("b", const_shape, **_q(*q2), data=RNG.integers(-128, 128, const_shape))
    y = mb.tensor("y", shape, **_q(*qo))
    mb.op("ADD", [a, b], [y], "AddOptions", FusedActivationFunction=act)
    if const_shape is not None:
        _assert_exact(mb.build([a], [y]), _inputs(shape[1:]))
        return
    model = mb.build(inputs, [y])      # two graph inputs: compare the node itself
    graph = import_tflite(model)
    x1 = _inputs(shape[1:])
    x2 = x1[::-1].copy()
    it = _interpreter(model)
    ref = []
    for s1, s2 in zip(x1, x2):
        it.set_tensor(it.get_input_details()[0]["index"], s1[None])
        it.set_tensor(it.get_input_details()[1]["index"], s2[None])
        it.invoke()
        ref.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    mine = run_node(graph, graph.nodes[0], {"a": x1.astype(np.int64), "b": x2.astype(np.int64)})
    assert np.array_equal(mine, np.stack(ref).astype(np.int64))


@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("filt,stride,padding,act", [((2, 2), (2, 2), 1, 0), ((3, 3), (1, 1), 0, 1),
                                                     ((3, 2), (2, 3), 0, 3), ((7, 7), (1, 1), 1, 0),
                                                     ((4, 3), (3, 2), 1, 2)])
def test_pool_bit_exact(op, filt, stride, padding, act):
    h, w, c = 7, 9, 3
    mb = ModelBuilder()
    x = mb.tensor("x", (1, h, w, c), **_q(0.03, -11))
    y = mb.tensor("y", (1, _out(h, filt[0], stride[0], 1, padding), _out(w, filt[1], stride[1], 1, padding), c),
                  **_q(0.03, -11))
    mb.op(op, [x], [y], "Pool2DOptions", Padding=padding, StrideW=stride[1], StrideH=stride[0],
          FilterWidth=filt[1], FilterHeight=filt[0], FusedActivationFunction=act)
    _assert_exact(mb.build([x], [y]), _inputs((h, w, c), random=6))


@pytest.mark.parametrize("scale,beta,shape", [(0.17185351, 1.0, (10,)), (0.14469251, 1.0, (12,)),
                                              (0.01, 1.0, (30,)), (0.5, 1.0, (5,)), (1.0, 0.7, (3, 7)),
                                              (0.003, 2.0, (64,)), (2.5, 1.0, (4,))])
def test_softmax_bit_exact(scale, beta, shape):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, *shape), **_q(scale, 3))
    y = mb.tensor("y", (1, *shape), **_q(1 / 256, -128))
    mb.op("SOFTMAX", [x], [y], "SoftmaxOptions", Beta=beta)
    model = mb.build([x], [y])
    n = int(np.prod(shape))
    # every difference to the row maximum, 0..255, appears across these rows
    sweeps = np.stack([np.clip(np.arange(n) * k - 128, -128, 127) for k in (1, 3, 17, 85, 255)]).astype(np.int8)
    x = np.concatenate([_inputs(shape, random=40), sweeps.reshape(-1, *shape)])
    _assert_exact(model, x)


def test_reshape_bit_exact():
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 2, 3, 4), **_q(0.1, 0))
    s = mb.tensor("s", (2,), "int32", data=[-1, 24])
    y = mb.tensor("y", (1, 24), **_q(0.1, 0))
    mb.op("RESHAPE", [x, s], [y], "ReshapeOptions")
    _assert_exact(mb.build([x], [y]), _inputs((2, 3, 4)))


# -- bad models and inputs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 7, 100, 0.25, 0.5, 0.75, 0.99, -1])
def test_truncated_model_is_a_format_error(keep):
    data = (MODELS / "kws_ref_model.tflite").read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else len(data) - 1 if keep == -1 else int(len(data) * keep)
    with pytest.raises(TFLiteFormatError) as info:
        import_tflite(data[:cut])
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_garbage_model_is_a_format_error(tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(b"\x18\x00\x00\x00TFL3" + RNG.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(TFLiteFormatError, match="bad.tflite: truncated or corrupt"):
        import_tflite(path)
    path.write_bytes(b"this is an ONNX file, honestly")
    with pytest.raises(TFLiteFormatError, match="not a TFLite model"):
        import_tflite(path)


def test_float_model_says_not_quantized_and_how():
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 4), "float32")
    w = mb.tensor("w", (3, 4), "float32", data=np.ones((3, 4)))
    y = mb.tensor("y", (1, 3), "float32")
    mb.op("FULLY_CONNECTED", [x, w], [y], "FullyConnectedOptions")
    with pytest.raises(NotQuantizedError) as info:
        import_tflite(mb.build([x], [y]))
    message = str(info.value)
    assert "not quantized" in message and "TFLITE_BUILTINS_INT8" in message and "representative_dataset" in message
    assert "\n" not in message


def test_unknown_op_is_named_with_its_node():
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 4), **_q(0.1, 0))
    h = mb.tensor("h", (1, 4), **_q(0.1, 0))
    y = mb.tensor("hard_swish_out", (1, 4), **_q(0.1, 0))
    mb.op("RESHAPE", [x], [h], "ReshapeOptions")
    mb.op("HARD_SWISH", [h], [y])
    with pytest.raises(UnsupportedOpError, match=r"HARD_SWISH node 1 \(output 'hard_swish_out'\).*not supported"):
        import_tflite(mb.build([x], [y]))


def test_conv2d_without_bias_is_refused_as_litert_does():
    model = _conv_model("CONV_2D", (5, 5, 3), (5, 5, 4), (3, 3), (1, 1), (1, 1), 0, 0, True, bias=False)
    with pytest.raises(RuntimeError, match="has_bias"):
        _interpreter(model)
    with pytest.raises(UnsupportedOpError, match="CONV_2D node 0 .*needs a bias"):
        import_tflite(model)


def test_wrong_input_is_refused():
    graph = import_tflite(MODELS / "kws_ref_model.tflite")
    with pytest.raises(ValueError, match=r"must be int8 of shape \(N, 49, 10, 1\)"):
        run_graph(graph, np.zeros((1, 49, 10, 1), np.float32))
    with pytest.raises(ValueError, match="must be int8"):
        run_graph(graph, np.zeros((1, 49, 10), np.int8))


def _single_layer(op, n=12, k=64):
    mb = ModelBuilder()
    if op == "FULLY_CONNECTED":
        x = mb.tensor("x", (1, k), **_q(0.08, -128))
        w = mb.tensor("w", (n, k), **_q(0.0083, 0), data=RNG.integers(-127, 128, (n, k)))
        y = mb.tensor("y", (1, n), **_q(0.1446, 14))
        options, fields = "FullyConnectedOptions", {}
    else:
        x = mb.tensor("x", (1, 1, 1, k), **_q(0.08, -128))
        w = mb.tensor("w", (n, 1, 1, k), **_q(0.0083, 0), data=RNG.integers(-127, 128, (n, 1, 1, k)))
        y = mb.tensor("y", (1, 1, 1, n), **_q(0.1446, 14))
        options, fields = "Conv2DOptions", {"Padding": 1, "StrideW": 1, "StrideH": 1, "DilationWFactor": 1,
                                            "DilationHFactor": 1}
    b = mb.tensor("b", (n,), "int32", **_q(0.0006, 0), data=RNG.integers(-5000, 5000, n))
    mb.op(op, [x, w, b], [y], options, **fields)
    return mb.build([x], [y]), (k,) if op == "FULLY_CONNECTED" else (1, 1, k)


@pytest.mark.parametrize("op,rounding", [("FULLY_CONNECTED", "single"), ("CONV_2D", "double")])
def test_requant_rounding_is_the_one_litert_uses(op, rounding):
    """LiteRT's reference FULLY_CONNECTED rounds once, its CONV_2D twice: the importer's choice matches
    LiteRT on 1500 samples, and the other rounding does not."""
    from dataclasses import replace
    model, shape = _single_layer(op)
    graph = import_tflite(model)
    node = graph.nodes[0]
    assert node.attrs.requant.rounding == rounding
    x = RNG.integers(-128, 128, (1500, *shape), dtype=np.int8)
    ref = _litert(model, x).astype(np.int64)
    values = {graph.inputs[0]: x.astype(np.int64)}
    assert np.array_equal(run_node(graph, node, values), ref)
    other = replace(node, attrs=replace(node.attrs, requant=replace(
        node.attrs.requant, rounding="double" if rounding == "single" else "single")))
    assert np.count_nonzero(run_node(graph, other, values) != ref) > 0


def test_cli_run_tflite(tmp_path, capsys):
    import json

    from opennpu.cli import main
    model = MODELS / "kws_ref_model.tflite"
    x = _inputs((49, 10, 1), random=2)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(model), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and np.array_equal(y, _litert(model, x))
    assert [layer["op"] for layer in report["layers"]] == [node.op for node in import_tflite(model).nodes]
    assert {layer["op"] for layer in report["layers"] if layer["device"] == "npu"} == {
        "conv2d", "depthwise_conv2d", "fully_connected", "average_pool2d"}
    assert report["total"]["npu_mac_fraction"] > 0.99 and report["total"]["cycles"] > 0
    assert 2.6e6 < report["total"]["macs"] / len(x) < 2.8e6         # the README's 2.7 M MACs for DS-CNN
    np.save(tmp_path / "bad.npy", x.astype(np.float32))
    assert main(["run", str(model), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "must be int8" in capsys.readouterr().err
    (tmp_path / "cut.tflite").write_bytes(model.read_bytes()[:1000])
    assert main(["run", str(tmp_path / "cut.tflite"), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and err.count("\n") == 1


def test_mlperf_benchmark_reports_the_host_bus_bytes_of_every_layer():
    """``bench_mlperf``'s per-layer table: every NPU layer with the bytes it moves over the host bus (a
    depthwise 3x3 convolution between two others reads its input in place on chip: no im2col rows, no
    round trip), every host op with the bytes it moves."""
    from opennpu.compiler.mlperf import bench_model, text
    from opennpu.config import NpuConfig
    result = bench_model(MODELS / "kws_ref_model.tflite", NpuConfig(rows=16, cols=16), 1)
    lines = text(result).splitlines()
    npu = [layer for layer in result["layers"] if layer["device"] == "npu"]
    depthwise = next(layer for layer in npu if layer["op"] == "depthwise_conv2d")
    # chained between convolutions: its input and output stay on chip; it runs on the depthwise COMPUTE, a
    # 15-tap FIR tile per channel group, and the bus carries 3 of its 4 tiles (each layer's first tile loads
    # in the layer before's last step: here the next one's 16-word tile and its padding row), and 4 bias
    # and requantization loads
    assert (depthwise["input"], depthwise["output"], depthwise["dma_out_bytes"]) == ("chip", "chip", 0)
    assert depthwise["dma_in_bytes"] == (3 * 15 + 16 + 1) * 16 + 4 * (4 * 16 + 5 * 16)
    assert len(lines) == 3 + len(result["layers"])              # (title, totals, header, a row per layer)
    for layer, row in zip(result["layers"], lines[3:]):
        assert row.strip().startswith(layer["op"]) and row.rstrip().endswith(layer["name"][-20:])
        figures = [f"{layer['dma_in_bytes']:,}", f"{layer['dma_out_bytes']:,}"] if layer["device"] == "npu" \
            else [f"{layer['host_bytes']:,}"]
        assert all(f in row.split() for f in figures), row
