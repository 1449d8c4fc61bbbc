"""The scratchpad SRAMs, built from simple-dual-port memories so that Yosys maps them to block RAM.

An FPGA block RAM has one write and one read port (ECP5 ``DP16KD`` used as simple dual port, iCE40
``SB_RAM40_4K``). The NPU's SRAMs need more:

============  ======================================  ============================================
SRAM          ports                                   built as
============  ======================================  ============================================
weight        1 write (LD), 2 reads (PL, ST)          ``ReplicatedMemory``: one copy per read port
accumulator   1 write (EX), 3 reads (EX read-modify-   ``ReplicatedMemory``: one copy per read port,
              write, transparent; ACT; ST)            the RMW copy transparent to the write
activation    2 writes (LD, ACT), 3 reads (EX, ST,     ``DualWriteMemory``: even / odd address banks,
              ACT's elementwise operands)
                                                      one copy per read port, writes scheduled
============  ======================================  ============================================

All read ports are synchronous (data one cycle after ``en``; ``data`` holds while ``en`` is low),
like ``amaranth.lib.memory`` read ports, so the units cannot tell the difference.

A read port that is not transparent is a combinational memory port followed by a register (``_read``),
and its memory carries Yosys's ``no_rw_check`` attribute: Yosys merges the register into the block
RAM's read port and emits no collision logic. (An ``amaranth.lib.memory`` synchronous port asks for the
old word when the same address is written in the same cycle, which an ECP5 ``DP16KD`` does not
guarantee across its ports, so Yosys delays the write and adds a bypass: about one LUT4 and two
flip-flops per data bit.) In simulation such a read still returns the old word; on the FPGA it is
undefined. No ordered program reads a word in the cycle another unit writes it: a conflicting
access waits until the other unit is done (``golden/deps.py``), and the scheduled writes of
``DualWriteMemory`` keep their own contract below.
"""
from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from .common import addr_bits

__all__ = ["ReplicatedMemory", "DualWriteMemory"]


def _read_sig(depth, width):
    return memory.ReadPort.Signature(addr_width=addr_bits(depth), shape=width)


def _write_sig(depth, width):
    return memory.WritePort.Signature(addr_width=addr_bits(depth), shape=width)


#: The attributes of a memory whose read ports all use ``_read``.
_NO_RW_CHECK = {"no_rw_check": 1}


def _read(m, mem, addr, en, name):
    """A synchronous, non-transparent read of ``mem`` (``memory.Memory``, with ``_NO_RW_CHECK``): the word at
    ``addr`` one cycle after ``en``, held while ``en`` is low; returns the data register (not reset, like a
    memory read port's data)."""
    port = mem.read_port(domain="comb")
    data = Signal(port.data.shape(), name=f"{name}_data", reset_less=True)
    m.d.comb += port.addr.eq(addr)
    with m.If(en):
        m.d.sync += data.eq(port.data)
    return data


class ReplicatedMemory(wiring.Component):
    """One write port and ``read_ports`` read ports: one memory copy per read port, written together.

    Costs ``read_ports`` times the storage; every copy is a plain 1-write 1-read memory.

    Parameters
    ----------
    width, depth : int
    read_ports : int
    transparent : tuple of int
        Read ports that are transparent to the write port (return the word written in the same
        cycle), like ``read_port(transparent_for=(write_port,))``.

    Members
    -------
    wr : Out(WritePort.Signature); rd0, rd1, ... : Out(ReadPort.Signature)
        Ports with ``amaranth.lib.memory`` semantics (connect a unit's flipped port signature).
    """

    def __init__(self, *, width, depth, read_ports, transparent=()):
        self._width, self._depth, self._n, self._transparent = width, depth, read_ports, tuple(transparent)
        super().__init__({"wr": Out(_write_sig(depth, width)),
                          **{f"rd{i}": Out(_read_sig(depth, width)) for i in range(read_ports)}})

    def read_port(self, i):
        return getattr(self, f"rd{i}")

    def elaborate(self, platform):
        m = Module()
        for i in range(self._n):
            transparent = i in self._transparent
            m.submodules[f"copy{i}"] = mem = memory.Memory(shape=self._width, depth=self._depth, init=[],
                                                           attrs=None if transparent else _NO_RW_CHECK)
            wp = mem.write_port()
            rd = self.read_port(i)
            m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data), wp.en.eq(self.wr.en)]
            if transparent:
                rp = mem.read_port(transparent_for=(wp,))
                m.d.comb += [rp.addr.eq(rd.addr), rp.en.eq(rd.en), rd.data.eq(rp.data)]
            else:
                m.d.comb += rd.data.eq(_read(m, mem, rd.addr, rd.en, f"copy{i}"))
        return m


