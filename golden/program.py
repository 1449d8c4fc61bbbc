"""``Program`` (commands + data-in bytes) and ``Result`` (data-out bytes, counters, status): the
backend-free contract between compiler, golden model and every simulator."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from .isa import COMMAND_BITS, Command, ErrorCode, encode

__all__ = ["COUNTER_NAMES", "ProgramError", "Program", "Result", "decode_counters"]

#: Hardware counters, in the order the ``COUNTERS`` command emits them (8 bytes little-endian each,
#: ``NpuConfig.counter_bits`` wide, zero-extended) and the status port exposes them. ``int4_macs``:
#: the MACs (of ``macs``) done in a4w4, at the 4-bit MAC cost; with ``energy_counter=False`` the
#: hardware's ``energy_fj`` is 0 and the drivers derive it (``golden.model.derive_energy``).
COUNTER_NAMES = ("cycles", "busy_cycles", "stall_cycles", "macs", "act_reads", "act_writes",
                 "wgt_reads", "wgt_writes", "acc_reads", "acc_writes", "dma_in_bytes",
                 "dma_out_bytes", "act_ops", "energy_fj", "int4_macs")


class ProgramError(ValueError):
    """The program cannot run at all (e.g. its data-in stream is shorter than its LOADs need)."""


@dataclass
class Program:
    """A command stream and the bytes it consumes from the data-in stream.

    ``commands`` holds ``Command`` objects or raw 128-bit ints (raw ints let tests send malformed
    words). ``data_in`` is the exact byte stream, already padded to whole beats per SRAM word.
    """
    commands: list = field(default_factory=list)
    data_in: bytes = b""

    def words(self) -> list[int]:
        """The 128-bit command words; raises ValueError naming the first entry that is neither a
        ``Command`` nor an integer in ``0 .. 2**128 - 1`` (bools and floats are refused, not
        converted), so every backend refuses the same programs before anything runs."""
        return [c if type(c) is int else encode(c) for c in self.checked_commands()]

    def checked_commands(self) -> list:
        """The entries, ``Command`` objects as they are and raw words as plain ints, after the check
        ``words`` makes (without encoding the commands: the golden model's path)."""
        out = []
        for index, c in enumerate(self.commands):
            if isinstance(c, Command):
                out.append(c)
            elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < 1 << COMMAND_BITS:
                out.append(int(c))
            else:
                raise ValueError(f"command {index} is {c!r}: expected a Command or an unsigned "
                                 f"{COMMAND_BITS}-bit int")
        return out

    def __len__(self):
        return len(self.commands)


@dataclass
class Result:
    """What running a program produced: the data-out bytes, final counters and the sticky status."""
    outputs: bytes
    counters: dict
    error: ErrorCode = ErrorCode.OK
    rejected: int = 0


def decode_counters(blob: bytes) -> dict:
    """Bytes emitted by one ``COUNTERS`` command -> ``{name: value}``."""
    need = 8 * len(COUNTER_NAMES)
    if len(blob) < need:
        raise ValueError(f"counter snapshot needs {need} bytes, got {len(blob)}")
    return {name: int.from_bytes(blob[8 * i:8 * i + 8], "little") for i, name in enumerate(COUNTER_NAMES)}
