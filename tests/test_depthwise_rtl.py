"""Depthwise COMPUTEs (``golden/isa.py``, ``dw``) on the RTL (Amaranth simulator) vs the golden model:
outputs, status and every counter. Convolutions built by ``test_depthwise.depthwise_program`` (small
arrays: kernels whose span ``(kh - 1) * period + kw`` fits the array's rows), and hand-made commands
with odd fields."""
import numpy as np
import pytest

from opennpu.config import NpuConfig
from opennpu.golden.checks import data_in_bytes
from opennpu.golden.deps import order_program
from opennpu.golden.isa import Buf, Command, ErrorCode, Opcode, Wait
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program
from opennpu.sim.driver import Npu

from test_depthwise import depthwise_program, depthwise_reference
from test_rtl import assert_same, small_config


def _outputs(config, result, rows):
    """The first ``rows`` accumulator rows a STORE sent (each padded to whole beats)."""
    words = config.beats(config.acc_word_bytes) * config.bus_bytes // 4
    return np.frombuffer(result.outputs, "<i4").reshape(-1, words)[:rows, :config.cols]


@pytest.mark.parametrize("array, h, wd, ch, kernel, pads, zp, backpressure, stride", [
    ((4, 4), 3, 5, 4, (1, 3), (0, 1, 0, 1), 7, None, 1),      # period 6: a pad column between image rows
    ((4, 4), 2, 3, 3, (1, 3), (0, 2, 0, 0), -128, 5, 1),      # both pads on the left, back-pressure
    ((4, 4), 4, 1, 4, (2, 2), (1, 1, 0, 0), 3, None, 1),      # width 1, period 2: two kernel rows
    ((4, 4), 3, 1, 2, (3, 1), (1, 0, 1, 0), -9, None, 1),     # period 1: three kernel rows, no pad column
    ((4, 4), 2, 4, 4, (1, 1), (0, 0, 0, 0), 0, None, 1),      # no padding at all
    ((3, 5), 3, 4, 3, (1, 3), (0, 1, 0, 1), 11, 2, 1),        # lanes 3, 4 beyond the words: 0
    ((4, 2), 2, 3, 2, (1, 3), (0, 1, 0, 1), -1, None, 1),     # more lanes than columns
    ((4, 4), 5, 5, 4, (1, 3), (0, 1, 0, 1), 2, None, 2),      # stride 2: odd rows and columns unwritten
    ((4, 4), 4, 4, 3, (1, 3), (0, 1, 0, 1), -5, 3, 2),        # stride 2, even sizes, back-pressure
])
def test_depthwise_convolution_matches_golden(array, h, wd, ch, kernel, pads, zp, backpressure, stride):
    config = small_config(*array)
    rng = np.random.default_rng(h * 100 + wd * 10 + ch)
    img, w = rng.integers(-128, 128, (h, wd, ch)), rng.integers(-128, 128, (*kernel, ch))
    program, rows = depthwise_program(config, img, w, zp, pads, stride=stride)
    golden = GoldenNpu(config).run(program)
    assert golden.error == ErrorCode.OK
    ref = depthwise_reference(img, w, zp, pads, stride)
    out = _outputs(config, golden, rows)
    assert np.array_equal(out[:, :ch].reshape(ref.shape), ref)
    assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_three_accumulating_passes_make_a_3x3_convolution():
    """A 3x3 kernel does not fit a 4-row array in one pass: one kernel row a pass, accumulating."""
    config = small_config(4, 4)
    rng = np.random.default_rng(3)
    img, w, pads = rng.integers(-128, 128, (3, 4, 4)), rng.integers(-128, 128, (3, 3, 4)), (1, 1, 1, 1)
    passes = [depthwise_program(config, img, w, -5, pads, kernel_rows=(i, i + 1), accumulate=i > 0)[0]
              for i in range(3)]
    commands = [c.with_wait(0) for p in passes[:-1] for c in p.commands[:-1]] + \
        [c.with_wait(0) for c in passes[-1].commands]
    program = order_program(Program(commands, b"".join(p.data_in for p in passes)), config)
    golden = GoldenNpu(config).run(program)
    out = _outputs(config, golden, 3 * 4)
    assert np.array_equal(out.reshape(3, 4, 4), depthwise_reference(img, w, -5, pads))
    assert_same(Npu(config, "pysim").run(program), golden)


