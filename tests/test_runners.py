"""The runners: every strategy trains and scores every objective to the same numbers; auto measures on an
accelerator (here with its candidates and a fake clock, and once for real on CPU) and caches its choice."""
import json

import jax
import numpy as np
import pytest

from conftest import blobs
from imdad_jax.data import one_vs_rest_runs
from imdad_jax.models import build_encoder
from imdad_jax.objectives import REGISTRY, get_objective
from imdad_jax.train import fit
from imdad_jax.train.runners import AutotuneCache, Runner, autotune, autotune_candidates, resolve_runner

STACKED = [Runner("vmap_fwd"), Runner("map"), Runner("chunked", chunk_runs=2)]


def _close(a, b, atol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=2e-4)


def _setup(method, arch="fc3", batch_norm=True, dropout=0.1):
    obj = get_objective(method)
    opts = obj.Options()._replace(**({"drocc_ascent_steps": 2} if method == "drocc" else {}))
    if arch == "fc3":
        x, y = blobs(n_normal=60, n_anom=60, dim=4, seed=0)
        enc = build_encoder("fc3", dense_features=(8, 4), batch_norm=batch_norm, dropout=dropout)
    else:
        rng = np.random.default_rng(0)
        x = rng.normal(0, 1, (120, 8, 8, 1)).astype(np.float32)
        y = np.repeat(np.arange(2), 60)
        x[y == 1, 2:5, 2:5] += 2.0
        enc = build_encoder("cnn2", conv_features=(2, 4), dense_features=(8, 4), batch_norm=batch_norm,
                            dropout=dropout)
    # 3 runs: normal class 0 with seeds 0-2 (fc3), or classes 0 and 1 with seeds 0 and 1 (cnn2)
    classes, seeds = ((0,), (0, 1, 2)) if arch == "fc3" else ((0, 1), (0, 1))
    ids, data, keys = one_vs_rest_runs(x, y, classes, seeds, anomaly_fraction=0.5)
    model = obj.make_model(enc, x.shape[1:], opts)
    hp = {k: np.full(data.n_runs, v, np.float32)
          for k, v in {"lr": 1e-2, "weight_decay": 1e-6, **obj.DEFAULT_HP}.items()}
    return obj, opts, model, data, hp, keys, x


def _fit_score(obj, opts, model, data, hp, keys, x, strategy, devices):
    res = fit(model, obj, opts, data, hp, keys, epochs=2, batch_size=20, milestones=(1,), strategy=strategy,
              devices=devices)
    scores = res.runner.apply(lambda p, xb: obj.score(p[0], p[1], model, xb, opts),
                              (res.state.params, res.state.obj_state), x)
    return res, scores


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_strategy_gives_vmaps_numbers_for_every_objective_with_batch_norm_and_dropout(method):
    """3 runs sharded over 2 devices (one padding run); chunked groups 2 runs, so one group is partial."""
    obj, opts, model, data, hp, keys, x = _setup(method)
    devices = jax.devices()[:2]
    ref, ref_scores = _fit_score(obj, opts, model, data, hp, keys, x, Runner("vmap"), devices)
    for runner in STACKED:
        got, scores = _fit_score(obj, opts, model, data, hp, keys, x, runner, devices)
        assert got.runner == runner and got.strategy == runner.strategy
        _close(ref.state.params, got.state.params)
        _close(ref.state.obj_state, got.state.obj_state)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=1e-3)
        for k in ref.history:
            np.testing.assert_allclose(got.history[k], ref.history[k], atol=1e-4, rtol=1e-3)


def test_every_strategy_gives_the_same_cnn_with_batch_norm_and_dropout():
    obj, opts, model, data, hp, keys, x = _setup("imdad", arch="cnn2")
    devices = jax.devices()[:1]
    ref, ref_scores = _fit_score(obj, opts, model, data, hp, keys, x, Runner("vmap"), devices)
    for runner in STACKED + [Runner("loop", "steps"), Runner("map", "steps", unroll=2)]:
        got, scores = _fit_score(obj, opts, model, data, hp, keys, x, runner, devices)
        _close(ref.state.params, got.state.params, atol=5e-5)
        np.testing.assert_allclose(scores, ref_scores, atol=5e-4, rtol=1e-3)


def test_runner_names_and_bad_values():
    assert resolve_runner("auto", "auto", "cpu", has_conv=True) == Runner("loop", "steps")
    assert resolve_runner("auto", "auto", "cpu", has_conv=False) == Runner("vmap", "scan")
    assert resolve_runner("auto", "auto", "gpu", has_conv=True) == Runner("vmap", "scan")
    assert resolve_runner("map", "steps", "tpu") == Runner("map", "steps")
    assert Runner("chunked", chunk_runs=4).name == "chunked(k=4)"
    for bad in (dict(strategy="auto"), dict(strategy="pmap"), dict(strategy="vmap", epoch_mode="auto"),
                dict(strategy="chunked", chunk_runs=0)):
        with pytest.raises(ValueError):
            Runner(**bad)
    with pytest.raises(ValueError, match="strategy must be one of"):
        resolve_runner("fast")
    # chunked is a candidate only where it groups fewer runs than all; map only for several runs
    assert [r.name for r in autotune_candidates(1)] == ["vmap", "vmap_fwd"]
    assert [r.name for r in autotune_candidates(100)] == ["vmap", "vmap_fwd", "map", "chunked(k=8)"]


