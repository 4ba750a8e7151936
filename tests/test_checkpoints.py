"""Orbax checkpoints of the run axis: an interrupted fit resumed from its checkpoint ends where an uninterrupted
one does; a diverged run never overwrites its last good state; settings are checked on resume."""
import jax
import numpy as np
import pytest

from imdad_jax.data import one_vs_rest_runs
from imdad_jax.io.checkpoints import CheckpointMismatchError, RunCheckpointer
from imdad_jax.models import build_detector
from imdad_jax.objectives import get_objective
from imdad_jax.train import TrainingInterrupted, fit

OBJ = get_objective("imdad")


def _setup(lr=1e-2, n_classes=3):
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (n_classes, 5))
    x = np.concatenate([rng.normal(m, 1, (50, 5)) for m in means]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), 50)
    _, data, keys = one_vs_rest_runs(x, y, tuple(range(n_classes)), (0,), anomaly_fraction=0.5)
    lrs = np.full(data.n_runs, lr, np.float32) if np.isscalar(lr) else np.asarray(lr, np.float32)
    hp = {"lr": lrs, **{k: np.full(data.n_runs, v, np.float32) for k, v in
                        dict(weight_decay=1e-6, nu=0.5, nu1=0.1, nu2=0.1, dual_lr=0.1, head_lr=0.1).items()}}
    return data, keys, hp


def _fit(data, keys, hp, strategy, **kw):
    return fit(build_detector("fc3", dense_features=(16, 8)), OBJ, OBJ.Options(), data, hp, keys, epochs=5,
               batch_size=16, milestones=(3,), strategy=strategy, epoch_mode="steps", devices=jax.devices()[:2],
               **kw)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, strategy):
    data, keys, hp = _setup()
    ref = _fit(data, keys, hp, strategy)
    fp = {"test": strategy}
    stops = iter([False, False, True])  # stop after epoch 3 (between the checkpoints at 2 and 4)
    with RunCheckpointer(tmp_path / "ck", every=2, fingerprint=fp) as ck:
        with pytest.raises(TrainingInterrupted) as info:
            _fit(data, keys, hp, strategy, checkpoint=ck, should_stop=lambda: next(stops))
    assert info.value.epoch == 3
    with RunCheckpointer(tmp_path / "ck", every=2, fingerprint=fp) as ck:
        assert ck.latest_epoch() == 3  # the stop wrote its own checkpoint
        got = _fit(data, keys, hp, strategy, checkpoint=ck, resume=True)
        assert got.start_epoch == 3 and len(got.epoch_s) == 2
        assert ck.latest_epoch() == 5
    _equal(ref.state, got.state)  # bit for bit: params, optimizer, duals, keys, step
    for k in ref.history:
        np.testing.assert_array_equal(ref.history[k], got.history[k])


def test_resume_refuses_other_settings_and_fresh_start_refuses_existing(tmp_path):
    data, keys, hp = _setup()
    with RunCheckpointer(tmp_path / "ck", every=5, fingerprint={"lr": 0.01}) as ck:
        _fit(data, keys, hp, "vmap", checkpoint=ck)
    with RunCheckpointer(tmp_path / "ck", every=5, fingerprint={"lr": 0.001}) as ck:
        with pytest.raises(CheckpointMismatchError, match="lr: saved 0.01, now 0.001"):
            _fit(data, keys, hp, "vmap", checkpoint=ck, resume=True)
        with pytest.raises(ValueError, match="already holds a checkpoint"):
            _fit(data, keys, hp, "vmap", checkpoint=ck)


def test_finished_checkpoint_resumes_without_training(tmp_path):
    data, keys, hp = _setup()
    with RunCheckpointer(tmp_path / "ck", every=5) as ck:
        ref = _fit(data, keys, hp, "vmap", checkpoint=ck)
    with RunCheckpointer(tmp_path / "ck", every=5) as ck:
        got = _fit(data, keys, hp, "vmap", checkpoint=ck, resume=True)
    assert got.start_epoch == 5 and got.epoch_s == []
    _equal(ref.state.params, got.state.params)
    assert got.history["loss"].shape == ref.history["loss"].shape


def test_diverged_run_keeps_its_last_good_checkpoint(tmp_path):
    # run 1's absurd learning rate makes it non-finite; runs 0 and 2 must be unaffected, and the checkpoint
    # must hold run 1's last finite state rather than NaNs.
    data, keys, hp = _setup(lr=[1e-2, 1e12, 1e-2])
    alone = _setup(lr=1e-2)
    ref = _fit(*alone, "vmap")
    with RunCheckpointer(tmp_path / "ck", every=1) as ck:
        got = _fit(data, keys, hp, "vmap", checkpoint=ck)
        assert got.diverged.tolist() == [False, True, False]
        restored = ck.restore(got.state)
    for r in (0, 2):
        _equal(jax.tree.map(lambda a: a[r], ref.state.params), jax.tree.map(lambda a: a[r], got.state.params))
    epoch, state, _, diverged = restored
    assert epoch == 5 and diverged.tolist() == [False, True, False]
    for leaf in jax.tree.leaves(state.params):
        assert np.all(np.isfinite(leaf[1])), "the diverged run's checkpoint was overwritten with non-finite values"
    assert not all(np.all(np.isfinite(leaf[1])) for leaf in jax.tree.leaves(got.state.params))
