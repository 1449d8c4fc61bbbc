"""opennpu: an open NPU (Amaranth RTL, numpy golden model, simulators, compiler).

``import opennpu`` stays light; ``opennpu.compile`` and ``opennpu.run_model`` load the compiler on
first use.
"""
import time as _time

from .config import NpuConfig

#: When this process imported opennpu (before any of its subpackages): a source file changed later may
#: differ from the module this process runs (``sim/verilator.py`` refuses to key its cache on it).
IMPORT_TIME = _time.time()
__version__ = "0.1.0"
__all__ = ["NpuConfig", "compile", "run_model", "Npu"]

_LAZY = {"compile": ("opennpu.compiler.model_program", "compile_model"),
         "run_model": ("opennpu.compiler.model_program", "run_model"),
         "Npu": ("opennpu.sim.driver", "Npu")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'opennpu' has no attribute {name!r}")
