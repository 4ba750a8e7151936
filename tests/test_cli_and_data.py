import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import run as cli  # noqa: E402
from imdad_jax.config import ConfigError, make_config  # noqa: E402
from imdad_jax.data import DataFileError, DataNotFoundError, load_fashion_mnist, read_idx  # noqa: E402
from imdad_jax.data import fashion_mnist as fm  # noqa: E402
from imdad_jax.data.idx import write_idx  # noqa: E402
from imdad_jax.io import load_history  # noqa: E402
from imdad_jax.train import plan_batches  # noqa: E402


def test_cli_end_to_end_writes_results(fake_fmnist_dir, tmp_path):
    rc = cli.main(["--dataset=fmnist", "--class=0,3", "--preset=tiny", "--epochs=2", f"--data_dir={fake_fmnist_dir}",
                   f"--out_dir={tmp_path}", "--name=t", "--no_progress", "--estimate=yes"])
    assert rc == 0
    rec = json.loads((tmp_path / "t.json").read_text())
    assert [r["normal_class"] for r in rec["runs"]] == [0, 3]
    assert all(0.5 < r["auc"] <= 1.0 for r in rec["runs"])  # separable fixture: better than chance after 2 epochs
    assert rec["config"]["epochs"] == 2 and rec["provenance"]["versions"]["jax"]
    # the per-epoch history sits beside the JSON, gzipped (results/README.md); the JSON names it
    assert "history" not in rec and rec["history_file"] == "t.history.json.gz"
    assert len(load_history(tmp_path / "t.json")["loss"]) == 2
    md = (tmp_path / "t.md").read_text()
    assert "| 0 | T-shirt/top |" in md and "96.37" in md and "command:" in md


def test_cli_tabular_runs_every_class_fold_as_one_program(tmp_path):
    """Synthetic two moons (shipped generator, no files): 2 classes x 5 folds = 10 runs, each on its own fold."""
    rc = cli.main(["--dataset=moons", "--all_classes", "--preset=tiny", "--epochs=3", "--method=imdad,ocsvm",
                   f"--out_dir={tmp_path}", "--name=m", "--no_progress", "--estimate=no"])
    assert rc == 0
    rec = json.loads((tmp_path / "m_imdad.json").read_text())
    assert sorted((r["normal_class"], r["fold"]) for r in rec["runs"]) == [(k, f) for k in (0, 1) for f in range(5)]
    assert rec["config"]["arch"] == "fc3" and rec["config"]["batch_size"] == 32  # tiny preset over tabular defaults
    shallow = json.loads((tmp_path / "m_ocsvm.json").read_text())["runs"]
    assert len(shallow) == 10 and all(0.5 < r["auc"] <= 1 for r in shallow)


def test_cli_several_methods_write_one_table_and_the_ablation(fake_fmnist_dir, tmp_path):
    # Every method's own behaviour is tested in test_objectives / test_shallow; here the CLI's
    # multi-method path, on the ablation chain plus a shallow method (all methods take minutes).
    assert cli.parse_methods("all") == cli.METHODS and cli.parse_methods("ablation") == cli.ABLATION
    methods = [*cli.ABLATION, "sslm"]
    rc = cli.main(["--class=1", "--preset=tiny", "--epochs=1", f"--method={','.join(methods)}",
                   "--shallow_max_train=100", "--shallow_pca_dims=8", f"--data_dir={fake_fmnist_dir}",
                   f"--out_dir={tmp_path}", "--name=t", "--no_progress", "--estimate=no"])
    assert rc == 0
    rec = json.loads((tmp_path / "t_methods.json").read_text())
    assert list(rec["methods"]) == methods
    for method, runs in rec["methods"].items():
        assert [r["normal_class"] for r in runs] == [1], method
        assert runs[0]["auc"] is not None and 0 <= runs[0]["auc"] <= 1, method
    md = (tmp_path / "t_methods.md").read_text()
    assert "imdad (paper)" in md and "99.62" in md  # the paper's Table II column beside ours
    abl = (tmp_path / "t_ablation.md").read_text()
    assert "deep_svdd_soft" in abl and "mdad" in abl and "ranks 4, 3, 2, 1" in abl
    assert json.loads((tmp_path / "t_sslm.json").read_text())["runs"][0]["params"]["nu"] > 0


