"""The depthwise COMPUTE (``golden/isa.py``, ``dw``): an R-tap FIR per channel over a padded image stream,
checked against a plain convolution, and its rules."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from opennpu.config import NpuConfig
from opennpu.golden.deps import HazardError, check_program, order_program
from opennpu.golden.isa import Buf, Command, ErrorCode, Opcode, Precision, Wait
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program


def depthwise_reference(img, w, zp, pads, stride=1):
    """(H, W, C) int image, (kh, kw, C) weights, padding with ``zp`` (top, left, bottom, right), stride 1 or
    2: (Ho, Wo, C) int sums."""
    pt, pl, pb, pr = pads
    kh, kw, _ = w.shape
    x = np.pad(img.astype(np.int64), ((pt, pb), (pl, pr), (0, 0)), constant_values=zp)
    ho, wo = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    return sum(x[i:i + ho, j:j + wo] * w[i, j] for i in range(kh) for j in range(kw))[::stride, ::stride]


def depthwise_program(config, img, w, zp, pads, kernel_rows=None, accumulate=False, stride=1):
    """LOAD the image and a FIR tile for kernel rows ``kernel_rows`` (all by default), one depthwise
    COMPUTE over every output row (``stride`` 2: every other one, ``dw_stride2``), STORE the accumulator
    rows: (program, written rows)."""
    R, cols = config.rows, config.cols
    h, wd, ch = img.shape
    kh, kw, _ = w.shape
    pt, pl, pb, pr = pads
    period = max(wd + max(pl, pr), kw)       # (taps of two kernel rows must not meet)
    i0, i1 = kernel_rows or (0, kh)
    tile = np.zeros((R, cols), np.int64)
    for i in range(i0, i1):
        for j in range(kw):
            tile[(i1 - 1 - i) * period + kw - 1 - j, :ch] = w[i, j]
    krows = (i1 - i0 - 1) * period + kw
    ho = h + pt + pb - kh + 1
    last_tap = (i1 - 1 - pt) * period + kw - 1 - pl        # stream position of output (0, 0)'s last tap
    drow, dcol = divmod(last_tap - (R - 1), period)
    rows = ho * period - (period - wd)
    first = 0 if drow < 0 else drow * wd + min(dcol, wd)     # the image word of the first data position
    words = np.zeros((h * wd, config.beats(config.act_word_bytes) * config.bus_bytes), np.int8)   # (whole beats)
    words[:, :ch] = img.reshape(h * wd, ch)
    written = -(-ho // stride) * -(-wd // stride)
    cmds = [Command(Opcode.CONFIG, qmin=-128, qmax=127, dw_width=wd, dw_period=period, dw_height=h, dw_pad=zp,
                    dw_stride2=int(stride == 2)),
            Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=h * wd),
            Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=krows),
            Command(Opcode.PRELOAD, addr=0, krows=krows, ncols=cols),
            Command(Opcode.COMPUTE, aaddr=first, accaddr=0, rows=rows, dw=1, drow=drow, dcol=dcol,
                    accumulate=int(accumulate)),
            Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=written)]
    wgt = np.zeros((krows, config.beats(config.wgt_word_bytes) * config.bus_bytes), np.int8)
    wgt[:, :cols] = tile[:krows]
    data = words.tobytes() + wgt.tobytes()
    return order_program(Program(cmds, data), config), written


def _run(config, program, rows):
    result = GoldenNpu(config).run(program)
    assert result.error == ErrorCode.OK
    return np.frombuffer(result.outputs, "<i4").reshape(-1, config.cols)[:rows], result


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 6), wd=st.integers(1, 5), ch=st.integers(1, 16), zp=st.integers(-128, 127),
       kernel=st.sampled_from([(3, 3), (1, 3), (3, 1), (2, 2), (1, 1)]), late=st.booleans(),
       stride=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_depthwise_compute_is_a_convolution(h, wd, ch, zp, kernel, late, stride, seed):
    """Outputs as large as the input (stride 1, the padding split either way round), or every other one of
    them in both directions (stride 2)."""
    config = NpuConfig(rows=16, cols=16)
    kh, kw = kernel
    pt, pl = ((kh - late) // 2, (kw - late) // 2)
    pads = (pt, pl, kh - 1 - pt, kw - 1 - pl)
    period = wd + max(pads[1], pads[3])
    if (kh - 1) * period + kw > config.rows:
        return
    rng = np.random.default_rng(seed)
    img = rng.integers(-128, 128, (h, wd, ch))
    w = rng.integers(-128, 128, (kh, kw, ch))
    program, rows = depthwise_program(config, img, w, zp, pads, stride=stride)
    out, result = _run(config, program, rows)
    ref = depthwise_reference(img, w, zp, pads, stride)
    assert np.array_equal(out[:, :ch].reshape(ref.shape), ref)
    assert not out[:, ch:].any()
    c = result.counters
    assert c["act_reads"] == h * wd and c["acc_writes"] == rows
    assert c["busy_cycles"] == program.commands[4].rows + config.rows - 1


def test_kernel_rows_accumulate_into_one_convolution():
    """Two passes (kernel rows 0..1, then row 2, accumulating) give the 3x3 convolution of an image too wide
    for one pass."""
    config = NpuConfig(rows=16, cols=16)
    rng = np.random.default_rng(1)
    img, w, pads = rng.integers(-128, 128, (4, 7, 16)), rng.integers(-128, 128, (3, 3, 16)), (1, 1, 1, 1)
    first, rows = depthwise_program(config, img, w, 5, pads, kernel_rows=(0, 2))
    second, _ = depthwise_program(config, img, w, 5, pads, kernel_rows=(2, 3), accumulate=True)
    npu = GoldenNpu(config)
    npu.run(Program(first.commands[:-1], first.data_in))
    result = npu.run(second)
    out = np.frombuffer(result.outputs, "<i4").reshape(-1, config.cols)[:rows]
    assert np.array_equal(out.reshape(4, 7, 16), depthwise_reference(img, w, 5, pads))


@pytest.mark.parametrize("fields, precision, code", [
    (dict(dw=1, astep=1), Precision.INT8, ErrorCode.BAD_FIELD),
    (dict(drow=1), Precision.INT8, ErrorCode.BAD_FIELD),
    (dict(dw=1), Precision.A4W4, ErrorCode.BAD_PRECISION),
    (dict(dw=1, aaddr=4096 - 16), Precision.INT8, ErrorCode.BAD_RANGE),      # rows + 15 words from aaddr
    (dict(dw=1, aaddr=4096 - 17), Precision.INT8, ErrorCode.OK),
])
def test_depthwise_compute_rules(fields, precision, code):
    from opennpu.golden.checks import check
    config = NpuConfig(rows=16, cols=16, precisions=("int8", "a4w4"))
    cmd = Command(Opcode.COMPUTE, **{"aaddr": 0, "accaddr": 0, "rows": 2, **fields})
    assert check(cmd, config, precision) == code


def test_config_needs_the_width_within_the_period():
    from opennpu.golden.checks import check
    config = NpuConfig(rows=16, cols=16)
    bad = Command(Opcode.CONFIG, qmin=-128, qmax=127, dw_width=6, dw_period=5)
    assert check(bad, config, Precision.INT8) == ErrorCode.BAD_FIELD


def test_activate_does_not_stream_behind_a_depthwise_compute():
    config = NpuConfig(rows=16, cols=16)
    rng = np.random.default_rng(2)
    program, rows = depthwise_program(config, rng.integers(-128, 128, (3, 3, 16)), rng.integers(-128, 128, (3, 3, 16)),
                                      0, (1, 1, 1, 1))
    cmds = program.commands[:5] + [Command(Opcode.ACTIVATE, accaddr=0, aaddr=100, rows=rows, wait=int(Wait.STREAM))]
    with pytest.raises(HazardError):
        check_program(Program(cmds, program.data_in), config)
    ordered = order_program(Program(cmds[:5] + [cmds[5].with_wait(0)], program.data_in), config)
    assert ordered.commands[5].wait & Wait.EX


# -- the compiler's lowering (``compiler/depthwise.py``) ----------------------------------------------------

def _conv(name, channels, hw, kernel, pads, n, rng, in_zp, out_zp, depthwise=False, stride=1):
    from opennpu.compiler.qlayers import ConvGeom, QLayer
    taps = kernel[0] * kernel[1]
    w = rng.integers(-128, 128, (channels * taps, n))
    if depthwise:
        w[np.arange(channels * taps)[:, None] // taps != np.arange(n)[None, :]] = 0
    geom = ConvGeom((channels, *hw), kernel, (stride, stride), pads, (1, 1), channels if depthwise else 1)
    return QLayer(name, "Conv", w, rng.integers(-5000, 5000, n), rng.integers(1 << 29, 1 << 31, n),
                  rng.integers(-12, -8, n), out_zp, -128, 127, None, (channels, *hw), (1.0, in_zp), (1.0, out_zp),
                  geom)


def _depthwise_model(rng, channels, hw, kernel, late, stride=1):
    from opennpu.compiler.qlayers import QuantModel, TensorSpec
    kh, kw = kernel
    pt, pl = (kh - late) // 2, (kw - late) // 2
    out = tuple(-(-n // stride) for n in hw)
    layers = [_conv("pw0", 3, hw, (1, 1), (0, 0, 0, 0), channels, rng, -128, -7),
              _conv("dw", channels, hw, kernel, (pt, pl, kh - 1 - pt, kw - 1 - pl), channels, rng, -7, 3, True,
                    stride),
              _conv("pw1", channels, out, (1, 1), (0, 0, 0, 0), 5, rng, 3, 0)]
    return QuantModel(layers, TensorSpec("x", (3, *hw), None, "int8", 1.0, -128),
                      TensorSpec("y", (5, *out), None, "int8", 1.0, 0))


def _dw_computes(program):
    return [c for c in program.commands if c.op == Opcode.COMPUTE and c.dw]


@settings(max_examples=30, deadline=None)
@given(channels=st.integers(1, 20), h=st.integers(1, 9), wd=st.integers(1, 12),
       kernel=st.sampled_from([(3, 3), (5, 5), (1, 3), (3, 1), (2, 2)]), late=st.booleans(),
       array=st.sampled_from([4, 8, 16]), batch=st.integers(1, 4), stride=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 16))
def test_depthwise_layers_run_on_the_depthwise_compute(channels, h, wd, kernel, late, array, batch, stride, seed):
    """pointwise -> depthwise (stride 1 or 2) -> pointwise in one program: the depthwise layer in passes of
    the kernel rows that fit the array's taps, over several channel groups, samples and accumulator
    chunks; bit-exact."""
    from opennpu.compiler.depthwise import fir_passes
    from opennpu.compiler.model_program import compile_model, run_model
    rng = np.random.default_rng(seed)
    qm = _depthwise_model(rng, channels, (h, wd), kernel, late, stride)
    config = NpuConfig(rows=array, cols=array, act_depth=1024, wgt_depth=256, acc_depth=128)
    compiled = compile_model(qm, config, batch=batch)
    x = rng.integers(-128, 128, (batch, 3, h, wd)).astype(np.int8)
    if compiled.stages == 1:           # (else the depthwise layer starts a stage: the K tiles from the host)
        assert bool(_dw_computes(compiled._stage_program(0, qm.quantize_input(x)))) == \
            bool(fir_passes(qm.layers[1], config))
    assert np.array_equal(run_model(compiled, x).values, qm.reference(x))


def test_a_stride_2_layer_writes_every_other_output():
    """A stride-2 depthwise layer of a narrow image (25x5 -> 13x3 on 16x16) takes the depthwise COMPUTE:
    one stream per group and sample, the stride-1 outputs of odd rows and columns unwritten; bit-exact."""
    from opennpu.compiler.depthwise import fir_passes
    from opennpu.compiler.model_program import compile_model, run_model
    rng = np.random.default_rng(4)
    qm = _depthwise_model(rng, 20, (25, 5), (3, 3), True, 2)
    config = NpuConfig(rows=16, cols=16)
    assert fir_passes(qm.layers[1], config) == [(0, 3)]
    x = rng.integers(-128, 128, (3, 3, 25, 5)).astype(np.int8)
    compiled = compile_model(qm, config, batch=3)
    computes = _dw_computes(compiled._stage_program(0, qm.quantize_input(x)))
    assert len(computes) == 2 * 3 and {c.rows for c in computes} == {25 * 6 - 1}
    assert np.array_equal(run_model(compiled, x).values, qm.reference(x))


def test_depthwise_compute_beats_the_block_diagonal_tiles():
    """DS-CNN's depthwise layer shape (64 channels, 25x5, 3x3): one pass a channel group, a quarter of the
    cycles the block-diagonal K tiles took."""
    from opennpu.compiler.depthwise import fir_passes
    from opennpu.compiler.model_program import compile_model, run_model
    rng = np.random.default_rng(3)
    qm = _depthwise_model(rng, 64, (25, 5), (3, 3), False)
    config = NpuConfig(rows=16, cols=16)
    assert fir_passes(qm.layers[1], config) == [(0, 3)]
    x = rng.integers(-128, 128, (1, 3, 25, 5)).astype(np.int8)
    compiled = compile_model(qm, config, batch=1, profile=True)
    run = run_model(compiled, x)
    assert np.array_equal(run.values, qm.reference(x))
    assert len(_dw_computes(compiled._stage_program(0, qm.quantize_input(x)))) == 4
    cycles = run.layer_counters[1]["cycles"]
    assert 4 * 164 <= cycles < 1000           # 4 groups x (149 outputs + 15 taps), then the barriers
