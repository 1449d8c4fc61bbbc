"""The board design's UART host link: protocol helpers, the UART PHY, and a GEMM end to end.

The end-to-end test simulates ``hdl/board_top.UartNpu`` (2x2 array) in pysim with the serial lines
driven bit by bit (4 clock cycles per bit) by ``sim/uart_host.UartHost`` through ``sim/uart_sim``, and
compares outputs, status and every counter with the golden model.
"""
import struct
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.isa import Command, Opcode
from opennpu.golden.link import (CRC_RESIDUE, STATUS_BYTES, STATUS_HEADER, STREAM_TYPES, FrameParser, FrameType,
                                 NakReason, StatusFlag, encode_frame)
from opennpu.golden.program import Program
from opennpu.hdl.host_link import Crc32, HostLink
from opennpu.golden.model import GoldenNpu
from opennpu.hdl.uart import UartRx, UartTx
from opennpu.sim.uart_host import UartHost
from opennpu.sim.uart_sim import run_uart_pysim



async def send_bytes(ctx, port, data):
    """Drive ``data`` into a byte stream ``port`` (valid/ready), one byte per accepted beat."""
    for byte in data:
        ctx.set(port.payload, byte)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)

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
        await send_bytes(ctx, tx.i, sent)

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


# -- CRC-32 (issue 18, defect 2) -------------------------------------------------------------------

def _crc8(data: bytes) -> int:
    """The link's former check (CRC-8/SMBUS), to rebuild the corruption it let through."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_crc32_is_zlibs_and_leaves_the_residue():
    body = bytes(range(40))
    frame = encode_frame(FrameType.DATA, 3, body)
    assert int.from_bytes(frame[-4:], "little") == zlib.crc32(frame[1:-4])
    assert zlib.crc32(frame[1:]) ^ 0xFFFFFFFF == CRC_RESIDUE


def test_the_corruption_crc8_missed_is_caught():
    """Two adjacent payload bytes changed by (m, crc8([m])) kept a CRC-8 unchanged (defect 2)."""
    frame = bytearray(encode_frame(FrameType.DATA, 0, bytes(range(16))))
    body = bytes(frame[1:-4])
    for m in (0x01, 0x5A, 0xFF):
        bad = bytearray(frame)
        bad[7] ^= m
        bad[8] ^= _crc8(bytes([m]))
        assert _crc8(bytes(bad[1:-4])) == _crc8(body)           # what used to pass
        parser = FrameParser()
        assert parser.feed(bytes(bad)) == [] and parser.crc_errors == 1


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(min_size=1, max_size=512), data=st.data())
def test_random_corruptions_are_caught(payload, data):
    """Any corruption of a frame's bytes after SYNC (a nonzero XOR pattern on 1..8 positions) is
    caught by the host's parser (the residual rate, 2^-32 per corrupted frame, does not show here)."""
    frame = bytearray(encode_frame(FrameType.DATA, 9, payload))
    positions = data.draw(st.sets(st.integers(1, len(frame) - 1), min_size=1, max_size=8))
    for position in positions:
        frame[position] ^= data.draw(st.integers(1, 255))
    parser = FrameParser()
    assert parser.feed(bytes(frame)) == []


@pytest.mark.parametrize("serial", [True, False])
def test_rtl_crc32_matches_zlib(serial):
    dut = Crc32(serial=serial)
    messages = [b"", b"123456789", bytes(range(256)), bytes([0xA5, 0, 0xFF])]
    seen = []

    async def bench(ctx):
        for message in messages:
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for byte in message:
                ctx.set(dut.i.payload, byte)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
            await ctx.tick().until(dut.i.ready)
            seen.append(ctx.get(dut.value) ^ 0xFFFFFFFF)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [zlib.crc32(msg) for msg in messages]


# -- HostLink on its own: CRC, sequence numbers, what reaches the NPU ------------------------------

LINK_CONFIG = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=16, acc_depth=16)


