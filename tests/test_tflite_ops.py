"""PAD, PADV2, MEAN, CONCATENATION, MUL, LOGISTIC and TANH: single-op models written by tests/tflite_builder.py,
imported and run on the host kernels, against LiteRT's reference kernels (OpResolverType.BUILTIN_REF) with
0 LSB tolerance; the models LiteRT refuses are refused by the importer too; and a model mixing them with
convolutions on the NPU (the partitioner keeps the new ops on the host)."""
import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tflite")

from opennpu.compiler.graph_npu import run_on_npu  # noqa: E402
from opennpu.compiler.host_kernels import run_node  # noqa: E402
from opennpu.compiler.tflite_import import UnsupportedOpError, import_tflite  # noqa: E402
from opennpu.config import NpuConfig  # noqa: E402

from test_tflite import _assert_exact, _inputs, _interpreter, _litert, _q  # noqa: E402
from tflite_builder import ModelBuilder  # noqa: E402

RNG = np.random.default_rng(1616)


def _assert_exact_inputs(model, xs):
    """A model with several graph inputs (``xs``: one batch per input): the host kernels node by node
    against LiteRT, sample by sample."""
    graph = import_tflite(model)
    values = {name: x.astype(np.int64) for name, x in zip(graph.inputs, xs)}
    for node in graph.nodes:
        values[node.output] = run_node(graph, node, values)
    it = _interpreter(model)
    ref = []
    for sample in zip(*xs):
        for detail, x in zip(it.get_input_details(), sample):
            it.set_tensor(detail["index"], x[None])
        it.invoke()
        ref.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    ref = np.stack(ref).astype(np.int64)
    mine = values[graph.outputs[0]]
    assert mine.shape == ref.shape
    assert np.array_equal(mine, ref), f"{np.count_nonzero(mine != ref)} of {ref.size} values differ"


def _refused_by_both(model, litert_match, match):
    with pytest.raises((RuntimeError, ValueError), match=litert_match):
        it = _interpreter(model)
        it.invoke()
    with pytest.raises(UnsupportedOpError, match=match):
        import_tflite(model)


# -- PAD, PADV2 -----------------------------------------------------------------------------------------------
def _pad_model(shape, pads, qi, qo, constant=None, paddings_const=True):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, *shape), **_q(*qi))
    p = mb.tensor("p", (len(shape) + 1, 2), "int32", data=[[0, 0], *pads] if paddings_const else None)
    inputs = [x, p]
    if constant is not None:
        inputs.append(mb.tensor("c", (1,), **_q(*qo), data=[constant]))
    out = (1, *(d + b + a for d, (b, a) in zip(shape, pads)))
    y = mb.tensor("y", out, **_q(*qo))
    mb.op("PADV2" if constant is not None else "PAD", inputs, [y])
    return mb.build([x], [y])


@pytest.mark.parametrize("shape,pads,qi,qo,constant", [
    ((5, 4, 3), ((1, 2), (0, 3), (2, 0)), (0.05, 3), (0.05, 3), None),
    ((5, 4, 3), ((1, 1), (1, 1), (0, 0)), (0.1, -128), (0.1, -128), None),     # a convolution's SAME border
    ((7,), ((3, 1),), (0.2, 10), (0.2, 10), None),
    ((3, 4, 2), ((0, 2), (1, 0), (0, 1)), (0.05, 3), (0.08, -9), None),       # grids differ: values copied
    ((5, 4, 3), ((2, 1), (1, 3), (0, 2)), (0.05, 3), (0.05, 3), -77),
    ((6, 2), ((1, 0), (0, 2)), (0.3, -5), (0.3, -5), 127),
])
def test_pad_bit_exact(shape, pads, qi, qo, constant):
    _assert_exact(_pad_model(shape, pads, qi, qo, constant), _inputs(shape))


def test_pad_refusals():
    with pytest.raises(UnsupportedOpError, match="PAD node 0 .*paddings .*must be a constant int32"):
        import_tflite(_pad_model((4, 3), ((1, 1), (0, 0)), (0.1, 0), (0.1, 0), paddings_const=False))
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 4), **_q(0.1, 0))
    p = mb.tensor("p", (2, 2), "int32", data=[[1, 0], [0, 0]])
    y = mb.tensor("y", (2, 4), **_q(0.1, 0))
    mb.op("PAD", [x, p], [y])
    with pytest.raises(UnsupportedOpError, match="none on the batch axis"):
        import_tflite(mb.build([x], [y]))
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 4), **_q(0.1, 0))
    p = mb.tensor("p", (2, 2), "int32", data=[[0, 0], [1, 1]])
    c = mb.tensor("c", (1,), **_q(0.1, 3), data=[5])
    y = mb.tensor("y", (1, 6), **_q(0.1, 0))
    mb.op("PADV2", [x, p, c], [y])
    _refused_by_both(mb.build([x], [y]), "zero_point", "pad value must be one int8 constant on the output's grid")


