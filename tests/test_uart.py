"""The board design's UART host link: protocol helpers, the UART PHY, and a GEMM end to end.

The end-to-end test simulates ``hdl/board_top.UartNpu`` (2x2 array) in pysim with the serial lines
driven bit by bit (4 clock cycles per bit) by ``sim/uart_host.UartHost`` through ``sim/uart_sim``, and
compares outputs, status and every counter with the golden model.
"""
import numpy as np
import pytest
from amaranth.sim import Simulator

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.link import FrameParser, FrameType, encode_frame
from opennpu.golden.model import GoldenNpu
from opennpu.hdl.uart import UartRx, UartTx
from opennpu.sim.uart_sim import run_uart_pysim


def test_frames_round_trip_and_bad_crc_is_dropped():
    good = encode_frame(FrameType.DATA, 7, bytes(range(10)))
    bad = bytearray(encode_frame(FrameType.CMD, 8, bytes(16)))
    bad[9] ^= 0x40
    parser = FrameParser()
    frames = parser.feed(b"\x00\x13" + bytes(bad) + good[:4]) + parser.feed(good[4:])
    assert frames == [(FrameType.DATA, 7, bytes(range(10)))]
    assert parser.crc_errors == 1


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_loopback(divisor):
    from amaranth import Module
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = [0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80, 0x3C]
    got = []

    async def producer(ctx):
        for byte in sent:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.o.ready, 1)
        while len(got) < len(sent):
            _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert got == sent


def test_gemm_over_uart_matches_golden_with_a_corrupted_frame():
    """A tiny GEMM end to end; one byte of the first command frame is damaged on the line, so the
    frame is NAKed (bad CRC) and sent again, and the run still matches the golden model exactly."""
    config = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=16, acc_depth=16)
    spec = random_gemm(3, 3, 2, "int8", "relu", seed=1)
    gp = build_gemm(config, spec)
    golden = GoldenNpu(config).run(gp.program)
    out = {}
    # Host bytes: INFO (9), RESET (9), then the first CMD frame: byte 25 is in its payload.
    rtl = run_uart_pysim(config, gp.program, divisor=4, frame_max=64, corrupt={25}, host_out=out)
    assert rtl.outputs == golden.outputs
    assert np.array_equal(gp.decode_output(rtl.outputs), spec.expected())
    assert (rtl.error, rtl.rejected) == (golden.error, golden.rejected)
    stalls = rtl.counters["stall_cycles"]
    for name, value in golden.counters.items():
        expected = value + stalls if name in ("cycles", "stall_cycles") else value
        assert rtl.counters[name] == expected, name
    host = out["host"]
    assert host.resent >= 1 and host.last_status["crc_errors"] == 1
