"""The statistics agree with scipy / scikit-posthocs and known values on a small example."""
import numpy as np
import pytest
from scipy import stats

from imdad_jax.evaluate.stats import auc_matrix, average_ranks, compare, critical_difference, significance_table

# A seeded AUC-like matrix: 14 blocks x 4 methods, the last one better on average.
DATA = np.clip(np.random.default_rng(0).normal([.80, .82, .81, .86], .04, (14, 4)), 0, 1)


def test_average_ranks_by_hand_with_ties():
    m = np.array([[.9, .8, .7], [.8, .9, .7], [.9, .7, .8], [.9, .9, .7]])
    # ranks per row: (1,2,3) (2,1,3) (1,3,2) (1.5,1.5,3)
    np.testing.assert_allclose(average_ranks(m), [5.5 / 4, 7.5 / 4, 11 / 4])


def test_critical_difference_matches_demsar():
    # Demsar (2006), Table 5(a): q_0.05 = 2.569 for k = 4 classifiers; CD = q sqrt(k (k + 1) / (6 N))
    assert critical_difference(4, 14) == pytest.approx(2.569 * np.sqrt(20 / 84), abs=2e-3)


def test_compare_agrees_with_scipy_and_scikit_posthocs():
    import scikit_posthocs as sp

    methods = ["c45", "c45m", "c45cf", "imdad"]
    c = compare(DATA, methods, reference="imdad")
    fr = stats.friedmanchisquare(*DATA.T)
    assert c.friedman_statistic == pytest.approx(fr.statistic) and c.friedman_p == pytest.approx(fr.pvalue)
    np.testing.assert_allclose(c.nemenyi_p, sp.posthoc_nemenyi_friedman(DATA).to_numpy())
    raw = {m: stats.wilcoxon(DATA[:, 3], DATA[:, j]).pvalue for j, m in enumerate(methods[:3])}
    order = sorted(raw, key=raw.get)
    # Holm: the smallest p times 3, then max with the next times 2, ...
    assert c.wilcoxon_p[order[0]] == pytest.approx(min(1, 3 * raw[order[0]]))
    assert c.wilcoxon_p[order[1]] == pytest.approx(max(c.wilcoxon_p[order[0]], min(1, 2 * raw[order[1]])))
    assert "| imdad |" in significance_table(c)


def test_auc_matrix_keeps_shared_blocks_and_rejects_too_few():
    m, methods, blocks = auc_matrix({"a": {("d", 0): .9, ("d", 1): .8}, "b": {("d", 0): .7}})
    assert m.tolist() == [[.9, .7]] and methods == ["a", "b"] and blocks == [("d", 0)]
    with pytest.raises(ValueError, match=">= 2 methods"):
        auc_matrix({"a": {("d", 0): .9}})
    with pytest.raises(ValueError, match=">= 3 methods"):
        compare(np.ones((4, 2)), ["a", "b"], reference="a")


def test_stats_cli_writes_table_and_cd_png(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import stats as stats_cli

    rng = np.random.default_rng(1)
    runs = {m: [{"normal_class": k, "seed": 0, "auc": float(v), "diverged": False}
                for k, v in enumerate(np.clip(rng.normal(mu, .02, 10), 0, 1))]
            for m, mu in (("imdad", .95), ("deep_svdd", .85), ("ocsvm", .90))}
    f = tmp_path / "toy_methods_x.json"
    f.write_text(json.dumps({"methods": runs}))
    assert stats_cli.main([str(f), f"--out={tmp_path / 's'}"]) == 0
    md = (tmp_path / "s.md").read_text()
    assert "Friedman" in md and "| imdad | 1.00 |" in md
    assert (tmp_path / "s_cd.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    assert stats_cli.main([str(bad), f"--out={tmp_path / 't'}"]) == 2


def test_report_puts_ours_beside_the_paper(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import report

    runs = [{"normal_class": k, "seed": 0, "fold": f, "auc": 0.9 + 0.01 * k, "diverged": False}
            for k in (0, 1) for f in range(5)]
    rec = {"config": {"method": "imdad", "dataset": "bc", "epochs": 200, "lr": 1e-3, "batch_size": 50,
                      "seeds": [0], "n_folds": 5},
           "provenance": {"command": "python experiments/run.py --dataset=bc", "git_commit": "abc", "devices": "cpu"},
           "runs": runs, "timing": {"total_s": 12.0}}
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "bc_imdad_paper_e200.json").write_text(json.dumps(rec))
    out = tmp_path / "rep.md"
    assert report.main([f"--results={tmp_path / 'res'}", f"--out={out}"]) == 0
    md = out.read_text()
    assert "| 0 | 90.00 ± 0.00 | 96.12 | -6.12 |" in md and "97.67" in md  # paper and Deep SAD bar beside ours
    assert report.main([f"--results={tmp_path / 'res'}", f"--out={out}", "--method=drocc"]) == 2
