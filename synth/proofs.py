"""The formal proof harnesses, one ``wiring.Component`` (one SymbiYosys job) per proved property.

Each harness instantiates the unit under proof, leaves its inputs free (they are the harness's own
``In`` members, so the solver chooses them every cycle), constrains them with ``Assume`` only where the
property is about a well-behaved environment, and checks ``Assert`` statements from the outside: no
assertion is added to the production RTL. Past values are kept in the harness's own registers.
Everything starts from the reset state (the registers' ``init`` values) and ``rst`` is held low.

``PROOFS`` lists each job with its configuration, mode and depth (``synth/formal.run_proof`` runs one);
``tests/test_formal.py`` runs them. The configurations are small (``SMALL_CONFIG``: a 2x2 array, SRAMs
of a few words, 16-bit counters) so that the solver's state stays small.
"""
from __future__ import annotations

from amaranth import *
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision
from opennpu.golden.model import event_costs
from opennpu.golden.program import COUNTER_NAMES
from opennpu.hdl.counters import Counters, Events, _costed_events

__all__ = ["SMALL_CONFIG", "CountersMonotonic"]

#: The configuration of the NPU proofs: 2x2 int8, SRAMs of 4 / 4 / 2 words, 16-bit counters.
SMALL_CONFIG = NpuConfig(rows=2, cols=2, act_depth=4, wgt_depth=4, acc_depth=2, counter_bits=16,
                         energy_counter=False)


def _no_reset(m):
    m.d.comb += Assume(~ResetSignal("sync"))


class CountersMonotonic(wiring.Component):
    """``hdl/counters.py``: no counter ever decreases, unless it wraps at ``counter_bits``.

    Proved for every reachable state (k-induction), for every sequence of ``run`` / ``active`` /
    ``stall`` and ``Events`` inputs (unconstrained: any field value, not only those the core makes):
    from one cycle to the next each counter value ``v`` either grows or stays, or it was within its
    largest one-cycle increment ``inc_max`` (computed here from the ``Events`` field widths and the
    energy table) of ``2^counter_bits``. So a counter that starts at 0 (reset) cannot decrease before
    it has counted to ``2^counter_bits - inc_max``: never within ``(2^counter_bits - inc_max) / inc_max``
    cycles (the golden model wraps the same way past that).
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        self.dut = Counters(config)
        super().__init__({"run": In(1), "active": In(1), "stall": In(1), "events": In(Events)})

    def increment_bounds(self) -> dict:
        """The largest increment of each counter in one cycle."""
        c = self._config
        ev = Signal(Events)
        widths = {name: (1 << len(field)) - 1 for name, (field, _f) in _costed_events(ev, c).items()}
        factors = {name: f for name, (_field, f) in _costed_events(ev, c).items()}
        macs_max = (1 << len(ev.macs)) - 1
        bounds = {"cycles": 1, "stall_cycles": 1, "busy_cycles": 1, "macs": macs_max, "int4_macs": macs_max}
        bounds.update({name: widths[name] * factors[name] for name in widths})
        cost = {p: event_costs(c, p) for p in (Precision.INT8, Precision.A4W4)}
        bounds["energy_fj"] = (sum(widths[n] * factors[n] * cost[Precision.INT8][n] for n in widths)
                               + macs_max * max(cost[p]["macs"] for p in cost)) if c.energy_counter else 0
        return bounds

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        _no_reset(m)
        m.d.comb += [dut.run.eq(self.run), dut.active.eq(self.active), dut.stall.eq(self.stall),
                     dut.events.eq(self.events)]
        top = (1 << self._config.counter_bits) - 1
        bounds = self.increment_bounds()
        started = Signal()
        m.d.sync += started.eq(1)
        for i, name in enumerate(COUNTER_NAMES):
            value = dut.values[i]
            prev = Signal.like(value, name=f"prev_{name}")
            m.d.sync += prev.eq(value)
            limit = top - bounds[name]
            ok = (value >= prev) | (prev > limit) if limit >= 0 else C(1)
            m.d.comb += Assert(~started | ok, f"counter {name} decreased")
        return m
