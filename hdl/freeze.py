"""Freezing the core on back-pressure: one registered copy of the clock enable per unit.

``hdl/top.py`` freezes the whole core with one clock enable, ``run``, a register loaded every cycle
with the next cycle's value ``run_next``. A single ``run`` net would reach every flip-flop and
block-RAM port of the core (about 16 000 sinks for an 8x8 array); nextpnr neither replicates nor
buffers nets, so on an ECP5 that one net costs tens of nanoseconds of routing. ``EnableCopies`` gives
every unit its own register, loaded with the same ``run_next``: all copies hold the same value in
every cycle, so applying a plain ``EnableInserter`` with its own copy to each unit behaves exactly as
one ``EnableInserter(run)`` over all of them, while each copy drives only its unit's flip-flops.

Yosys merges flip-flops with identical inputs (``opt_merge``), which would make the copies one net
again; so on Lattice ECP5 and iCE40 each copy is the vendor's flip-flop, instantiated with ``keep``
(synchronous set on the domain's reset, like an Amaranth register with ``init=1``). On any other
platform, and in simulation (no platform), the copies are plain registers.
"""
from amaranth import *
from amaranth.hdl import EnableInserter, Instance

__all__ = ["EnableCopies"]


class EnableCopies:
    """Registered copies of one clock enable, all loaded with ``run_next`` in every cycle.

    Parameters
    ----------
    m : Module
        The module that holds the copies (``sync`` domain); it must not itself run under the enable.
    platform : Platform or None
        Chooses the flip-flop cell (see the module docstring).
    run_next : Value
        The enable for the next cycle. Each copy equals it delayed by one cycle and reads 1 in reset.
    """

    def __init__(self, m: Module, platform, run_next):
        self._m, self._platform, self._run_next = m, platform, run_next

    def copy(self, name: str) -> Signal:
        """A new copy of the enable, named ``name``."""
        from amaranth.vendor import LatticeECP5Platform, SiliconBluePlatform
        q = Signal(init=1, name=name)
        if isinstance(self._platform, LatticeECP5Platform):
            self._m.submodules[f"{name}_ff"] = Instance(
                "TRELLIS_FF", a_keep=1, p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
                p_REGSET="SET", p_SRMODE="LSR_OVER_CE",
                i_CLK=ClockSignal(), i_LSR=ResetSignal(), i_DI=self._run_next, o_Q=q)
        elif isinstance(self._platform, SiliconBluePlatform):
            self._m.submodules[f"{name}_ff"] = Instance(
                "SB_DFFSS", a_keep=1, i_C=ClockSignal(), i_S=ResetSignal(), i_D=self._run_next, o_Q=q)
        else:
            self._m.d.sync += q.eq(self._run_next)
        return q

    def freeze(self, name: str, elaboratable):
        """Add ``elaboratable`` to the module as submodule ``name``, running under its own copy
        (``run_<name>``) of the enable."""
        self._m.submodules[name] = EnableInserter(self.copy(f"run_{name}"))(elaboratable)
