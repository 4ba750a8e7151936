"""Per-epoch snapshots in the engine and the one-command figures CLI."""
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import figures as figcli  # noqa: E402
from imdad_jax.config import make_config  # noqa: E402
from imdad_jax.data import load_synthetic  # noqa: E402
from imdad_jax.experiment import build_model, fit_runs  # noqa: E402
from imdad_jax.interpret import snapshot_metrics  # noqa: E402


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_snapshots_are_the_state_at_those_epochs(strategy):
    ds = load_synthetic("moons")
    cfg = make_config("tiny", dataset="moons", classes=(0,), seeds=(0,), n_folds=2, epochs=3, strategy=strategy)
    split, res, (obj, opts) = fit_runs(cfg, ds, snapshot_epochs=(0, 2, 3))
    assert sorted(res.snapshots) == [0, 2, 3]
    last = jax.tree.leaves(res.snapshots[3][0])
    for a, b in zip(last, jax.tree.leaves(res.state.params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    w0 = res.snapshots[0][0]["params"]["encoder"]["dense0"]["kernel"]
    assert w0.shape[0] == 2 and not np.allclose(w0, res.snapshots[3][0]["params"]["encoder"]["dense0"]["kernel"])
    model = build_model(cfg, split.data.x.shape[1:])
    m = snapshot_metrics(lambda p, x: obj.score(p[0], p[1], model, x, opts), res.snapshots, data=split.data,
                         x_test=split.x_test, test_idx=split.test_idx, test_labels=split.is_anomaly)
    assert m["epoch"].tolist() == [0, 2, 3] and m["test_auc"].shape == (3, 2)
    assert np.all((m["train_acc"] >= 0) & (m["train_acc"] <= 1))
    with pytest.raises(ValueError, match="snapshot_epochs"):
        fit_runs(cfg, ds, snapshot_epochs=(4,))


def test_figures_cli_writes_every_figure(tmp_path):
    rc = figcli.main(["--dataset=moons", "--class=1", "--preset=tiny", "--epochs=2", "--rep_dim=2",
                      "--snapshots=0,2", "--nu_sweep=nu1=0.05,0.2", f"--out_dir={tmp_path}"])
    assert rc == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"curves.png", "density_epoch0.png", "density_epoch2.png", "representation_epoch0.png",
            "representation_epoch2.png", "roc.png", "tsne.png", "thresholds.png", "nu_property.png",
            "figures.json"} <= names
    assert all((tmp_path / n).stat().st_size > 1000 for n in names if n.endswith(".png"))
    rec = json.loads((tmp_path / "figures.json").read_text())
    assert rec["snapshot_epochs"] == [0, 2] and len(rec["nu_sweep"]["nu1"]) == 2
    assert np.isfinite(rec["metrics"]["test_loss"]).all() and len(rec["metrics"]["train_loss"]) == 2
    assert set(rec["thresholds"]) >= {"boundary", "gaussian", "zscore", "mahalanobis"}


def test_figures_cli_gradcam_on_images(fake_fmnist_dir, tmp_path):
    rc = figcli.main(["--dataset=fmnist", "--class=0", "--preset=tiny", "--epochs=1", "--snapshots=0,1",
                      f"--data_dir={fake_fmnist_dir}", f"--out_dir={tmp_path}"])
    assert rc == 0 and (tmp_path / "gradcam.png").stat().st_size > 1000


def test_figures_cli_bad_input(tmp_path, capsys):
    assert figcli.main(["--dataset=moons", "--class=5", f"--out_dir={tmp_path}"]) == 2
    assert "class 5 does not exist" in capsys.readouterr().err
    assert figcli.main(["--dataset=moons", "--epochs=3", "--snapshots=0,9", f"--out_dir={tmp_path}"]) == 2
