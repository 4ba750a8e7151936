#!/usr/bin/env python
"""Where does IMD-AD stop learning? Per run and epoch: the sphere, the representation, the hinges, the gradient.

    python experiments/trace_learning.py --dataset=bc --all_classes --lr=1e-3
    python experiments/trace_learning.py --dataset=fmnist --class=0 --preset=quick --every=1

Trains every run of the dataset (the paper's protocol: CV folds on tabular data) on its training data minus a
validation split (the same ``holdout`` as ``--tune``), keeping the state every ``--every`` epochs, and reads at
each snapshot, per run:

* the nu-property fractions on the training pools against their bounds (normals outside R^2 vs nu1 (1 + nu),
  labelled anomalies inside R^2 + rho^2 vs nu nu2), i.e. how many points each hinge still sees;
* R^2, rho^2, ||c||; the mean and spread of ||z|| and of d = ||z - c||^2 for training normals and anomalies;
* the encoder's gradient norm of the objective (the Lagrangian without weight decay) on a fixed batch of the
  run's training rows (up to 512 normals and all its labelled anomalies, the same rows at every epoch);
* validation and test AUC.

Writes ``OUT/<dataset>_<method>.json.gz`` (every number, per run and epoch, with the config and provenance) and
``OUT/<dataset>_<method>.png`` (median over runs, quartile band). Every config field is a flag, as in
``experiments/run.py`` (``--lr``, ``--nu1``, ``--center_constraint``, ...).
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imdad_jax.config import make_config  # noqa: E402
from imdad_jax.config_flags import add_config_flags, config_overrides, parse_ints  # noqa: E402

GRAD_NORMALS = 512  # training normals per run in the fixed gradient batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="bc")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--all_classes", action="store_true")
    g.add_argument("--class", dest="classes", type=parse_ints)
    p.add_argument("--seeds", type=parse_ints, default=(0,))
    p.add_argument("--method", default="imdad")
    p.add_argument("--preset", default="paper")
    p.add_argument("--every", type=int, default=5, help="epochs between snapshots (default 5)")
    p.add_argument("--val_share", type=float, default=0.25, help="training rows held out for the validation AUC")
    p.add_argument("--data_dir")
    p.add_argument("--out_dir", default=str(ROOT / "results" / "traces"))
    p.add_argument("--name", help="file stem (default <dataset>_<method>)")
    add_config_flags(p)
    return p.parse_args(argv)


def _rounded(obj):
    """Floats to 5 significant digits, for the file: the traces are read as curves, not to the last bit."""
    if isinstance(obj, float):
        return float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    return obj


def _stats(values: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Mean, std and quartiles per run of ragged per-run values."""
    return {"mean": np.array([v.mean() if len(v) else np.nan for v in values]),
            "std": np.array([v.std() if len(v) else np.nan for v in values]),
            "q25": np.array([np.quantile(v, 0.25) if len(v) else np.nan for v in values]),
            "q75": np.array([np.quantile(v, 0.75) if len(v) else np.nan for v in values])}


