"""The code a sweep runs: its version (a hash of the sources, part of every point's key) and a copy of the
installed package laid out for a Ray ``runtime_env`` (``working_dir``), so cluster workers need no
install."""
from __future__ import annotations

import hashlib
import importlib
import shutil
import tempfile
from pathlib import Path

__all__ = ["code_version", "stage_package", "PACKAGES"]

#: The code a point runs: the configuration, the golden model, the compilers, the drivers and the sweep
#: itself (package -> file pattern). The CLI, the RTL (``hdl``) and the FPGA flows are left out: they
#: do not change a golden result.
PACKAGES = {"opennpu": "config.py", "opennpu.sweep": "*.py", "opennpu.golden": "*.py", "opennpu.compiler": "*.py",
            "opennpu.sim": "*.py"}
_MAPPED = ("opennpu.hdl", "opennpu.golden", "opennpu.compiler", "opennpu.sim", "opennpu.synth")


def _folder(package: str) -> Path:
    return Path(importlib.import_module(package).__path__[0])


def code_version() -> str:
    """Hash of the version string and the files of ``PACKAGES`` (16 hex digits)."""
    import opennpu
    digest = hashlib.sha256(opennpu.__version__.encode())
    for package, pattern in PACKAGES.items():
        for path in sorted(_folder(package).glob(pattern)):
            digest.update(f"{package}/{path.name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_package() -> Path:
    """A temporary folder ``.../opennpu`` holding the installed package with its subpackages in place
    (the source tree maps them from sibling folders): ``runtime_env={"working_dir": str(path.parent)}``
    puts it first on the workers' path. The caller removes ``path.parent`` when done."""
    root = Path(tempfile.mkdtemp(prefix="opennpu-ray-")) / "opennpu"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "obj_dir", "build")
    shutil.copytree(_folder("opennpu"), root, ignore=ignore)
    for package in _MAPPED:
        shutil.copytree(_folder(package), root / package.split(".")[1], ignore=ignore)
    return root
