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
