"""MLPerf Tiny on the NPU: bit-exactness with LiteRT's reference kernels, cycles per inference next to
Ethos-U55-256, per-layer utilization and bound (``opennpu.compiler.mlperf``)."""
from opennpu.compiler.mlperf import main

if __name__ == "__main__":
    raise SystemExit(main())
