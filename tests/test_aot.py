"""The GPU and TPU programs compile (ahead of time, on this CPU-only machine) and do what they were built to do.

Needs the compile-only plugins (``pip install -e ".[aot]"``, which CI's ``.ci/run`` installs); without them every
test here skips with the reason. A change that breaks the H100 or TPU v5e program fails here.
"""
import numpy as np
import pytest

from imdad_jax import aot
from imdad_jax.config import make_config
from imdad_jax.experiment import build_model, objective_options
from imdad_jax.models.detector import build_encoder
from imdad_jax.objectives import get_objective
from imdad_jax.train.chunks import MEMORY_FRACTION, estimate_memory
from imdad_jax.train.engine import RunData
from imdad_jax.train.programs import lower_train_step
from imdad_jax.train.runners import Runner, autotune_candidates
from imdad_jax.train.sharding import padded_runs
from imdad_jax.train.step import plan_batches


def _need(target):
    # Asked when a test runs, not at collection: loading a plugin in every test worker is wasted work.
    why = aot.available(target)
    if why:
        pytest.skip(why)

OBJ = get_objective("imdad")
HP = ("lr", "weight_decay", *OBJ.HYPERPARAMS)
# The main job's step: CNN2+FC3 IMD-AD at batch 150 on Fashion-MNIST shapes (a smaller shared training set: the
# program's shape per run does not depend on it).
X_SHAPE = (6000, 28, 28, 1)
PLAN = plan_batches(3000, 300, 150)


def _main_model():
    opts = OBJ.Options()
    enc = build_encoder("cnn2", conv_features=(16, 32), dense_features=(128, 64, 32))
    return OBJ.make_model(enc, X_SHAPE[1:], opts), opts


def test_h100_programs_compile_and_vmap_fwd_calls_cudnn_backward_filter_kernels():
    _need("h100")
    model, opts = _main_model()
    got = {}
    for runner in autotune_candidates(16):  # what auto measures on a GPU: each must compile
        info = aot.compile_for("h100", model, OBJ, opts, runner, 16, PLAN, X_SHAPE, HP)
        assert info["compiled"], f"{runner.name} did not compile for the H100: {info.get('error')}"
        assert info["temp_bytes"] > 0 and info["program_bytes"] > info["argument_bytes"] // 2
        got[runner.name] = {(k["kind"], k["groups"]) for k in info["kernels"]}
    # vmap: every convolution (weight gradients too) a forward grouped one, the known-slow path
    assert got["vmap"] == {("forward", 16)}
    # vmap_fwd: the weight gradients become cuDNN backward-filter kernels
    assert ("backward-filter", 16) in got["vmap_fwd"]
    # map: per-run, ungrouped kernels of all three kinds
    assert got["map"] == {("forward", 1), ("backward-input", 1), ("backward-filter", 1)}


def test_tpu_v5e_default_step_compiles_with_the_plain_layers_and_the_models_flops():
    _need("tpu_v5e")
    model, opts = _main_model()
    info = aot.compile_for("tpu_v5e", model, OBJ, opts, Runner("vmap"), 4, PLAN, X_SHAPE, HP)
    assert info["compiled"], info.get("error")
    analytic = aot.step_flops(model, OBJ, opts, PLAN, X_SHAPE, HP)
    # the TPU's own count of the step is about the model's matmuls and convolutions (it pads to its tiles, so
    # the ratio moves with the run count: 0.9-1.1 at 4-10 runs), not an im2col blow-up (4.4x) nor a gradient
    # lost (under 0.5)
    assert 0.75 <= info["flops"] / 4 / analytic < 1.5
    # lowered for a TPU the layers take the plain forms (nn.max_pool and its select-and-scatter gradient);
    # lowered for this CPU, the CPU forms (no reduce_window at all)
    tpu_text = lower_train_step(model, OBJ, opts, Runner("vmap"), 4, PLAN, X_SHAPE, HP,
                                aot.TARGETS["tpu_v5e"].devices()).as_text()
    cpu_text = lower_train_step(model, OBJ, opts, Runner("vmap"), 4, PLAN, X_SHAPE, HP).as_text()
    assert "reduce_window" in tpu_text and "select_and_scatter" in tpu_text
    assert "reduce_window" not in cpu_text and "select_and_scatter" not in cpu_text


def test_notebooks_program_compiles_for_a_tpu_v5e_2x2_slice():
    """The notebook's full-size sweep on a Colab-like TPU: the paper config's ten runs sharded over four chips."""
    _need("tpu_v5e")
    from jax.experimental import topologies
    cfg = make_config("paper", classes=tuple(range(10)))
    obj, opts = objective_options(cfg)
    model = build_model(cfg, (28, 28, 1))
    devices = list(topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices)
    lowered = lower_train_step(model, obj, opts, Runner("vmap"), padded_runs(10, len(devices)),
                               plan_batches(6000, 600, cfg.batch_size), (60000, 28, 28, 1), ("lr", "weight_decay",
                                                                                           *obj.HYPERPARAMS), devices)
    compiled = aot.compile_lowered(lowered)
    assert compiled.memory_analysis().temp_size_in_bytes > 0
    assert "runs" in str(compiled.input_shardings)


def test_max_runs_auto_on_an_h100_agrees_with_the_compiled_programs_runs_per_device():
    """``--max_runs=auto`` sizes chunks from the same memory analysis the AOT report tabulates."""
    _need("h100")
    model, opts = _main_model()
    tgt = aot.TARGETS["h100"]
    data = RunData(np.zeros(X_SHAPE, np.float32), np.zeros((1, 3000), np.int32), np.array([3000]),
                   np.zeros((1, 300), np.int32), np.array([300]))
    budget = int(tgt.memory * tgt.usable * MEMORY_FRACTION)
    est = estimate_memory(model, OBJ, opts, data, {k: np.zeros(1, np.float32) for k in HP}, batch_size=150,
                          devices=tgt.devices(), budget=budget)
    planned = est.runs_that_fit(budget)
    at = {r: aot.compile_for(tgt, model, OBJ, opts, Runner("vmap"), r, PLAN, X_SHAPE, HP)["program_bytes"]
          for r in (10, 100)}
    table = aot.runs_that_fit(tgt, at)
    assert 100 < planned and abs(planned - table) / table < 0.15, (planned, table)