def trace(cfg, data, every: int, val_share: float) -> dict:
    """Train on each run's training data minus a validation split; the per-snapshot numbers of every run."""
    import jax
    import jax.numpy as jnp

    from imdad_jax.build import Split, build_model, make_split, objective_options
    from imdad_jax.evaluate import apply_runs, auc_per_run, nu_property
    from imdad_jax.experiment import fit_runs
    from imdad_jax.interpret import select_run
    from imdad_jax.tuning import holdout, validation_auc

    obj, opts = objective_options(cfg)
    split = make_split(cfg, data)
    ho = holdout(split.data, split.keys, val_share)
    train = ho.train
    snaps = tuple(sorted({0, *range(every, cfg.epochs, every), cfg.epochs}))
    t0 = time.perf_counter()
    _, res, _ = fit_runs(cfg, None, split=Split.training_only(train, split.keys), snapshot_epochs=snaps)
    train_s = time.perf_counter() - t0
    model = build_model(cfg, train.x.shape[1:])
    hp = {k: np.asarray(v) for k, v in res.state.hp.items()}
    n_runs = train.n_runs
    pool = lambda p, v: [p[r, :v[r]] for r in range(n_runs)]  # noqa: E731
    normals, anomalies = pool(train.normal_pool, train.n_valid), pool(train.anomaly_pool, train.m_valid)
    rng = np.random.default_rng(0)
    grad_rows = [np.r_[rng.permutation(n)[:GRAD_NORMALS], a] for n, a in zip(normals, anomalies)]
    grad_y = [np.r_[np.zeros(min(len(n), GRAD_NORMALS), np.int32), np.ones(len(a), np.int32)]
              for n, a in zip(normals, anomalies)]

    def encoder_grad_norm(params, obj_state, r):
        batch = {"x": jnp.asarray(train.x[grad_rows[r]]), "y": jnp.asarray(grad_y[r]),
                 "key": jax.random.PRNGKey(0), "epoch": jnp.asarray(cfg.epochs, jnp.int32)}
        h = {k: v[r] for k, v in hp.items()}
        g = jax.grad(lambda p: obj.loss(p, obj_state, model, batch, h, opts)[0])(params)
        return float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g["params"]["encoder"]))))

    def fractions(sn, sa, margin2):
        # the nu-property's fractions (evaluate.nu_property); NaN for a method without a radius (Deep SAD)
        if obj.signed_distance is None or "nu1" not in hp:
            return {"frac_normals_out": np.full(n_runs, np.nan), "frac_anomalies_in": np.full(n_runs, np.nan)}
        nu = nu_property(sn, sa, margin2, hp)
        return {k: nu[k] for k in ("frac_normals_out", "frac_anomalies_in")}

    embed = lambda p, x: model.apply(p[0], x, method="embed")  # noqa: E731
    signed = lambda p, x: obj.signed_distance(p[0], p[1], model, x, opts)  # noqa: E731
    score = lambda p, x: obj.score(p[0], p[1], model, x, opts)  # noqa: E731
    out: dict[str, list] = {}
    for e in snaps:
        params, obj_state = res.snapshots[e]
        geom = {k: np.asarray(v) for k, v in obj.geometry(params, obj_state, opts).items()}
        if obj.signed_distance is None:  # no radius to read distances against (Deep SAD): those numbers are NaN
            geom.setdefault("radius2", np.full(n_runs, np.nan))
            geom.setdefault("margin2", np.full(n_runs, np.nan))
        sd = signed if obj.signed_distance is not None else lambda p, x: np.nan * score(p, x)
        s_n = apply_runs(sd, (params, obj_state), train.x, train.normal_pool, strategy=res.runner)
        s_a = apply_runs(sd, (params, obj_state), train.x, train.anomaly_pool, strategy=res.runner)
        z_n = apply_runs(embed, (params, obj_state), train.x, train.normal_pool, strategy=res.runner)
        z_a = apply_runs(embed, (params, obj_state), train.x, train.anomaly_pool, strategy=res.runner)
        sn = [s_n[r, :train.n_valid[r]] for r in range(n_runs)]
        sa = [s_a[r, :train.m_valid[r]] for r in range(n_runs)]
        zn = [np.linalg.norm(z_n[r, :train.n_valid[r]], axis=-1) for r in range(n_runs)]
        za = [np.linalg.norm(z_a[r, :train.m_valid[r]], axis=-1) for r in range(n_runs)]
        row = {"epoch": e, **geom,
               **fractions(sn, sa, geom["margin2"]),
               "grad_norm_encoder": np.array([encoder_grad_norm(*select_run((params, obj_state), r), r)
                                              for r in range(n_runs)])}
        for name, vals in (("znorm_normals", zn), ("znorm_anomalies", za),
                           ("d_normals", [s + geom["radius2"][r] for r, s in enumerate(sn)]),
                           ("d_anomalies", [s + geom["radius2"][r] for r, s in enumerate(sa)])):
            for k, v in _stats(vals).items():
                row[f"{name}_{k}"] = v
        val = apply_runs(score, (params, obj_state), train.x, ho.val_idx, strategy=res.runner)
        row["val_auc"] = validation_auc(val, ho.val_valid, ho.val_is_anomaly)
        test = apply_runs(score, (params, obj_state), split.x_test, split.test_idx, strategy=res.runner)
        row["test_auc"] = auc_per_run(test, list(split.is_anomaly))
        for k, v in row.items():
            out.setdefault(k, []).append(np.asarray(v).tolist())
    bounds = {"bound_normals_out": (hp["nu1"] * (1 + hp["nu"])).tolist(), "bound_anomalies_in":
              (hp["nu"] * hp["nu2"]).tolist()} if "nu1" in hp else {}
    return {"per_epoch": out, **bounds, "runs": split.ids, "n_normals": train.n_valid.tolist(),
            "n_anomalies": train.m_valid.tolist(), "train_s": train_s, "strategy": res.runner.name}