class DualWriteMemory(wiring.Component):
    """Two write ports and ``read_ports`` read ports from 1-write 1-read memories: address-parity banks.

    Words with an even address live in bank 0, odd ones in bank 1; each bank has one copy per read
    port, so a bank takes one write per cycle. Each write port may hold one word back for one cycle
    (a *deferred* write). Per cycle: deferred words are written first (they never share a bank,
    see below); a new word is written at once if its port has no deferred word and its bank is
    still free (port 0 before port 1), otherwise it is deferred.

    Contract (what the controller's dispatcher guarantees, see ``golden/timing.py``):

    - each write port writes *consecutive* addresses in consecutive cycles while a command runs
      (LD: one word per cycle; ACT: one result row per cycle), so a port's successive words always
      alternate banks. By induction, two deferred words always sit in different banks, and a
      deferred word is written exactly one cycle late;
    - a word written in cycle ``t`` is not read before cycle ``t + 2`` and no other write port writes
      the same address before cycle ``t + 2``: a unit's last write precedes its release by at least
      one cycle, and a dependent command dispatches at the release and reads one cycle later.

    Under that contract the memory behaves exactly like a 2-write 2-read memory with non-transparent
    synchronous reads, at ``read_ports`` times the storage (``DESIGN.md``: the activation SRAM). (A port
    may also write with gaps: a gap only frees its bank.)

    Members
    -------
    wr0, wr1 : Out(WritePort.Signature); rd0, rd1, ... : Out(ReadPort.Signature)
    """

    def __init__(self, *, width, depth, read_ports=2):
        self._width, self._depth, self._n = width, depth, read_ports
        super().__init__({"wr0": Out(_write_sig(depth, width)), "wr1": Out(_write_sig(depth, width)),
                          **{f"rd{i}": Out(_read_sig(depth, width)) for i in range(read_ports)}})

    def elaborate(self, platform):
        m = Module()
        width, half = self._width, (self._depth + 1) // 2
        wrs, rds = (self.wr0, self.wr1), [getattr(self, f"rd{i}") for i in range(self._n)]

        # banks[b][p]: bank b (address parity), copy for read port p.
        bank_we = [Signal(name=f"bank{b}_we") for b in range(2)]
        bank_addr = [Signal(addr_bits(half), name=f"bank{b}_waddr") for b in range(2)]
        bank_data = [Signal(width, name=f"bank{b}_wdata") for b in range(2)]
        for p, rd in enumerate(rds):
            odd = Signal(name=f"rd{p}_odd")             # which bank the word being read comes from
            with m.If(rd.en):
                m.d.sync += odd.eq(rd.addr[0])
            data = []
            for b in range(2):
                m.submodules[f"bank{b}_copy{p}"] = mem = memory.Memory(shape=width, depth=half, init=[],
                                                                       attrs=_NO_RW_CHECK)
                wp = mem.write_port()
                m.d.comb += [wp.en.eq(bank_we[b]), wp.addr.eq(bank_addr[b]), wp.data.eq(bank_data[b])]
                data.append(_read(m, mem, rd.addr[1:], rd.en, f"bank{b}_copy{p}"))
            m.d.comb += rd.data.eq(Mux(odd, data[1], data[0]))

        # Deferred words (one per write port).
        held = [Signal(name=f"held{s}") for s in range(2)]
        held_addr = [Signal(addr_bits(self._depth), name=f"held{s}_addr") for s in range(2)]
        held_data = [Signal(width, name=f"held{s}_data") for s in range(2)]

        # Bank claims in priority order: held0, held1, new0, new1.
        claims = []           # (valid, addr, data)
        for s in range(2):
            claims.append((held[s], held_addr[s], held_data[s]))
        taken = [held[0] & (held_addr[0][0] == b) | held[1] & (held_addr[1][0] == b) for b in range(2)]
        for s, wr in enumerate(wrs):
            now = Signal(name=f"write{s}_now")
            bank = wr.addr[0]
            free = Mux(bank, ~taken[1], ~taken[0])
            m.d.comb += now.eq(wr.en & ~held[s] & free)
            # (The word and its address load every cycle, with no enable: they are read only while
            # ``held``, which is set for exactly the words deferred.)
            m.d.sync += [held[s].eq(wr.en & ~now), held_addr[s].eq(wr.addr), held_data[s].eq(wr.data)]
            claims.append((now, wr.addr, wr.data))
            taken = [taken[b] | now & (bank == b) for b in range(2)]

        for b in range(2):
            for valid, addr, data in reversed(claims):     # earlier claims win (none overlap anyway)
                with m.If(valid & (addr[0] == b)):
                    m.d.comb += [bank_we[b].eq(1), bank_addr[b].eq(addr[1:]), bank_data[b].eq(data)]
        return m
