"""Sweeps larger than memory: the run axis split into chunks gives every run its one-program numbers; the
chunk size comes from XLA's memory analysis; a run that cannot fit fails before training with both sizes."""
import jax
import numpy as np
import pytest

from imdad_jax.config import make_config
from imdad_jax.data import load_synthetic, one_vs_rest_runs
from imdad_jax.experiment import run_experiment
from imdad_jax.models import build_detector
from imdad_jax.objectives import get_objective
from imdad_jax.train import fit
from imdad_jax.train.chunks import MemoryEstimate, ResourceError, estimate_memory, fit_in_chunks, plan_chunks

OBJ = get_objective("imdad")


def _setup(n_classes=5):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1, (40, 5)) for m in rng.normal(0, 3, (n_classes, 5))]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), 40)
    _, data, keys = one_vs_rest_runs(x, y, tuple(range(n_classes)), (0,), anomaly_fraction=0.5)
    hp = {k: np.full(data.n_runs, v, np.float32) for k, v in
          dict(lr=1e-2, weight_decay=1e-6, nu=0.5, nu1=0.1, nu2=0.1, dual_lr=0.1, head_lr=0.1).items()}
    return data, keys, hp


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_chunks_give_each_run_its_one_program_numbers(strategy):
    data, keys, hp = _setup()
    # run 2 with fewer normals than the rest: its chunk must still draw batches from the whole sweep's plan
    data.n_valid[2] -= 7
    model = build_detector("fc3", dense_features=(16, 8))
    kw = dict(epochs=3, batch_size=16, milestones=(2,), strategy=strategy, epoch_mode="steps",
              devices=jax.devices()[:1])
    whole = fit(model, OBJ, OBJ.Options(), data, hp, keys, **kw)
    chunked = fit_in_chunks(model, OBJ, OBJ.Options(), data, hp, keys, max_runs=2, **kw)
    assert chunked.n_chunks == 3
    _close(whole.state.params, chunked.state.params)
    _close(whole.state.obj_state, chunked.state.obj_state)
    for k in whole.history:
        np.testing.assert_allclose(whole.history[k], chunked.history[k], atol=1e-5, rtol=1e-4)
    assert chunked.diverged.shape == (5,) and not chunked.diverged.any()


def test_chunk_size_follows_the_measured_memory():
    data, keys, hp = _setup()
    small = estimate_memory(build_detector("fc3", dense_features=(16, 8)), OBJ, OBJ.Options(), data, hp,
                            batch_size=16)
    wide = estimate_memory(build_detector("fc3", dense_features=(256, 128)), OBJ, OBJ.Options(), data, hp,
                           batch_size=16)
    # Adam keeps two moments per weight: a run costs at least 3x its parameters' bytes (params + mu + nu)
    n_wide = 5 * 256 + 256 * 128 + 128 * 3
    assert wide.per_run >= 3 * 4 * n_wide > small.per_run > 0
    model = build_detector("fc3", dense_features=(16, 8))
    budget = small.fixed + 2 * small.per_run
    got = fit_in_chunks(model, OBJ, OBJ.Options(), data, hp, keys, max_runs="auto", budget=budget, epochs=1,
                        batch_size=16, strategy="vmap", devices=jax.devices()[:1])
    # with a budget the estimate is refined by compiling at the count it predicts: 2 runs fit, 3 do not
    assert got.n_chunks == 3 and got.memory.runs_that_fit(budget) == 2
    assert got.state.params["params"]["head"]["w"].shape[0] == 5


def test_plan_chunks_and_a_run_too_large_for_the_device():
    est = MemoryEstimate(fixed=100 * 2**20, per_run=50 * 2**20)
    assert [len(c) for c in plan_chunks(10, None, est, budget=300 * 2**20)] == [4, 4, 2]
    assert [len(c) for c in plan_chunks(10, 3)] == [3, 3, 3, 1]
    with pytest.raises(ResourceError, match="one run needs about 150 MiB of device memory but 120 MiB"):
        plan_chunks(10, None, est, budget=120 * 2**20)
    with pytest.raises(ValueError, match="max_runs must be >= 1"):
        plan_chunks(10, 0)


def test_experiment_with_max_runs_matches_one_program():
    ds = load_synthetic("moons")
    common = dict(dataset="moons", classes=(0, 1), n_folds=2, epochs=2, strategy="vmap")
    one = run_experiment(make_config("tiny", max_runs=None, **common), ds)
    two = run_experiment(make_config("tiny", max_runs=1, **common), ds)
    assert two["timing"]["programs"] == 4 and one["timing"]["programs"] == 1
    np.testing.assert_allclose([r["auc"] for r in one["runs"]], [r["auc"] for r in two["runs"]], atol=1e-6)