# -- MEAN -------------------------------------------------------------------------------------------------------
def _mean_model(shape, axes, keep, qi, qo):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, *shape), **_q(*qi))
    a = mb.tensor("a", (len(axes),), "int32", data=axes)
    full = (1, *shape)
    resolved = {i % len(full) for i in axes}
    out = tuple(1 if i in resolved else d for i, d in enumerate(full) if keep or i not in resolved)
    y = mb.tensor("y", out, **_q(*qo))
    mb.op("MEAN", [x, a], [y], "ReducerOptions", KeepDims=keep)
    return mb.build([x], [y])


@pytest.mark.parametrize("shape,axes,keep,qi,qo", [
    ((6, 5, 3), [1, 2], True, (0.05, 3), (0.02, -5)),        # global average pool, the 4-D special case
    ((6, 5, 3), [2, 1], False, (0.05, 3), (0.02, -5)),
    ((6, 5, 3), [1, 2], False, (0.05, 3), (0.05, 3)),        # one grid
    ((16, 16, 8), [1, 2], True, (0.1, -128), (0.013, -100)),  # 256 values: 1/n folded as 8 bits of shift
    ((6, 5, 3), [1], True, (0.05, 3), (0.03, 1)),
    ((6, 5, 3), [-1], False, (0.2, -20), (0.01, 0)),         # s_in / s_out = 20 (a left shift)
    ((6, 5, 3), [1, 2, -2], False, (0.05, 3), (0.04, 7)),    # duplicate axis
    ((3, 5, 7), [1, 2, 3], True, (0.07, 11), (0.003, -3)),
    ((7, 9), [2], False, (0.1, -10), (0.07, 2)),
    ((49,), [1], True, (0.5, 0), (0.25, 0)),
])
def test_mean_bit_exact(shape, axes, keep, qi, qo):
    _assert_exact(_mean_model(shape, axes, keep, qi, qo), _inputs(shape, random=20))


def test_mean_over_the_batch_is_refused():
    with pytest.raises(UnsupportedOpError, match="MEAN node 0 .*other than the batch axis 0"):
        import_tflite(_mean_model((4, 3), [0, 1], False, (0.1, 0), (0.1, 0)))


# -- CONCATENATION ----------------------------------------------------------------------------------------------
def _concat_model(shapes, axis, grids, out_grid, act=0):
    mb = ModelBuilder()
    xs = [mb.tensor(f"x{i}", (1, *s), **_q(*g)) for i, (s, g) in enumerate(zip(shapes, grids))]
    rank = len(shapes[0]) + 1
    a = axis % rank
    out = list((1, *shapes[0]))
    out[a] = sum((1, *s)[a] for s in shapes)
    y = mb.tensor("y", out, **_q(*out_grid))
    mb.op("CONCATENATION", xs, [y], "ConcatenationOptions", Axis=axis, FusedActivationFunction=act)
    return mb.build(xs, [y])


@pytest.mark.parametrize("shapes,axis", [
    (((4, 5, 3), (4, 5, 2)), -1), (((4, 5, 3), (4, 5, 2)), 3), (((2, 5, 3), (4, 5, 3)), 1),
    (((4, 1, 3), (4, 6, 3), (4, 2, 3)), 2), (((5,), (3,), (1,)), -1), (((2, 3), (2, 3)), 1),
])
def test_concatenation_bit_exact(shapes, axis):
    grid = (0.07, -9)
    model = _concat_model(shapes, axis, [grid] * len(shapes), grid)
    _assert_exact_inputs(model, [_inputs(s, random=4) for s in shapes])