def _run_link(frames, *, cmd_ready_after=0, cycles=None):
    """Feed ``frames`` (bytes) into ``HostLink.rx`` one byte when ready; the NPU side takes every
    data-in beat, and command beats only from cycle ``cmd_ready_after``. Returns the frames sent
    back, the command words and the data-in bytes that reached the NPU."""
    dut = HostLink(LINK_CONFIG, frame_max=32, timeout=64)
    stream_in = b"".join(frames)
    out = {"tx": bytearray(), "cmd": [], "din": bytearray()}
    total = cycles or 30 * len(stream_in) + 2000

    async def feeder(ctx):
        await send_bytes(ctx, dut.rx, stream_in)

    async def npu(ctx):
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.din.ready, 1)
        ctx.set(dut.npu_status.idle, 1)
        for cycle in range(total):
            ctx.set(dut.cmd.ready, cycle >= cmd_ready_after)
            _, _, tv, tb, cv, cw, dv, dp = await ctx.tick().sample(
                dut.tx.valid, dut.tx.payload, dut.cmd.valid & dut.cmd.ready, dut.cmd.payload.word,
                dut.din.valid & dut.din.ready, dut.din.payload)
            if tv:
                out["tx"].append(tb)
            if cv:
                out["cmd"].append(cw)
            if dv:
                out["din"] += dp.to_bytes(LINK_CONFIG.bus_bytes, "little")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feeder, background=True)
    sim.add_testbench(npu)
    sim.run()
    return FrameParser().feed(bytes(out["tx"])), out["cmd"], bytes(out["din"])


def _words(*values):
    return b"".join(v.to_bytes(16, "little") for v in values)


def test_link_sequence_numbers_per_stream():
    """Each stream accepts last+1 only: a resend of the last frame is acknowledged again and not
    forwarded twice, a stale or skipped number is refused (NAK SEQ); the two streams are numbered
    independently, so equal numbers on both are no conflict (defect 1)."""
    data0, data1 = bytes(range(8)), bytes(range(8, 16))
    frames = [encode_frame(FrameType.CMD, 0, _words(11)),
              encode_frame(FrameType.DATA, 0, data0),
              encode_frame(FrameType.CMD, 0, _words(99)),          # resend of cmd 0: ACK, dropped
              encode_frame(FrameType.DATA, 2, bytes(8)),           # skips 1: NAK SEQ
              encode_frame(FrameType.DATA, 1, data1),
              encode_frame(FrameType.CMD, 1, _words(12, 13)),
              encode_frame(FrameType.CMD, 255, _words(98)),        # stale: NAK SEQ
              encode_frame(FrameType.DATA, 1, bytes(8))]           # resend of data 1: ACK, dropped
    replies, cmds, din = _run_link(frames)
    assert cmds == [11, 12, 13]
    assert din == data0 + data1
    acks = [(seq, payload[0]) for ftype, seq, payload in replies if ftype == FrameType.ACK]
    assert acks == [(0, FrameType.CMD), (0, FrameType.DATA), (0, FrameType.CMD), (1, FrameType.DATA),
                    (1, FrameType.CMD), (1, FrameType.DATA)]
    naks = [(seq, payload[0], payload[1]) for ftype, seq, payload in replies if ftype == FrameType.NAK]
    assert naks == [(2, FrameType.DATA, NakReason.SEQ), (255, FrameType.CMD, NakReason.SEQ)]


def test_link_drops_corrupted_frames_and_a_busy_stream_frame():
    """A frame whose CRC fails (here the change CRC-8 missed) never reaches the NPU; a command frame
    that arrives while the previous one still waits for the NPU is refused (NAK BUSY), and data-in
    flows on meanwhile."""
    good = encode_frame(FrameType.DATA, 0, bytes(range(8)))
    bad = bytearray(good)
    bad[7] ^= 0x5A
    bad[8] ^= _crc8(b"\x5a")
    frames = [bytes(bad), encode_frame(FrameType.CMD, 0, _words(1)), encode_frame(FrameType.CMD, 1, _words(2)),
              good]
    replies, cmds, din = _run_link(frames, cmd_ready_after=1500)
    assert cmds == [1] and din == bytes(range(8))
    naks = [(seq, payload[0], payload[1]) for ftype, seq, payload in replies if ftype == FrameType.NAK]
    assert naks == [(0, FrameType.DATA, NakReason.CRC), (1, FrameType.CMD, NakReason.BUSY)]
    assert [f[:2] for f in replies if f[0] == FrameType.ACK] == [(FrameType.ACK, 0), (FrameType.ACK, 0)]


