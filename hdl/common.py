"""Small helpers shared by the RTL units."""
from amaranth.lib import memory

__all__ = ["addr_bits", "read_port_signature", "write_port_signature"]


def addr_bits(depth: int) -> int:
    """Address width of a memory with ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def read_port_signature(depth: int, width: int):
    return memory.ReadPort.Signature(addr_width=addr_bits(depth), shape=width)


def write_port_signature(depth: int, width: int):
    return memory.WritePort.Signature(addr_width=addr_bits(depth), shape=width)
