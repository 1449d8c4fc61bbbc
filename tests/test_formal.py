"""Formal proofs (``synth/proofs.py``, run by SymbiYosys through ``synth/formal.py``).

The default suite runs every proof at a short depth; ``-m slow`` at the depth that covers a whole
command or frame. A missing ``formal`` extra fails these tests (``make test`` installs it). A failing
proof's message names its counterexample VCD (``build/formal/<job>/job/engine_0/trace*.vcd``).
"""
import pytest

from opennpu.synth.formal import run_proof
from opennpu.synth.proofs import PROOFS


def _prove(name, depth, tmp_path, timeout=1800):
    factory, mode, _short, _long = PROOFS[name]
    result = run_proof(factory(), name, mode=mode, depth=depth, workdir=tmp_path / name, timeout=timeout)
    assert result.passed, result.message()


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_proof_short(name, tmp_path):
    _prove(name, PROOFS[name][2], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROOFS))
def test_proof_deep(name, tmp_path):
    _prove(name, PROOFS[name][3], tmp_path, timeout=4 * 3600)     # the host link's: about an hour


def test_failing_proof_names_its_trace(tmp_path):
    """A property that does not hold fails with the path of the counterexample VCD."""
    from amaranth import Module, Signal
    from amaranth.hdl import Assert
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In

    class Broken(wiring.Component):
        def __init__(self):
            super().__init__({"i": In(1)})

        def elaborate(self, platform):
            m = Module()
            count = Signal(4)
            m.d.sync += count.eq(count + self.i)
            m.d.comb += Assert(count < 3)
            return m

    result = run_proof(Broken(), "broken", mode="bmc", depth=6, workdir=tmp_path / "broken")
    assert not result.passed and result.status == "FAIL"
    assert result.traces and all(t.exists() and t.suffix == ".vcd" for t in result.traces)
    assert str(result.traces[0]) in result.message()


def test_link_reference_receiver_agrees_in_simulation():
    """``LinkDelivery``'s reference receiver, simulated beside the link on real frames: a good CMD_LAST
    frame and a good DATA frame are accepted and delivered once with their payloads; a frame with a bad
    CRC, a repeated one and one out of sequence are not; the checks hold in every cycle. (So the deep
    proof's reference is not vacuous or wrong on the frames it is meant to accept.)"""
    from amaranth.sim import Simulator

    from opennpu.golden.link import FrameType, encode_frame
    from opennpu.synth.proofs import LinkDelivery

    harness = LinkDelivery(asserts=False)       # (pysim would check the Asserts between delta cycles too)
    cmd_word, data_beat = bytes(range(1, 17)), bytes(range(100, 116))
    bad = bytearray(encode_frame(FrameType.CMD, 1, bytes(16)))
    bad[-1] ^= 0x01
    stream = (encode_frame(FrameType.CMD_LAST, 0, cmd_word) + bytes(bad)
              + encode_frame(FrameType.CMD_LAST, 0, cmd_word)         # repeated: acknowledged, not forwarded
              + encode_frame(FrameType.DATA, 1, data_beat)            # out of sequence: NAK SEQ
              + encode_frame(FrameType.DATA, 0, data_beat))
    seen = {"cmd": [], "din": [], "pending": [0, 0]}

    async def bench(ctx):
        ctx.set(harness.cmd_ready, 1)
        ctx.set(harness.din_ready, 1)
        ctx.set(harness.tx_ready, 1)
        index = 0
        for _ in range(len(stream) * 10 + 200):
            ctx.set(harness.rx_valid, index < len(stream))
            ctx.set(harness.rx_payload, stream[index] if index < len(stream) else 0)
            assert ctx.get(harness.checks_hold)
            for s in range(2):
                seen["pending"][s] |= ctx.get(harness.ref_pending[s])
            if ctx.get(harness.dut.cmd.valid):
                seen["cmd"].append((ctx.get(harness.dut.cmd.payload.word), ctx.get(harness.dut.cmd.payload.last)))
            if ctx.get(harness.dut.din.valid):
                seen["din"].append(ctx.get(harness.dut.din.payload))
            if index < len(stream) and ctx.get(harness.dut.rx.ready):
                index += 1
            await ctx.tick()
        assert index == len(stream)
        assert [ctx.get(harness.ref_last[s]) for s in range(2)] == [0, 0]     # the bad CRC frame was not taken

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["cmd"] == [(int.from_bytes(cmd_word, "little"), 1)]
    assert seen["din"] == [int.from_bytes(data_beat, "little")]
    assert seen["pending"] == [1, 1]