def test_autotune_picks_the_fastest_by_run_steps_per_second_with_a_fake_clock():
    seconds_per_step = {"vmap": 0.010, "vmap_fwd": 0.004, "map": 0.006, "chunked(k=8)": None}  # None: fails
    compile_seconds = {"vmap": 30.0, "vmap_fwd": 90.0, "map": 5.0}  # compile time must not count
    now = [0.0]
    calls = []

    def run_steps(runner, k):
        calls.append((runner.name, k))
        if seconds_per_step[runner.name] is None:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
        now[0] += compile_seconds[runner.name] if k == 0 else k * seconds_per_step[runner.name]

    logs = []
    chosen = autotune(autotune_candidates(100), run_steps, n_runs=100, steps=5, clock=lambda: now[0],
                      log=logs.append)
    assert chosen.strategy == "vmap_fwd"
    info = chosen.autotune
    assert info["chosen"] == "vmap_fwd" and info["cached"] is False
    assert info["run_steps_per_s"]["vmap"] == pytest.approx(100 / 0.010)
    assert info["run_steps_per_s"]["map"] == pytest.approx(100 / 0.006)
    assert info["run_steps_per_s"]["chunked(k=8)"] is None and "RESOURCE_EXHAUSTED" in info["errors"]["chunked(k=8)"]
    assert info["compile_s"]["vmap_fwd"] == pytest.approx(90.0)
    assert ("vmap", 0) in calls and ("vmap", 5) in calls
    assert any("chose vmap_fwd" in line for line in logs)
    with pytest.raises(RuntimeError, match="every strategy failed"):
        autotune([Runner("chunked")], lambda r, k: (_ for _ in ()).throw(MemoryError("no")), n_runs=4,
                 clock=lambda: 0.0, log=None)


def test_auto_measures_at_the_sweeps_shapes_and_a_second_run_reads_the_cache(tmp_path):
    """Forced on CPU (on an accelerator it is the default): real steps of each candidate, then the cache."""
    obj, opts, model, data, hp, keys, x = _setup("imdad", batch_norm=False, dropout=0.0)
    cache = AutotuneCache(tmp_path)
    logs = []
    first = fit(model, obj, opts, data, hp, keys, epochs=1, batch_size=20, autotune_runs=True, autotune_cache=cache,
                autotune_log=logs.append, devices=jax.devices()[:1])
    info = first.runner.autotune
    assert info["cached"] is False and set(info["run_steps_per_s"]) == {"vmap", "vmap_fwd", "map"}
    assert all(v > 0 for v in info["run_steps_per_s"].values())
    assert info["chosen"] == max(info["run_steps_per_s"], key=info["run_steps_per_s"].get)
    table = json.loads(cache.path.read_text())
    assert len(table) == 1 and next(iter(table.values()))["runner"]["strategy"] == first.runner.strategy
    # the measurement's trial steps do not touch the sweep: the same numbers as the chosen strategy forced
    forced = fit(model, obj, opts, data, hp, keys, epochs=1, batch_size=20, strategy=first.runner.strategy,
                 devices=jax.devices()[:1])
    _close(forced.state.params, first.state.params, atol=0)
    second = fit(model, obj, opts, data, hp, keys, epochs=1, batch_size=20, autotune_runs=True, autotune_cache=cache,
                 autotune_log=logs.append, devices=jax.devices()[:1])
    assert second.runner == first.runner and second.runner.autotune["cached"] is True
    assert any("cached" in line for line in logs)
    # another batch size is another program: measured again
    third = fit(model, obj, opts, data, hp, keys, epochs=1, batch_size=10, autotune_runs=True, autotune_cache=cache,
                autotune_log=None, devices=jax.devices()[:1])
    assert third.runner.autotune["cached"] is False and len(json.loads(cache.path.read_text())) == 2


def test_the_results_file_names_autos_measurement():
    from imdad_jax.io.results import _autotune_note
    assert _autotune_note(None) == ""
    note = _autotune_note({"chosen": "map", "run_steps_per_s": {"vmap": 1234.5, "map": 2345.6, "chunked(k=8)": None},
                           "steps": 5, "cached": False})
    assert note == " (auto chose map: run-steps/s vmap 1,234, map 2,346, chunked(k=8) failed; measured over 5 steps each)"
    assert "cached measurement" in _autotune_note({"chosen": "vmap", "run_steps_per_s": {"vmap": 1.0}, "cached": True})
