"""The ablation runner: every (method, option) group trains, the deltas are the runs' own AUC
differences, an interrupted sweep keeps its finished groups, bad options are refused."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import ablation as cli  # noqa: E402

from imdad_jax.ablation import OPTIONS, SIMULATED_BONUS, deltas, option_config, subsample  # noqa: E402
from imdad_jax.config import make_config  # noqa: E402
from imdad_jax.data import load_fashion_mnist  # noqa: E402

ARGS = ["--dataset=fmnist", "--options=batch_norm", "--methods=imdad,deep_svdd", "--classes=0,1",
        "--seeds=0,1", "--preset=tiny", "--epochs=1", "--train_per_class=20", "--test_per_class=8"]


def test_ablation_command_writes_real_deltas_and_resumes(fake_fmnist_dir, tmp_path, capsys):
    argv = [*ARGS, f"--data_dir={fake_fmnist_dir}", f"--out={tmp_path}"]
    assert cli.main(argv) == 0
    rec = json.loads((tmp_path / "fmnist_ablation.json").read_text())
    assert not rec["partial"] and sorted(rec["groups"]) == sorted(
        f"{m}/{o}" for m in ("imdad", "deep_svdd") for o in ("baseline", "batch_norm"))
    for key, group in rec["groups"].items():
        assert len(group["runs"]) == 4, key  # 2 classes x 2 seeds, one program
        method, option = key.split("/")
        assert group["config"]["method"] == method
        if option != "baseline":
            assert all(group["config"][k] == v for k, v in OPTIONS[option].items())
    # the table's numbers are the runs' own differences, recomputed here by hand
    row = next(r for r in rec["rows"] if r["option"] == "batch_norm")
    base = {(r["normal_class"], r["seed"]): r["auc"] for r in rec["groups"]["imdad/baseline"]["runs"]}
    opt = {(r["normal_class"], r["seed"]): r["auc"] for r in rec["groups"]["imdad/batch_norm"]["runs"]}
    per_seed = [np.mean([opt[(c, s)] - base[(c, s)] for c in (0, 1)]) for s in (0, 1)]
    assert row["imdad"]["per_seed"] == pytest.approx(per_seed)
    assert row["imdad"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["simulated_bonus"] == SIMULATED_BONUS["batch_norm"]
    md = (tmp_path / "fmnist_ablation.md").read_text()
    assert "`batch_norm`" in md and "+0.5" in md and "commit" in md
    combined = (tmp_path / "ablation.md").read_text()  # every finished dataset in one table
    assert f"| `batch_norm` | fmnist | {100 * row['imdad']['mean']:+.2f} ± {100 * row['imdad']['std']:.2f} |" in combined
    # a second call with the same settings trains nothing: every group is already there
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert ": mean AUC" not in capsys.readouterr().out


def test_unknown_option_is_refused(tmp_path, capsys):
    assert cli.main(["--options=batchnorm", f"--out={tmp_path}"]) == 2
    assert "batchnorm" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown ablation option"):
        option_config(make_config("tiny"), "imdad", "attention")


def test_subsample_is_stratified_and_deltas_refuse_mismatched_runs(fake_fmnist_dir):
    ds = load_fashion_mnist(str(fake_fmnist_dir))
    sub = subsample(ds, 5, 3, seed=1)
    assert np.bincount(sub.y_train).tolist() == [5] * 10 and np.bincount(sub.y_test).tolist() == [3] * 10
    assert np.array_equal(subsample(ds, 5, 3, seed=1).x_train, sub.x_train)
    runs = lambda seeds: [{"normal_class": 0, "seed": s, "auc": 0.5} for s in seeds]  # noqa: E731
    with pytest.raises(ValueError, match="different runs"):
        deltas({"imdad/baseline": {"runs": runs((0, 1))}, "imdad/zca": {"runs": runs((0, 2))}}, "imdad", "zca")


def test_resume_keeps_groups_across_numerics_only_fields_and_later_fields():
    from imdad_jax.ablation import same_config
    stored = make_config("tiny", conv_impl="xla").to_dict()
    stored = {k: (list(v) if isinstance(v, tuple) else v) for k, v in stored.items()}  # as read back from JSON
    later = {**make_config("tiny").to_dict(), "a_later_field": 1}
    assert same_config(stored, later)
    assert not same_config(stored, make_config("tiny", batch_norm=True).to_dict())
    assert not same_config({**stored, "a_removed_field": 0}, later)