def _config(width, period, height, pad):
    return Command(Opcode.CONFIG, qmin=-128, qmax=127, dw_width=width, dw_period=period, dw_height=height, dw_pad=pad)


def _dw(aaddr, accaddr, rows, drow=0, dcol=0, accumulate=0):
    return Command(Opcode.COMPUTE, aaddr=aaddr, accaddr=accaddr, rows=rows, dw=1, drow=drow, dcol=dcol,
                   accumulate=accumulate)


#: Odd depthwise fields, back to back with each other and with plain COMPUTEs (``_program``).
ODD_COMPUTES = [
    _config(3, 5, 2, -3),
    Command(Opcode.PRELOAD, addr=0, krows=4, ncols=4),
    _dw(1, 0, 7, drow=-1, dcol=2),                 # right behind its PRELOAD; 7 outputs: not whole periods
    _dw(0, 8, 9, dcol=250, accumulate=1),          # column 250 >= period: pads up to 255, then column 0
    Command(Opcode.COMPUTE, aaddr=2, accaddr=20, rows=3),           # a plain COMPUTE between two dw ones
    _dw(3, 24, 5, drow=1, dcol=4, accumulate=1),   # starts on the pad column of the last image row
    Command(Opcode.PRELOAD, addr=4, krows=3, ncols=2),
    _dw(0, 30, 6, drow=-128, dcol=255),            # all pads
    _dw(5, 30, 4, drow=-2, dcol=4, accumulate=1),  # accumulates into the word just written
    _config(0, 0, 0, 5),                           # no image: nothing read, nothing written
    _dw(0, 36, 4),
    _config(4, 4, 200, 127),                       # no pad column, tall image
    _dw(2, 36, 10, drow=1, dcol=1, accumulate=1),
    Command(Opcode.COMPUTE, aaddr=0, accaddr=45, rows=2, accumulate=1),   # its first row adds to the last
    _config(1, 1, 3, -128),                        # period 1: one word a row
    _dw(9, 48, 6, drow=-2),
    _config(2, 9, 255, 1),
    _dw(0, 54, 8, drow=127, dcol=7),               # row 127 of 255, columns 7, 8 pads, then 0, 1 data
    _dw(4, 62, 1, dcol=1),                         # one output, behind the R - 1 words of the warm-up
    _dw(4, 63, 1, dcol=1, accumulate=1),
]


def _program(config, rng, body, act_words=16):
    """LOAD activation and weight words, ``body``, an ACTIVATE to data-out, the accumulators read back."""
    commands = [Command(Opcode.LOAD, buf=Buf.ACT, addr=0, rows=act_words),
                Command(Opcode.LOAD, buf=Buf.WGT, addr=0, rows=8), Command(Opcode.LOAD_BIAS, bank=0),
                *body,
                _config(0, 0, 0, 0).with_fields(multiplier=1 << 30, shift=-9),
                Command(Opcode.ACTIVATE, accaddr=0, aaddr=0, rows=16, dest=1, bank=0),
                Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=config.acc_depth)]
    data = rng.integers(0, 256, sum(data_in_bytes(c, config) for c in commands), dtype=np.uint8).tobytes()
    return order_program(Program(commands, data), config)


@pytest.mark.parametrize("backpressure", [None, 3])
def test_odd_depthwise_fields_match_golden(backpressure):
    config = small_config(4, 4)
    program = _program(config, np.random.default_rng(8), ODD_COMPUTES)
    golden = GoldenNpu(config).run(program)
    assert golden.error == ErrorCode.OK and golden.rejected == 0
    assert 0 < golden.counters["acc_writes"] < sum(c.rows for c in ODD_COMPUTES if c.op == Opcode.COMPUTE)
    assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


