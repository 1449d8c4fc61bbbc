"""Hardware performance counters, including the ``energy_fj`` accumulator."""
from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from opennpu.config import NpuConfig
from opennpu.golden.isa import Precision
from opennpu.golden.model import event_costs
from opennpu.golden.program import COUNTER_NAMES

from .fanout import buffered

__all__ = ["Events", "Counters"]


class Events(data.Struct):
    """What happened in one cycle (counts, since several units may touch one SRAM at once)."""
    row: 1            # a row entered the array (busy cycle)
    macs: 16          # useful MACs of that row
    int4_macs: 1      # they are 4-bit MACs (a4w4), with their own energy cost
    act_reads: 2
    act_writes: 2
    wgt_reads: 2
    wgt_writes: 1
    acc_reads: 2
    acc_writes: 1
    beat_in: 1
    beat_out: 1
    act_row: 1        # a row of ``cols`` elements left the activation unit


class Counters(wiring.Component):
    """64-bit counters in ``COUNTER_NAMES`` order.

    Every cycle: ``cycles`` += ``active``; ``stall_cycles`` += ``active & ~run``; when ``run``, every
    event counter adds this cycle's events and ``energy_fj`` adds their cost from the configuration's
    energy table (the same ``event_costs`` the golden model uses). All values include every event of
    the cycles before the current one.

    Members
    -------
    run, active : In(1)
    events : In(Events)
    values : Out(ArrayLayout(unsigned(64), len(COUNTER_NAMES)))
    """

    def __init__(self, config: NpuConfig):
        self._config = config
        super().__init__({"run": In(1), "active": In(1), "events": In(Events),
                          "values": Out(data.ArrayLayout(unsigned(64), len(COUNTER_NAMES)))})

    def elaborate(self, platform):
        m = Module()
        c, ev = self._config, self.events
        value = {name: self.values[i] for i, name in enumerate(COUNTER_NAMES)}
        increments = {
            "busy_cycles": ev.row, "macs": Mux(ev.row, ev.macs, 0),
            "act_reads": ev.act_reads, "act_writes": ev.act_writes,
            "wgt_reads": ev.wgt_reads, "wgt_writes": ev.wgt_writes,
            "acc_reads": ev.acc_reads, "acc_writes": ev.acc_writes,
            "dma_in_bytes": ev.beat_in * c.bus_bytes, "dma_out_bytes": ev.beat_out * c.bus_bytes,
            "act_ops": ev.act_row * c.cols,
        }
        cost, cost_int4 = event_costs(c), event_costs(c, Precision.A4W4)
        energy = sum(increments[name] * cost[name] for name in cost if name != "macs")
        energy += increments["macs"] * Mux(ev.int4_macs, cost_int4["macs"], cost["macs"])
        with m.If(self.active):
            m.d.sync += value["cycles"].eq(value["cycles"] + 1)
            with m.If(~self.run):
                m.d.sync += value["stall_cycles"].eq(value["stall_cycles"] + 1)
        # ``run`` reaches each 64-bit counter through its own buffer (hdl/fanout.py).
        for name, inc in increments.items():
            with m.If(buffered(m, platform, self.run, f"run_{name}")):
                m.d.sync += value[name].eq(value[name] + inc)
        # Energy in two stages: this cycle's cost (multiplies and a sum) is registered in ``pending`` and
        # added to the 64-bit total in the next cycle; the value read out is total + pending, so it is
        # exact in every cycle while no path runs from the events through the multiplies into the total.
        total, pending = Signal(64), Signal(64)
        m.d.sync += [total.eq(total + pending),
                     pending.eq(Mux(buffered(m, platform, self.run, "run_energy_fj"), energy, 0))]
        m.d.comb += value["energy_fj"].eq(total + pending)
        return m
