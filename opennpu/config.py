"""``NpuConfig``: the one object that RTL, golden model, cycle model, simulators and synthesis all take.

Everything that shapes the hardware lives here and is validated on construction, so a bad value fails
at the point where the user wrote it, with a ``ValueError`` naming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

__all__ = ["PRECISIONS", "DATAFLOWS", "EnergyTable", "HOROWITZ_45NM", "NpuConfig", "parse_array"]

#: Precision modes: activations x weights. ``a8w4`` packs two int4 weights per byte (low nibble
#: first); ``a4w4`` packs two int4 activations and two int4 weights per byte and doubles the K depth
#: of a weight tile (two 4-bit MACs per PE per cycle).
PRECISIONS = ("int8", "a8w4", "a4w4")
DATAFLOWS = ("ws", "os")

_MAX_DEPTH = 1 << 16          # address and row-count fields of the ISA are 16 bits wide


@dataclass(frozen=True)
class EnergyTable:
    """Energy per event in femtojoules (integers, so the hardware accumulator is exact).

    Default values: M. Horowitz, "Computing's energy problem (and what we can do about it)",
    ISSCC 2014, 45 nm: 8-bit add 0.03 pJ, 8-bit multiply 0.2 pJ, 32-bit add 0.1 pJ, 32-bit multiply
    3.1 pJ, 64-bit SRAM read 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB), DRAM 1.3-2.6 nJ per 64 bits.

    Derived entries:
    - ``mac_int8_fj``: 8-bit multiply + 32-bit accumulate = 200 + 100.
    - ``mac_int4_fj``: a 4-bit multiply scaled quadratically from 8-bit (200/4 = 50) + 32-bit add.
    - ``sram_byte_fj``: per byte accessed, by SRAM capacity: 10 pJ/8 B, 20 pJ/8 B, 100 pJ/8 B.
    - ``dma_byte_fj``: host/DRAM traffic per byte, the low end of 1.3 nJ per 64 bits.
    - ``act_op_fj``: per activation-unit element: 32-bit multiply + three 32-bit adds.
    """
    name: str = "horowitz-isscc2014-45nm"
    mac_int8_fj: int = 300
    mac_int4_fj: int = 150
    #: (capacity limit in bytes, energy per byte accessed); the first row whose limit fits applies.
    sram_byte_fj: tuple = ((8 * 1024, 1250), (32 * 1024, 2500), (1 << 20, 12500), (1 << 62, 25000))
    dma_byte_fj: int = 162_500
    act_op_fj: int = 3_400

    def __post_init__(self):
        for name in ("mac_int8_fj", "mac_int4_fj", "dma_byte_fj", "act_op_fj"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"EnergyTable.{name} must be a non-negative int (fJ), got {value!r}")
        rows = tuple(tuple(r) for r in self.sram_byte_fj)
        if not rows or any(len(r) != 2 or r[0] <= 0 or r[1] < 0 for r in rows):
            raise ValueError(f"EnergyTable.sram_byte_fj must be ((capacity_bytes, fj_per_byte), ...), "
                             f"got {self.sram_byte_fj!r}")
        object.__setattr__(self, "sram_byte_fj", rows)

    def sram_fj_per_byte(self, capacity_bytes: int) -> int:
        for limit, fj in self.sram_byte_fj:
            if capacity_bytes <= limit:
                return fj
        return self.sram_byte_fj[-1][1]


HOROWITZ_45NM = EnergyTable()


@dataclass(frozen=True)
class NpuConfig:
    """Shape of one NPU instance.

    Parameters
    ----------
    rows, cols:
        Systolic array size: ``rows`` is the K depth of a weight tile (int8), ``cols`` its N width.
    dataflow:
        ``"ws"`` weight-stationary (implemented in RTL) or ``"os"`` output-stationary.
    precisions:
        Precision modes the hardware accepts (``CONFIG`` with any other mode is rejected).
    act_depth, wgt_depth, acc_depth:
        SRAM depths in words. An activation word holds ``rows`` int8 lanes, a weight word ``cols``
        int8 lanes, an accumulator word ``cols`` int32 lanes.
    bus_bytes:
        Width of the data-in and data-out streams in bytes (one beat per cycle), a power of two.
        ``None`` means the smallest power of two holding one int8 SRAM word (``max(rows, cols)``).
    energy:
        Energy table used by the hardware ``energy_fj`` counter and the cycle model.
    counter_bits:
        Width of every hardware counter (``golden.program.COUNTER_NAMES``), 1..64; the golden model
        wraps its counters at the same width. The ``COUNTERS`` snapshot and the status port still
        carry 8 bytes per counter (zero-extended). The default, 56, holds a 2048^3 GEMM on every
        array size: the largest counter is ``energy_fj``, and the worst array is 1x1, where the
        compiled int8 GEMM (one-row M chunks, weights reloaded for every tile) takes about
        5.6e10 cycles and accumulates about 2.2e15 fJ (< 2^52). Even if every one of those cycles
        carried the most energy one cycle can (two activation reads and writes, two weight reads and a
        write, two accumulator reads and a write, a beat in, a beat out, a MAC and an activation op:
        about 3.6e5 fJ with the default table and depths), the total, 2.0e16 fJ, stays below 2^55.
        ``cycles`` (< 2^36) and the event counts are far smaller. (A non-default energy table, very
        deep SRAMs or a data bus much wider than the array scale ``energy_fj`` up: raise the width.)
    energy_counter:
        Build the hardware ``energy_fj`` accumulator. Without it (small FPGA profiles) the hardware
        reports 0 in that slot and the drivers derive ``energy_fj`` exactly from the event counters
        (``golden.model.derive_energy``): ``int4_macs`` separates the MACs of a4w4 cost.
    """
    rows: int = 8
    cols: int = 8
    dataflow: str = "ws"
    precisions: tuple = ("int8",)
    act_depth: int = 4096
    wgt_depth: int = 2048
    acc_depth: int = 1024
    bus_bytes: int | None = None
    energy: EnergyTable = field(default_factory=EnergyTable)
    counter_bits: int = 56
    energy_counter: bool = True

    def __post_init__(self):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
                raise ValueError(f"NpuConfig.{name} must be an int in 1..64, got {value!r}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"NpuConfig.dataflow must be one of {DATAFLOWS}, got {self.dataflow!r}")
        precisions = tuple(self.precisions) if not isinstance(self.precisions, str) else (self.precisions,)
        if not precisions or any(p not in PRECISIONS for p in precisions):
            raise ValueError(f"NpuConfig.precisions must be a non-empty subset of {PRECISIONS}, "
                             f"got {self.precisions!r}")
        if any(p != "int8" for p in precisions) and (self.rows % 2 or self.cols % 2):
            raise ValueError(f"int4 precisions pack two values per byte and need even rows and cols, "
                             f"got {self.rows}x{self.cols}")
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(precisions)))
        for name in ("act_depth", "wgt_depth", "acc_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= _MAX_DEPTH:
                raise ValueError(f"NpuConfig.{name} must be an int in 2..{_MAX_DEPTH}, got {value!r}")
        if self.wgt_depth < self.rows * 2:
            raise ValueError(f"NpuConfig.wgt_depth must hold at least two weight tiles "
                             f"({self.rows * 2} words), got {self.wgt_depth}")
        widest = max(self.rows, self.cols)
        if self.bus_bytes is None:
            object.__setattr__(self, "bus_bytes", 1 << (widest - 1).bit_length())
        if (not isinstance(self.bus_bytes, int) or isinstance(self.bus_bytes, bool)
                or not widest <= self.bus_bytes <= 512 or self.bus_bytes & (self.bus_bytes - 1)):
            raise ValueError(f"NpuConfig.bus_bytes must be a power of two in {widest}..512 "
                             f"(at least one int8 SRAM word per beat), got {self.bus_bytes!r}")
        if not isinstance(self.energy, EnergyTable):
            raise ValueError(f"NpuConfig.energy must be an EnergyTable, got {type(self.energy).__name__}")
        if (not isinstance(self.counter_bits, int) or isinstance(self.counter_bits, bool)
                or not 1 <= self.counter_bits <= 64):
            raise ValueError(f"NpuConfig.counter_bits must be an int in 1..64, got {self.counter_bits!r}")
        if not isinstance(self.energy_counter, bool):
            raise ValueError(f"NpuConfig.energy_counter must be a bool, got {self.energy_counter!r}")

    # -- derived sizes --------------------------------------------------------------------------
    @property
    def array(self) -> str:
        return f"{self.rows}x{self.cols}"

    @property
    def act_word_bytes(self) -> int:
        return self.rows

    @property
    def wgt_word_bytes(self) -> int:
        return self.cols

    @property
    def acc_word_bytes(self) -> int:
        return 4 * self.cols

    @property
    def counter_mask(self) -> int:
        """Counters wrap modulo ``counter_mask + 1`` (``2 ** counter_bits``)."""
        return (1 << self.counter_bits) - 1

    def beats(self, nbytes: int) -> int:
        """Data-stream beats that carry ``nbytes`` (a word never shares a beat with another)."""
        return -(-nbytes // self.bus_bytes)

    def with_(self, **changes) -> "NpuConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Stable hash of every field (used to cache builds per configuration)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def parse_array(text: str) -> tuple[int, int]:
    """``"8x8"`` -> ``(8, 8)``; raises ``ValueError`` naming the bad text."""
    try:
        rows, cols = (int(part) for part in text.lower().split("x"))
    except (ValueError, AttributeError):
        raise ValueError(f"array must look like RxC (e.g. 8x8), got {text!r}") from None
    return rows, cols
