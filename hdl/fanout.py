"""Distributing one high-fanout control signal (the core's clock enable) through buffers.

``hdl/top.py`` freezes the whole core with one clock enable, ``run``. A plain ``EnableInserter`` makes
``run`` a single net with one sink per flip-flop and block-RAM port (about 16 000 for an 8x8 array):
nextpnr neither replicates nor buffers logic nets, so on an ECP5 that one net alone costs ~30 ns of
routing and congests the router. ``BufferedEnableInserter`` inserts the same enable, but each group
of about ``group_bits`` flip-flops gets its own copy of the control through a LUT buffer that Yosys keeps (``keep``), which placement pulls next to its flip-flops. All copies carry
the same value every cycle, so the behaviour is exactly that of ``EnableInserter``; in simulation (no
platform) the copies are plain wires.
"""
from amaranth import *
from amaranth.hdl import EnableInserter, Instance
from amaranth.hdl._ast import Switch            # the statement EnableInserter itself builds

__all__ = ["buffer_instance", "buffered", "BufferedEnableInserter"]


def buffer_instance(platform, source, sink):
    """A LUT that copies ``source`` to ``sink`` and survives synthesis, or None for simulation."""
    from amaranth.vendor import LatticeECP5Platform, SiliconBluePlatform
    if isinstance(platform, LatticeECP5Platform):
        return Instance("LUT4", a_keep=1, p_INIT=C(0xAAAA, 16), i_A=source, i_B=C(0, 1), i_C=C(0, 1),
                        i_D=C(0, 1), o_Z=sink)
    if isinstance(platform, SiliconBluePlatform):
        return Instance("SB_LUT4", a_keep=1, p_LUT_INIT=C(0xAAAA, 16), i_I0=source, i_I1=C(0, 1),
                        i_I2=C(0, 1), i_I3=C(0, 1), o_O=sink)
    return None


def buffered(m, platform, source, name):
    """A copy of ``source`` through its own kept LUT buffer (a wire in simulation)."""
    copy = Signal.like(source, name=name)
    buf = buffer_instance(platform, source, copy)
    if buf is None:
        m.d.comb += copy.eq(source)
    else:
        m.submodules[f"{name}_buf"] = buf
    return copy


def _lhs_bits(stmt):
    return sum(len(signal) for signal in stmt._lhs_signals())


class BufferedEnableInserter(EnableInserter):
    """``EnableInserter(control)`` with the control fanned out through one buffer per group.

    Parameters
    ----------
    control : Value
        The enable (``sync`` domain).
    platform : Platform or None
        Chooses the buffer cell (``buffer_instance``); ``None`` (simulation) uses wires.
    group_bits : int
        Flip-flop bits per buffer.

    Memory ports keep the control itself (a handful of sinks per memory). Relies on
    ``amaranth.hdl`` 0.5's ``EnableInserter._insert_control`` hook; pinned by ``amaranth<0.6``.
    """

    def __init__(self, control, platform, *, group_bits=128):
        super().__init__(control)
        self._platform = platform
        self._group_bits = group_bits
        self._count = 0

    def _copy(self, fragment):
        """A new buffered copy of the control, its buffer added to ``fragment``."""
        self._count += 1
        copy = Signal(name=f"run_copy{self._count}")
        buf = buffer_instance(self._platform, self.controls["sync"], copy)
        if buf is None:
            fragment.add_statements("comb", copy.eq(self.controls["sync"]))
        else:
            fragment.add_subfragment(buf, f"run_buf{self._count}")
        return copy

    def _insert_control(self, fragment, domain, _lhs_masks):
        if domain not in fragment.statements or domain != "sync":
            return super()._insert_control(fragment, domain, _lhs_masks)
        groups, group, bits = [], [], 0
        for stmt in fragment.statements[domain]:
            group.append(stmt)
            bits += _lhs_bits(stmt)
            if bits >= self._group_bits:
                groups.append(group)
                group, bits = [], 0
        if group:
            groups.append(group)
        statements = []
        for group in groups:
            statements.append(Switch(self._copy(fragment), [(1, group, None)], src_loc=self.src_loc))
        fragment.statements[domain] = type(fragment.statements[domain])(statements)