def test_concatenation_refusals_match_litert():
    shapes = ((2, 3), (2, 3))
    _refused_by_both(_concat_model(shapes, -1, [(0.1, 0), (0.2, 0)], (0.1, 0)), "scale",
                     "every input on the output's grid")
    _refused_by_both(_concat_model(shapes, -1, [(0.1, 4), (0.1, 0)], (0.1, 4)), "zero_point",
                     "every input on the output's grid")
    _refused_by_both(_concat_model(shapes, -1, [(0.1, 0)] * 2, (0.1, 0), act=1), "activation",
                     "LiteRT's concatenation accepts none")
    with pytest.raises(UnsupportedOpError, match="batch axis"):
        import_tflite(_concat_model(shapes, 0, [(0.1, 0)] * 2, (0.1, 0)))


# -- MUL ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,other,q1,q2,qo,act", [
    ((4, 5, 3), (1, 1, 1, 3), (0.05, 3), (0.02, -5), (0.003, 7), 0),     # per-channel scale
    ((4, 5, 3), (1, 4, 5, 3), (0.1, -128), (0.07, 10), (0.9, -1), 1),
    ((4, 5, 3), (3,), (0.05, 3), (0.02, -5), (0.004, 0), 3),              # lower-rank constant
    ((4, 5, 3), (1, 4, 1, 1), (0.5, 0), (0.3, 0), (0.02, 4), 2),
    ((12,), (1, 12), (0.5, -3), (0.4, 2), (0.01, 0), 0),                   # multiplier 20 (a left shift)
    ((4, 5, 3), None, (0.05, 3), (0.03, -20), (0.006, -2), 0),          # two activations
    ((6,), None, (0.2, -128), (0.2, -128), (0.35, -128), 1),
])
def test_mul_bit_exact(shape, other, q1, q2, qo, act):
    mb = ModelBuilder()
    a = mb.tensor("a", (1, *shape), **_q(*q1))
    if other is None:
        b = mb.tensor("b", (1, *shape), **_q(*q2))
        out = (1, *shape)
    else:
        b = mb.tensor("b", other, **_q(*q2), data=RNG.integers(-128, 128, other))
        out = tuple(np.broadcast_shapes((1, *shape), other))
    y = mb.tensor("y", out, **_q(*qo))
    mb.op("MUL", [a, b], [y], "MulOptions", FusedActivationFunction=act)
    if other is None:
        x = _inputs(shape, random=10)
        _assert_exact_inputs(mb.build([a, b], [y]), [x, x[::-1].copy()])
    else:
        _assert_exact(mb.build([a], [y]), _inputs(shape, random=10))


# -- LOGISTIC, TANH ----------------------------------------------------------------------------------------------
def _lut_model(op, qi, qo, n=256):
    mb = ModelBuilder()
    x = mb.tensor("x", (1, n), **_q(*qi))
    y = mb.tensor("y", (1, n), **_q(*qo))
    mb.op(op, [x], [y])
    return mb.build([x], [y])


_ALL_VALUES = np.arange(-128, 128, dtype=np.int8)[None]
_INPUT_GRIDS = [(0.1, 0), (0.05, -128), (1 / 16, 0), (0.0039, 100), (0.3, 17), (0.9, -3), (0.0123, -60),
                (2 ** -5, 5), (0.02, 127), (0.17, -77)]


@pytest.mark.parametrize("op,qo", [("LOGISTIC", (1 / 256, -128)), ("TANH", (1 / 128, 0)),
                                   ("LOGISTIC", (1 / 256, 0)), ("TANH", (0.01, -5))])
def test_logistic_and_tanh_bit_exact(op, qo):
    """Every int8 input value, at ten input grids and at output grids TFLite's converter uses and others
    LiteRT accepts."""
    for qi in _INPUT_GRIDS:
        _assert_exact(_lut_model(op, qi, qo), _ALL_VALUES)
    for _ in range(20):
        _assert_exact(_lut_model(op, (float(RNG.uniform(0.001, 0.5)), int(RNG.integers(-128, 128))), qo),
                      _ALL_VALUES)


def test_logistic_output_scale_is_checked_as_litert_does():
    _refused_by_both(_lut_model("LOGISTIC", (0.1, 0), (1 / 128, -128)), "scale", "must have scale 1/256")


# -- with convolutions on the NPU ------------------------------------------------------------------------------------
def _conv_operands(mb, cin, cout, s_in, name):
    """3x3 weights (scale 0.01) and a bias for a CONV_2D from ``cin`` to ``cout`` channels."""
    w = mb.tensor(f"{name}_w", (cout, 3, 3, cin), **_q(0.01, 0), data=RNG.integers(-127, 128, (cout, 3, 3, cin)))
    b = mb.tensor(f"{name}_b", (cout,), "int32", **_q(0.01 * s_in, 0), data=RNG.integers(-2000, 2000, cout))
    return w, b