@pytest.mark.parametrize("array", [(2, 2), (2, 3)])
def test_tiny_arrays(array):
    """Two-tap FIRs; the second COMPUTE adds to the word the first one's last output writes."""
    config = NpuConfig(rows=array[0], cols=array[1], act_depth=32, wgt_depth=8, acc_depth=32)
    body = [_config(2, 3, 4, -7), Command(Opcode.PRELOAD, addr=0, krows=array[0], ncols=array[1]),
            _dw(0, 0, 8, drow=-1, dcol=1), _dw(2, 5, 5, dcol=2, accumulate=1),
            Command(Opcode.COMPUTE, aaddr=1, accaddr=14, rows=2), _dw(0, 16, 4, dcol=200)]
    program = _program(config, np.random.default_rng(array[0]), body)
    golden = GoldenNpu(config).run(program)
    assert golden.error == ErrorCode.OK
    assert_same(Npu(config, "pysim").run(program), golden)


def test_depthwise_compute_streams_behind_its_load():
    """A depthwise COMPUTE reads at most a word a cycle, so it may follow the LOAD of its image
    (``Wait.STREAM``) from the cycle after; its rejected forms are refused and write nothing."""
    config = small_config(4, 4)
    body = [_config(3, 4, 3, 2), Command(Opcode.PRELOAD, addr=0, krows=4, ncols=4),
            Command(Opcode.LOAD, buf=Buf.ACT, addr=16, rows=9),
            _dw(16, 0, 12, drow=0, dcol=1),
            Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=2, dw=1, astep=1),             # BAD_FIELD
            Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=2, dcol=1),                    # BAD_FIELD
            _dw(config.act_depth - 4, 0, 2)]                                                # BAD_RANGE
    program = _program(config, np.random.default_rng(4), body)
    assert program.commands[6].wait & Wait.STREAM
    model = GoldenNpu(config)
    golden = model.run(program)
    assert (golden.error, golden.rejected) == (ErrorCode.BAD_FIELD, 3)
    (_, load), (_, compute) = model.trace[5:7]
    assert compute == load + 1
    for backpressure in (None, 6):
        assert_same(Npu(config, "pysim", backpressure=backpressure).run(program), golden)


def test_a_stream_far_past_the_image():
    """A stream 1200 image rows long (period 1) from row -128: the image rows 0 .. 254 read, nothing
    after (the EX unit's row counter stops past the last image row instead of wrapping around)."""
    config = NpuConfig(rows=2, cols=2, act_depth=2048, wgt_depth=8, acc_depth=2048)
    body = [_config(1, 1, 255, 9), Command(Opcode.PRELOAD, addr=0, krows=2, ncols=2),
            _dw(0, 0, 1200, drow=-128)]
    program = _program(config, np.random.default_rng(12), body, act_words=300)
    golden = GoldenNpu(config).run(program)
    assert golden.error == ErrorCode.OK and golden.counters["act_reads"] == 255
    assert_same(Npu(config, "pysim").run(program), golden)


def test_a_compiled_depthwise_chain_matches_golden():
    """pointwise -> 3x3 depthwise (three one-row passes on 4x4) -> pointwise, compiled for two samples: the
    RTL equals the reference and the golden model's counters."""
    from opennpu.compiler.model_program import compile_model, run_model
    from test_depthwise import _depthwise_model, _dw_computes
    rng = np.random.default_rng(5)
    qm = _depthwise_model(rng, 5, (3, 4), (3, 3), False)
    config = small_config(4, 4)
    compiled = compile_model(qm, config, batch=2)
    x = rng.integers(-128, 128, (2, 3, 3, 4)).astype(np.int8)
    assert compiled.stages == 1 and _dw_computes(compiled._stage_program(0, qm.quantize_input(x)))
    golden, rtl = run_model(compiled, x), run_model(compiled, x, backend="pysim")
    assert np.array_equal(rtl.values, qm.reference(x))
    assert rtl.counters == golden.counters
