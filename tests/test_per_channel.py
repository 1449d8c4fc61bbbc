"""Per-channel requantization end to end: the model compiler loads each output tile's multipliers and
shifts (``LOAD_QUANT``) and the NPU's result equals the layer chain's numpy reference."""
import numpy as np
import pytest

from opennpu.compiler.model_program import compile_model, run_model
from opennpu.compiler.qlayers import ConvGeom, QLayer, QuantModel, TensorSpec
from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.isa import Opcode


def _per_channel_model(rng) -> QuantModel:
    """conv 3x3 (4 -> 6 channels, pad 1) -> FC (6*5*5 -> 9) -> FC (9 -> 20), every layer with its own
    multiplier and shift per output channel, as per-channel quantized CNNs have them."""
    def layer(name, op, k, n, in_shape, conv=None, relu=True):
        pairs = [numerics.quantize_multiplier(s) for s in 2.0 ** rng.uniform(-12, -6, n)]
        mult, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        return QLayer(name, op, rng.integers(-128, 128, (k, n)), rng.integers(-2000, 2000, n), mult, shift,
                      int(rng.integers(-20, 20)), 0 if relu else -128, 127, None, in_shape, (0.1, 3), (0.1, 0), conv)
    conv = ConvGeom((4, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    layers = [layer("conv", "Conv", 36, 6, (4, 5, 5), conv), layer("fc1", "Gemm", 150, 9, (6, 5, 5)),
              layer("fc2", "Gemm", 9, 20, (9,), relu=False)]
    return QuantModel(layers, TensorSpec("x", (4, 5, 5), None, "int8", 0.1, 3), TensorSpec("y", (20,), None, "int8", 0.1, 0))


@pytest.mark.parametrize("array", [(4, 4), (8, 8)])
def test_per_channel_requantization_matches_reference(array):
    rng = np.random.default_rng(7)
    model = _per_channel_model(rng)
    x = rng.integers(-128, 128, (6, 4, 5, 5)).astype(np.int8)
    config = NpuConfig(rows=array[0], cols=array[1])
    compiled = compile_model(model, config, batch=len(x))
    run = run_model(compiled, x)
    assert np.array_equal(run.values.reshape(len(x), -1), model.reference(x).reshape(len(x), -1))
    # every N tile loads its per-channel parameters: LOAD_QUANT beside each LOAD_BIAS
    stage = compiled._stage_program(0, model.quantize_input(x))
    ops = [getattr(c, "op", None) for c in stage.commands]
    assert ops.count(Opcode.LOAD_QUANT) == ops.count(Opcode.LOAD_BIAS) > 0
    # one multiplier for the whole tensor would give a different answer
    flat = QLayer(**{**model.layers[2].__dict__, "multiplier": int(model.layers[2].multiplier[0]),
                     "shift": int(model.layers[2].shift[0])})
    assert not np.array_equal(flat.reference(model.layers[1].reference(model.layers[0].reference(
        model.quantize_input(x)))), model.reference(x))