def test_new_ops_on_the_host_beside_convolutions_on_the_npu():
    """conv -> MUL, CONCATENATION, PAD -> conv -> MEAN -> LOGISTIC, bit-exact with LiteRT on the NPU
    (4x4 array) and on the host; the convolutions run on the NPU, the new ops on the host."""
    mb = ModelBuilder()
    g1, g2 = (0.04, -7), (0.06, 2)
    x = mb.tensor("x", (1, 8, 8, 3), **_q(0.05, 3))
    c1 = mb.tensor("c1", (1, 8, 8, 4), **_q(*g1))
    w, b = _conv_operands(mb, 3, 4, 0.05, "conv1")
    mb.op("CONV_2D", [x, w, b], [c1], "Conv2DOptions", Padding=0, StrideW=1, StrideH=1, FusedActivationFunction=0,
          DilationWFactor=1, DilationHFactor=1)
    k = mb.tensor("k", (1, 1, 1, 4), **_q(0.02, -3), data=RNG.integers(-128, 128, (1, 1, 1, 4)))
    m = mb.tensor("m", (1, 8, 8, 4), **_q(*g1))
    mb.op("MUL", [c1, k], [m], "MulOptions", FusedActivationFunction=1)
    cat = mb.tensor("cat", (1, 8, 8, 8), **_q(*g1))
    mb.op("CONCATENATION", [c1, m], [cat], "ConcatenationOptions", Axis=3, FusedActivationFunction=0)
    p = mb.tensor("p", (4, 2), "int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])
    padded = mb.tensor("padded", (1, 10, 10, 8), **_q(*g1))
    mb.op("PAD", [cat, p], [padded])
    c2 = mb.tensor("c2", (1, 8, 8, 5), **_q(*g2))
    w, b = _conv_operands(mb, 8, 5, g1[0], "conv2")
    mb.op("CONV_2D", [padded, w, b], [c2], "Conv2DOptions", Padding=1, StrideW=1, StrideH=1,
          FusedActivationFunction=0, DilationWFactor=1, DilationHFactor=1)
    axes = mb.tensor("axes", (2,), "int32", data=[1, 2])
    avg = mb.tensor("avg", (1, 5), **_q(0.03, -4))
    mb.op("MEAN", [c2, axes], [avg], "ReducerOptions", KeepDims=False)
    y = mb.tensor("y", (1, 5), **_q(1 / 256, -128))
    mb.op("LOGISTIC", [avg], [y])
    model = mb.build([x], [y])

    graph = import_tflite(model)
    xs = _inputs((8, 8, 3), random=4)
    _assert_exact(model, xs)
    outputs, records = run_on_npu(graph, xs, NpuConfig(rows=4, cols=4))
    assert np.array_equal(outputs[0], _litert(model, xs))
    assert [(r["op"], r["device"]) for r in records] == [
        ("conv2d", "npu"), ("mul", "cpu"), ("concatenation", "cpu"), ("pad", "cpu"), ("conv2d", "npu"),
        ("mean", "cpu"), ("logistic", "cpu")]


def test_tanh_after_a_convolution_runs_in_its_activation_units():
    """A TANH that alone reads a convolution's output runs as the table of the convolution's activation
    units on the NPU: bit-exact with LiteRT, reported as fused into the convolution."""
    mb = ModelBuilder()
    x = mb.tensor("x", (1, 6, 6, 3), **_q(0.05, 3))
    c = mb.tensor("c", (1, 6, 6, 4), **_q(0.04, -7))
    w, b = _conv_operands(mb, 3, 4, 0.05, "conv")
    mb.op("CONV_2D", [x, w, b], [c], "Conv2DOptions", Padding=0, StrideW=1, StrideH=1, FusedActivationFunction=0,
          DilationWFactor=1, DilationHFactor=1)
    y = mb.tensor("y", (1, 6, 6, 4), **_q(1 / 128, 0))
    mb.op("TANH", [c], [y])
    model = mb.build([x], [y])
    graph = import_tflite(model)
    xs = _inputs((6, 6, 3), random=4)
    outputs, records = run_on_npu(graph, xs, NpuConfig(rows=4, cols=4))
    assert np.array_equal(outputs[0], _litert(model, xs))
    assert [(r["op"], r["device"], r.get("fused_into")) for r in records] == [
        ("conv2d", "npu", None), ("tanh", "npu", graph.nodes[0].name)]
