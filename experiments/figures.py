#!/usr/bin/env python
"""Every interpretability figure of one normal class, from one command (paper Figs. 3-8).

    python experiments/figures.py --dataset=moons --class=0 --rep_dim=2            # Figs. 3/5 circles, 4, 8, ...
    python experiments/figures.py --dataset=fmnist --class=0 --preset=quick         # + Grad-CAM (Fig. 6)
    python experiments/figures.py --dataset=spiral --class=0 --nu_sweep='nu1=0.05,0.1,0.2;nu2=0.05,0.1,0.2'

Trains the method's runs of that class (one seed; every fold on CV datasets, figures from the first), keeping
copies of the state at a few epochs, then writes PNGs and a ``figures.json`` with the numbers behind them into
``--out_dir`` (default ``results/figures/<dataset>_class<k>``):
training curves (loss, R^2, rho^2 per epoch; train/test AUC and boundary accuracy at the snapshot epochs),
squared-distance densities at the first and last snapshot, the 2-D representation with its circles at every
snapshot (rep_dim 2), ROC, t-SNE of the representation, the decision thresholds' precision/recall/F1/accuracy,
Grad-CAM (convolutional encoders) and, with ``--nu_sweep``, the nu-property against its bounds over a grid
trained as one run-axis sweep. A thin shell over ``imdad_jax.interpret`` and ``imdad_jax.plots``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imdad_jax.config import ConfigError, make_config  # noqa: E402
from imdad_jax.data.fashion_mnist import DataNotFoundError  # noqa: E402
from imdad_jax.data.idx import DataFileError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="moons")
    p.add_argument("--class", dest="normal_class", type=int, default=0)
    p.add_argument("--method", default="imdad", help="a deep method with a sphere (imdad, mdad, dad, deep_sad, ...)")
    p.add_argument("--preset", default="paper")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rep_dim", type=int, help="width of the representation (2 gives the circle figures)")
    p.add_argument("--snapshots", help="completed epochs to keep, e.g. 0,1,10,200 (default: 0, 1, 1/4, 1/2, all)")
    p.add_argument("--nu_sweep", help="grid for the nu-property figure, e.g. 'nu1=0.05,0.1,0.2;nu2=0.05,0.1'")
    p.add_argument("--data_dir")
    p.add_argument("--out_dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from imdad_jax.data.registry import load_dataset

    try:
        over = {"dataset": a.dataset, "classes": (a.normal_class,), "seeds": (a.seed,), "method": a.method}
        over.update({k: v for k, v in (("epochs", a.epochs), ("lr", a.lr)) if v is not None})
        cfg = make_config(a.preset, **over)
        if a.rep_dim:
            cfg.dense_features = (*cfg.dense_features[:-1], a.rep_dim)
        data = load_dataset(cfg.dataset, a.data_dir)
        if not 0 <= a.normal_class < len(data.class_names):
            raise ConfigError(f"class {a.normal_class} does not exist; {cfg.dataset} has classes "
                              f"0..{len(data.class_names) - 1}")
        snaps = (sorted({int(s) for s in a.snapshots.split(",")}) if a.snapshots else
                 sorted({0, 1, cfg.epochs // 4, cfg.epochs // 2, cfg.epochs}))
        if any(not 0 <= s <= cfg.epochs for s in snaps):
            raise ConfigError(f"--snapshots must lie in 0..{cfg.epochs}, got {snaps}")
        grid = None
        if a.nu_sweep:
            from imdad_jax.tuning import parse_grid
            grid = parse_grid(a.nu_sweep)
    except (ConfigError, DataNotFoundError, DataFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out_dir or ROOT / "results" / "figures" / f"{cfg.dataset}_class{a.normal_class}")
    written = make_figures(cfg, data, snaps, out, grid)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def make_figures(cfg, data, snaps: list[int], out: Path, grid=None) -> list[Path]:
    """Train, then every figure; returns the files written."""
    import jax

    from imdad_jax.pipeline import prepare_host

    prepare_host()

    from imdad_jax import interpret as ix
    from imdad_jax import plots
    from imdad_jax.build import build_model, make_split
    from imdad_jax.experiment import fit_runs
    from imdad_jax.io import atomic_write, provenance
    from imdad_jax.models.encoders import CNNEncoder

    split = make_split(cfg, data)
    split, res, (obj, opts) = fit_runs(cfg, data, split=split, snapshot_epochs=snaps)
    model = build_model(cfg, split.data.x.shape[1:])
    score = lambda p, x: obj.score(p[0], p[1], model, x, opts)  # noqa: E731
    hp = res.state.hp

    def loss(r, st, x, y):  # the objective's value on labelled rows (all test anomalies count as labelled)
        batch = {"x": x, "y": y.astype(np.int32), "key": jax.random.PRNGKey(0), "epoch": 0}
        return obj.loss(st[0], st[1], model, batch, {k: v[r] for k, v in hp.items()}, opts)[1]["loss"]

    metrics = ix.snapshot_metrics(score, res.snapshots, data=split.data, x_test=split.x_test,
                                  test_idx=split.test_idx, test_labels=split.is_anomaly, strategy=res.runner,
                                  loss_fn=loss)
    name = f"{cfg.dataset} class {cfg.classes[0]} ({data.class_names[cfg.classes[0]]}), {cfg.method}"
    files = [plots.training_curves_plot(res.history, metrics, out / "curves.png", title=name)]

    r = 0  # the first run: fold 0 on CV datasets
    first, last = min(res.snapshots), max(res.snapshots)
    pool = lambda p, v: split.data.x[p[r, :v[r]]]  # noqa: E731
    x_n, x_a = pool(split.data.normal_pool, split.data.n_valid), pool(split.data.anomaly_pool, split.data.m_valid)
    x_test, lab_test = split.test_rows(r), split.is_anomaly[r]
    record = {"name": name, "snapshot_epochs": sorted(res.snapshots),
              "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()}}
    geometry = obj.geometry
    for e in sorted({first, last}):
        params_e, state_e = ix.select_run(res.snapshots[e], r)
        g = geometry(params_e, state_e, opts) if geometry else {}
        dens = ix.distance_density(ix.squared_distance(params_e, model, x_n), ix.squared_distance(params_e, model, x_a),
                                   float(g.get("radius2", np.nan)), float(g.get("margin2", 0.0)))
        files.append(plots.density_plot(dens, out / f"density_epoch{e}.png",
                                        title=f"{name}: training d² after {e} epochs"))
    z_dim = cfg.dense_features[-1]
    if z_dim == 2:
        margin_param = getattr(opts, "margin_param", "softplus")
        for e in sorted(res.snapshots):
            params_e, state_e = ix.select_run(res.snapshots[e], r)
            z = ix.representation_2d(params_e, model, x_test)
            circ = ix.circles_2d(params_e, margin_param)
            sg = (ix.input_score_grid(lambda x, p=params_e, s=state_e: obj.score(p, s, model, x, opts), x_test)
                  if x_test.shape[1:] == (2,) else None)
            files.append(plots.circles_plot(circ, z, out / f"representation_epoch{e}.png", labels=lab_test,
                                            x=x_test, score_grid=sg, title=f"{name}: after {e} epochs"))
    params, state = ix.select_run((res.state.params, res.state.obj_state), r)
    s_test = ix.score_on(params, model, x_test, lambda p, x: obj.score(p, state, model, x, opts))
    s_train_n = ix.score_on(params, model, x_n, lambda p, x: obj.score(p, state, model, x, opts))
    curves = ix.roc_curves(s_test, lab_test)
    files.append(plots.roc_plot(curves, out / "roc.png", names=[name], title="ROC (test)"))
    embed = lambda x: np.asarray(jax.jit(lambda p, xx: model.apply(p, xx, method="embed"))(params, x))  # noqa: E731
    sub = np.random.default_rng(0).permutation(len(x_test))[:1000]
    z_test, z_train = embed(x_test[sub]), embed(x_n)
    files.append(plots.tsne_plot(ix.tsne_embedding(z_test, seed=0), out / "tsne.png", labels=lab_test[sub],
                                 title=f"{name}: t-SNE of z (test)"))
    decisions = ix.all_thresholds(s_test[sub], s_train_n, lab_test[sub], z=z_test, z_train_normals=z_train)
    table = ix.metrics_table(decisions)
    record["thresholds"] = table
    files.append(plots.threshold_metrics_plot(table, out / "thresholds.png", title=f"{name}: test, 1000 rows"))
    if isinstance(getattr(model, "encoder", None), CNNEncoder):
        ex = ix.gradcam_examples(model, params, x_test, scores=s_test, k=4,
                                 score_fn=lambda p, x: obj.score(p, state, model, x, opts))
        files.append(plots.gradcam_grid(ex, out / "gradcam.png", title=f"{name}: Grad-CAM"))
    if grid and obj.signed_distance is not None:
        files.append(_nu_sweep(cfg, split, grid, out, name, record))
    record["provenance"] = provenance(["python", "experiments/figures.py", *sys.argv[1:]])
    record["config"] = cfg.to_dict()
    atomic_write(out / "figures.json", json.dumps(record, indent=1, default=str) + "\n")
    return files + [out / "figures.json"]


def _nu_sweep(cfg, split, grid, out: Path, name: str, record: dict) -> Path:
    """Paper Fig. 7: one run-axis sweep over the grid on run 0's training data, fractions against the bounds."""
    from imdad_jax import interpret as ix
    from imdad_jax import plots
    from imdad_jax.build import build_model, objective_options
    from imdad_jax.data.runs import RunData
    from imdad_jax.evaluate import sphere_report
    from imdad_jax.experiment import fit_grid
    from imdad_jax.tuning import tile_runs

    obj, opts = objective_options(cfg)
    d = split.data
    one = RunData(d.x, d.normal_pool[:1], d.n_valid[:1], d.anomaly_pool[:1], d.m_valid[:1])
    hp, res, points = fit_grid(cfg, one, split.keys[:1], grid)
    model = build_model(cfg, d.x.shape[1:])
    data_g, _ = tile_runs(one, split.keys[:1], len(points))  # the sweep's runs, as fit_grid trained them
    _, nu = sphere_report(obj, opts, model, res.state.params, res.state.obj_state, hp, data_g, res.runner)
    table = ix.nu_property_grid(hp["nu1"], hp["nu2"], nu["frac_normals_out"], nu["frac_anomalies_in"], hp["nu"])
    record["nu_sweep"] = {k: np.asarray(v).tolist() for k, v in table.items()}
    return plots.nu_property_plot(table, out / "nu_property.png",
                                  title=f"{name}: nu-property after {cfg.epochs} epochs ({len(points)} runs)")


if __name__ == "__main__":
    sys.exit(main())