@pytest.mark.parametrize("args,needle", [
    (["--dataset=cifar", "--class=0"], "unknown dataset"),
    (["--class=12"], "unknown class"),
    (["--class=0", "--nu=1.5"], "nu must lie in (0, 1]"),
    (["--class=0", "--nu1=0"], "nu1 must lie in (0, 1]"),
    (["--class=0", "--epochs=0"], "epochs must be >= 1"),
    (["--class=0", "--batch_size=1"], "batch_size must be >= 2"),
    ([], "no normal class given"),
    (["--class=0", "--preset=huge"], "unknown preset"),
    (["--class=0", "--method=svm"], "unknown method"),
    (["--class=0", "--method=deep_sad", "--eta=0"], "eta must be > 0"),
    (["--class=0", "--method=drocc", "--drocc_gamma=0.5"], "drocc_gamma must be >= 1"),
])
def test_bad_input_gives_one_clear_error(args, needle, fake_fmnist_dir, tmp_path, capsys):
    rc = cli.main([*args, f"--data_dir={fake_fmnist_dir}", f"--out_dir={tmp_path}", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and err.startswith("error:") and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_missing_data_dir_is_an_error(tmp_path, capsys):
    rc = cli.main(["--class=0", f"--data_dir={tmp_path / 'nope'}"])
    assert rc == 2 and "lacks the Fashion-MNIST files" in capsys.readouterr().err


def test_no_data_anywhere_names_every_way_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(fm, "USER_DIR", tmp_path / "absent")
    monkeypatch.setattr(fm, "_debian_dir", lambda: None)
    monkeypatch.setattr(fm, "_load_tfds", lambda: None)
    with pytest.raises(DataNotFoundError) as e:
        load_fashion_mnist(None, None)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and fm.ENV_VAR in msg and "tensorflow-datasets" in msg


def test_env_dir_is_searched(fake_fmnist_dir, monkeypatch):
    monkeypatch.setattr(fm, "_debian_dir", lambda: None)
    ds = load_fashion_mnist(None, str(fake_fmnist_dir))
    assert ds.x_train.shape == (300, 28, 28, 1) and ds.source.startswith("$" + fm.ENV_VAR)


def test_idx_roundtrip_and_truncated_file(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    write_idx(tmp_path / "b", a)
    raw = (tmp_path / "b").read_bytes()
    (tmp_path / "b").write_bytes(raw[:-5])
    with pytest.raises(DataFileError, match="truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"hello world")
    with pytest.raises(DataFileError, match="not an IDX"):
        read_idx(tmp_path / "c")


def test_stratified_batches_hold_both_groups():
    plan = plan_batches(6000, 5400, 150)
    assert plan.steps == 76 and plan.n_per_batch + plan.a_per_batch == 150
    assert plan.n_per_batch >= 1 and plan.a_per_batch >= 1
    tiny = plan_batches(1000, 5, 150)
    assert tiny.a_per_batch >= 1
    normals_only = plan_batches(10, 0, 4)  # methods trained on normals alone
    assert normals_only == (3, 4, 0)
    with pytest.raises(ValueError, match="normals"):
        plan_batches(0, 5, 150)


def test_config_validation_and_milestones():
    cfg = make_config("paper", classes=(0,))
    assert cfg.milestones == (100, 150) and cfg.lr == 1e-4 and cfg.batch_size == 150 and cfg.epochs == 200
    with pytest.raises(ConfigError, match="center_constraint"):
        make_config("paper", center_constraint="nope")


def test_cli_cifar10_and_mnist_from_fixture_files(tmp_path):
    """The same CLI on CIFAR-10 (CNN3, 32x32x3) and MNIST, from small files in their standard formats."""
    from imdad_jax.data.cifar10 import write_cifar10_fixture
    from imdad_jax.data.mnist import write_mnist_fixture

    write_cifar10_fixture(tmp_path / "c10", n_train_per_class=12, n_test_per_class=4)
    rc = cli.main(["--dataset=cifar10", "--class=2", "--preset=tiny", "--epochs=1", f"--data_dir={tmp_path / 'c10'}",
                   f"--out_dir={tmp_path}", "--name=c", "--no_progress", "--estimate=no"])
    assert rc == 0
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["config"]["arch"] == "cnn3" and rec["runs"][0]["normal_class"] == 2
    assert rec["runs"][0]["n_normals"] == 12 and rec["runs"][0]["auc"] is not None
    assert "74.27" in (tmp_path / "c.md").read_text()  # the paper's CIFAR-10 class 2 beside ours
    write_mnist_fixture(tmp_path / "mn", n_train_per_class=10, n_test_per_class=3)
    rc = cli.main(["--dataset=mnist", "--class=0", "--preset=tiny", "--epochs=1", f"--data_dir={tmp_path / 'mn'}",
                   f"--out_dir={tmp_path}", "--name=mn", "--no_progress", "--estimate=no"])
    assert rc == 0 and json.loads((tmp_path / "mn.json").read_text())["config"]["arch"] == "cnn2"


def test_cli_several_datasets_skip_the_absent_ones(tmp_path, capsys, monkeypatch):
    from imdad_jax.data import cifar10

    monkeypatch.setattr(cifar10, "_load_tfds", lambda: None)
    rc = cli.main(["--dataset=moons,cifar10", "--class=0", "--preset=tiny", "--epochs=1", "--n_folds=2",
                   f"--out_dir={tmp_path}", "--no_progress", "--estimate=no"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "skipping cifar10" in out.err and "moons done" in out.out and "cifar10 skipped (no data)" in out.out
    assert (tmp_path / "moons_imdad_tiny_e1.json").exists()
    assert cli.main(["--dataset=moons,nope", "--class=0"]) == 2


def test_cli_tune_chooses_on_validation_and_says_so(tmp_path):
    rc = cli.main(["--dataset=spiral", "--class=1", "--preset=tiny", "--epochs=2", "--n_folds=2", "--method=deep_sad",
                   "--tune=lr=1e-3,1e-2;eta=0.5,1", "--anomaly_share=0.5", f"--out_dir={tmp_path}", "--name=tu",
                   "--no_progress", "--estimate=no"])
    assert rc == 0
    rec = json.loads((tmp_path / "tu.json").read_text())
    assert len(rec["tuning"]["points"]) == 4 and all(set(r["tuned"]) == {"lr", "eta"} for r in rec["runs"])
    assert rec["batch_plan"]["a_per_batch"] == 16  # half of the tiny preset's 32
    md = (tmp_path / "tu.md").read_text()
    assert "tuned per run on a validation split" in md and "batch share 0.5" in md
    assert cli.main(["--dataset=spiral", "--class=1", "--tune=epochs=1,2"]) == 2


def test_errors_that_surface_inside_a_run_are_one_line_and_exit_2(tmp_path, capsys):
    # settings that only fail once the runs are built: folds larger than a class, a tuning split without
    # anomalies, a resume under other settings; each one error line, exit 2, earlier results kept
    base = ["--dataset=moons", "--class=0", "--preset=tiny", "--epochs=1", "--no_progress", "--estimate=no",
            f"--out_dir={tmp_path}"]
    assert cli.main([*base, "--n_folds=1000"]) == 2
    assert "n_folds" in capsys.readouterr().err
    assert cli.main([*base, "--n_folds=2", "--tune=lr=1e-3,1e-2", "--anomaly_fraction=0.001"]) == 2
    assert "fewer than 2 labelled anomalies" in capsys.readouterr().err
    assert cli.main([*base, "--n_folds=2", "--checkpoint_every=1"]) == 0
    (tmp_path / "checkpoints" / "moons_imdad_tiny_e1" / "COMPLETE").unlink()  # as if it had been interrupted
    capsys.readouterr()
    assert cli.main([*base, "--n_folds=2", "--checkpoint_every=1", "--resume", "--lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "config.lr: saved 0.0001, now 0.5" in err and err.count("\n") == 1


def test_the_dataset_table_lives_in_the_library(fake_fmnist_dir):
    from imdad_jax.data import TabularDataset, load_dataset
    assert isinstance(load_dataset("moons"), TabularDataset) and isinstance(load_dataset("bc"), TabularDataset)
    assert load_dataset("fmnist", str(fake_fmnist_dir)).x_train.shape[1:] == (28, 28, 1)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; choose from mnist, fmnist, cifar10, bc"):
        load_dataset("svhn")
    assert cli.load_dataset is load_dataset  # the CLI loads through the same table