def plot(tr: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pe = tr["per_epoch"]
    ep = np.asarray(pe["epoch"])
    panels = [("fractions vs bounds", [("frac_normals_out", "normals out"), ("frac_anomalies_in", "anomalies in")]),
              ("sphere", [("radius2", "R²"), ("margin2", "ρ²"), ("center_norm", "‖c‖")]),
              ("‖z‖ (mean)", [("znorm_normals_mean", "normals"), ("znorm_anomalies_mean", "anomalies")]),
              ("d = ‖z−c‖² (mean)", [("d_normals_mean", "normals"), ("d_anomalies_mean", "anomalies")]),
              ("encoder gradient norm", [("grad_norm_encoder", "‖∇_enc L‖")]),
              ("AUC", [("val_auc", "validation"), ("test_auc", "test")])]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (name, series) in zip(axes.ravel(), panels):
        for key, label in series:
            v = np.asarray(pe[key], float)  # (E, R)
            med = np.nanmedian(v, axis=1)
            ax.plot(ep, med, label=label)
            ax.fill_between(ep, np.nanquantile(v, 0.25, axis=1), np.nanquantile(v, 0.75, axis=1), alpha=0.2)
        if name == "fractions vs bounds" and "bound_normals_out" in tr:
            ax.axhline(np.median(tr["bound_normals_out"]), ls="--", c="C0", lw=0.8, label="bound normals")
            ax.axhline(np.median(tr["bound_anomalies_in"]), ls="--", c="C1", lw=0.8, label="bound anomalies")
        if name == "encoder gradient norm":
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from imdad_jax.data import load_dataset
    from imdad_jax.io import provenance
    from imdad_jax.pipeline import prepare_host

    data = load_dataset(a.dataset, a.data_dir)
    classes = tuple(range(len(data.class_names))) if a.all_classes else a.classes
    cfg = make_config(a.preset, **config_overrides(a), dataset=a.dataset, method=a.method, classes=classes,
                      seeds=a.seeds)
    prepare_host()
    t0 = time.perf_counter()
    tr = trace(cfg, data, a.every, a.val_share)
    stem = a.name or f"{a.dataset}_{a.method}"
    out = Path(a.out_dir)
    tr.update(config=cfg.to_dict(), provenance=provenance(["python", "experiments/trace_learning.py",
                                                           *(argv if argv is not None else sys.argv[1:])]),
              wall_s=time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    # gzipped, 5 significant digits: every run's numbers at every snapshot (a 50-run trace is ~1 MB as plain JSON)
    tmp = out / f".{stem}.json.gz.tmp"
    with gzip.open(tmp, "wt") as f:
        f.write(json.dumps(_rounded(tr), indent=None, default=str) + "\n")
    tmp.replace(out / f"{stem}.json.gz")
    pe = tr["per_epoch"]
    solver = cfg.options.get("solver", "paper") if a.method == "imdad" else "-"
    png = plot(tr, out / f"{stem}.png", f"{a.dataset} {a.method} ({solver}), lr {cfg.lr}, {cfg.epochs} epochs, "
                                       f"{len(tr['runs'])} runs (median, quartiles)")
    last = {k: float(np.nanmedian(pe[k][-1])) for k in ("frac_normals_out", "frac_anomalies_in", "radius2",
                                                         "margin2", "grad_norm_encoder", "val_auc", "test_auc")}
    print(f"{stem}: last epoch medians " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"wrote {out / (stem + '.json.gz')} and {png} ({tr['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