class _HeldDevice:
    """A frame-level stand-in for the board (the rules of ``golden/link.py``) that keeps the first
    command frame in its buffer, unacknowledged, until ``hold`` data-in frames got through: a
    command stream waiting behind a LOAD while its data flows. Records what reaches the "NPU"."""

    def __init__(self, config, *, frame_max, hold):
        self.config, self.frame_max, self.hold = config, frame_max, hold
        self.parser = FrameParser()
        self.out = bytearray()
        self.clock = 0.0
        self.reset()

    def reset(self):
        self.last = [0xFF, 0xFF]
        self.held = None              # seq of the command frame kept in the buffer
        self.cmds, self.din, self.data_frames = [], bytearray(), 0

    def monotonic(self):
        return self.clock

    def read(self, timeout):
        if not self.out:
            self.clock += timeout
        data, self.out = bytes(self.out), bytearray()
        return data

    def _reply(self, ftype, seq, payload=b""):
        self.out += encode_frame(ftype, seq, payload)

    def write(self, data):
        for ftype, seq, payload in self.parser.feed(data):
            if ftype == FrameType.INFO:
                c = self.config
                values = [2, c.rows, c.cols, c.bus_bytes, c.act_depth, c.wgt_depth, c.acc_depth, self.frame_max]
                self._reply(FrameType.INFO_REPLY, seq, struct.pack("<8I", *values))
            elif ftype == FrameType.RESET:
                self.reset()
                self._reply(FrameType.ACK, seq, bytes([FrameType.RESET]))
            elif ftype == FrameType.STATUS:
                flags = (StatusFlag.CMD_BUSY if self.held is not None else StatusFlag.IDLE)
                header = STATUS_HEADER.pack(0, 0, flags, *self.last, 0, 0)
                self._reply(FrameType.STATUS_REPLY, seq, header + bytes(STATUS_BYTES - len(header)))
            else:
                s = 0 if ftype in (FrameType.CMD, FrameType.CMD_LAST) else 1
                if seq == self.last[s]:                      # a resend: ACK again once free
                    if not (s == 0 and self.held is not None):
                        self._reply(FrameType.ACK, seq, bytes([STREAM_TYPES[s][0]]))
                    continue
                if seq != (self.last[s] + 1) & 0xFF:
                    self._reply(FrameType.NAK, seq, bytes([ftype, NakReason.SEQ]))
                    continue
                self.last[s] = seq
                if s == 1:
                    self.din += payload
                    self.data_frames += 1
                    self._reply(FrameType.ACK, seq, bytes([FrameType.DATA]))
                else:
                    self.cmds += [int.from_bytes(payload[i:i + 16], "little") for i in range(0, len(payload), 16)]
                    if len(self.cmds) == 1:                 # the first command frame waits
                        self.held = seq
                    else:
                        self._reply(FrameType.ACK, seq, bytes([FrameType.CMD]))
                if self.held is not None and self.data_frames >= self.hold:
                    self._reply(FrameType.ACK, self.held, bytes([FrameType.CMD]))
                    self.held = None


def test_command_frame_after_255_data_frames_is_not_dropped():
    """Defect 1: with one counter for both streams, the command frame sent after 255 data frames got
    the number of the last accepted command frame, and the device acknowledged and dropped it as a
    resend. Each stream now counts on its own, so every command arrives."""
    config = NpuConfig(rows=2, cols=2, act_depth=32, wgt_depth=16, acc_depth=16)
    program = Program([Command(Opcode.LOAD_LUT)] * 16 + [Command(Opcode.FENCE)], bytes(range(256)) * 16)
    device = _HeldDevice(config, frame_max=16, hold=255)
    UartHost(config, device, timeout=0.5).run(program)
    assert device.data_frames == 256
    assert device.cmds == program.words()
    assert bytes(device.din) == program.data_in
