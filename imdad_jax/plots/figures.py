"""PNG writers for the interpretability figures. Each takes the output of the matching data
function in ``imdad_jax.interpret`` and a path, and returns the path."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    _plt().close(fig)
    return path


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, float)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def gradcam_grid(examples: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Images (row 1) with their normal-evidence (row 2) and abnormal-evidence (row 3) maps overlaid.

    ``examples`` is ``imdad_jax.interpret.gradcam_examples``'s output. Both maps of an image share one
    colour scale, so their strengths compare.
    """
    plt = _plt()
    n = len(examples["score"])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for j in range(n):
        img = _grey(examples["images"][j])
        vmax = max(float(examples["normal"][j].max()), float(examples["abnormal"][j].max()), 1e-12)
        group = examples["group"][j] if "group" in examples else ""
        axes[0, j].imshow(img, cmap="gray")
        axes[0, j].set_title(f"{group}\ns={float(examples['score'][j]):.3g}", fontsize=7)
        for row, key, cmap in ((1, "normal", "Greens"), (2, "abnormal", "Reds")):
            axes[row, j].imshow(img, cmap="gray")
            axes[row, j].imshow(examples[key][j], cmap=cmap, alpha=0.55, vmin=0.0, vmax=vmax)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row, label in enumerate(("input", "normal evidence", "abnormal evidence")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def density_plot(density: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Densities of squared distances with the R^2, R^2 + rho^2/2 and R^2 + rho^2 marks (paper Fig. 8);
    ``density`` is ``imdad_jax.interpret.distance_density``'s output."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    g = density["grid"]
    ax.fill_between(g, density["normals"], alpha=0.4, color="tab:blue", label="normals")
    if density.get("anomalies") is not None:
        ax.fill_between(g, density["anomalies"], alpha=0.4, color="tab:red", label="anomalies")
    for key, style, label in (("radius2", "-", "$R^2$"), ("decision2", ":", r"$R^2+\rho^2/2$"),
                              ("outer2", "--", r"$R^2+\rho^2$")):
        ax.axvline(density[key], color="k", linestyle=style, linewidth=1, label=label)
    ax.set_xlabel(r"$\|z-c\|^2$")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _scatter_by_label(ax: Any, pts: np.ndarray, labels: np.ndarray | None) -> None:
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color="tab:blue")
        return
    labels = np.asarray(labels)
    for val, color, name in ((0, "tab:blue", "normal"), (1, "tab:red", "anomaly")):
        m = labels == val
        if m.any():
            ax.scatter(pts[m, 0], pts[m, 1], s=6, color=color, label=name)


def circles_plot(circles: Mapping[str, Any], z: np.ndarray, path: str | Path, labels: np.ndarray | None = None,
                 x: np.ndarray | None = None, score_grid: Mapping[str, np.ndarray] | None = None,
                 title: str = "") -> Path:
    """2-D inputs (left, with the score-0 contour of ``input_score_grid`` if given) beside their
    representations z with the inner, decision and outer circles of ``circles_2d`` (right)."""
    plt = _plt()
    from matplotlib.patches import Circle

    left = x is not None and np.ndim(x) == 2 and np.shape(x)[1] == 2
    fig, axes = plt.subplots(1, 2 if left else 1, figsize=(10 if left else 5, 4.5), squeeze=False)
    if left:
        ax = axes[0, 0]
        if score_grid is not None:
            ax.contourf(score_grid["xx"], score_grid["yy"], score_grid["score"], levels=20, cmap="coolwarm",
                        alpha=0.35)
            ax.contour(score_grid["xx"], score_grid["yy"], score_grid["score"], levels=[0.0], colors="k")
        _scatter_by_label(ax, np.asarray(x), labels)
        ax.set_title("inputs")
    ax = axes[0, -1]
    _scatter_by_label(ax, np.asarray(z), labels)
    c = circles["center"]
    for key, style, label in (("radius", "-", "R"), ("decision_radius", ":", "decision"),
                              ("outer_radius", "--", r"$\sqrt{R^2+\rho^2}$")):
        ax.add_patch(Circle(c, circles[key], fill=False, linestyle=style, color="k", label=label))
    ax.plot(*c, "k+")
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("representations")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def roc_plot(curves: Sequence[Mapping[str, Any]], path: str | Path, names: Sequence[str] | None = None,
             title: str = "") -> Path:
    """One ROC curve per run (``imdad_jax.interpret.roc_curves``'s output), AUC in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for r, cur in enumerate(curves):
        if len(cur["fpr"]) == 0:
            continue  # a diverged run has no curve
        name = names[r] if names is not None else f"run {r}"
        ax.plot(cur["fpr"], cur["tpr"], linewidth=1, label=f"{name} (AUC {cur['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if len(curves) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def tsne_plot(embedding: np.ndarray, path: str | Path, labels: np.ndarray | None = None, title: str = "") -> Path:
    """t-SNE scatter (``imdad_jax.interpret.tsne_embedding``'s output), coloured normal / anomaly."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    _scatter_by_label(ax, np.asarray(embedding), labels)
    ax.set_xticks([])
    ax.set_yticks([])
    if labels is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def nu_property_plot(table: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Measured fraction against its bound, one point per run (``nu_property_grid``'s output): points on or
    under the diagonal satisfy the nu-property."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, what, label in ((axes[0], "normals_out", "normals outside the inner sphere"),
                            (axes[1], "anomalies_in", "anomalies inside the outer sphere")):
        b, f = np.asarray(table[f"bound_{what}"]), np.asarray(table[f"frac_{what}"])
        ok = np.asarray(table[f"holds_{what}"], bool)
        ax.scatter(b[ok], f[ok], s=14, color="tab:green", label="holds")
        ax.scatter(b[~ok], f[~ok], s=14, color="tab:red", marker="x", label="violated")
        top = max(float(np.max(b)), float(np.max(f)), 1e-3) * 1.1
        ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("bound")
        ax.set_ylabel("measured fraction")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def attribution_plot(attributions: np.ndarray, path: str | Path, feature_names: Sequence[str] | None = None,
                     rows: Sequence[int] | None = None, top: int = 8, scores: np.ndarray | None = None,
                     title: str = "") -> Path:
    """Horizontal bars per row of the features with the largest attributions (``DeepDetector.explain``'s
    (N, features) output): red pushes the row's score up (towards anomalous), blue down. ``rows``: which rows
    (default: the first six); ``top``: features per row, by absolute attribution; ``scores``: the rows' scores,
    shown in each panel's title."""
    a = np.asarray(attributions, float)
    if a.ndim != 2:
        raise ValueError(f"attributions must be (rows, features), got shape {a.shape}")
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(a.shape[1])]
    if len(names) != a.shape[1]:
        raise ValueError(f"{len(names)} feature names for {a.shape[1]} features")
    rows = list(rows) if rows is not None else list(range(min(6, len(a))))
    plt = _plt()
    k = min(int(top), a.shape[1])
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows) + 0.6, 0.32 * k + 1.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        order = np.argsort(-np.abs(a[r]))[:k][::-1]
        vals = a[r, order]
        ax.barh(np.arange(k), vals, color=np.where(vals > 0, "#c0392b", "#2e86c1"))
        ax.set_yticks(np.arange(k), [names[j] for j in order], fontsize=7)
        ax.axvline(0, color="k", lw=0.6)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"row {r}" + (f", score {float(scores[r]):.3g}" if scores is not None else ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def threshold_metrics_plot(table: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "",
                           metrics: Sequence[str] = ("precision", "recall", "f1", "accuracy")) -> Path:
    """Grouped bars, one group per threshold rule (``imdad_jax.interpret.metrics_table``'s output)."""
    plt = _plt()
    rules = list(table)
    fig, ax = plt.subplots(figsize=(1.3 * len(rules) + 2, 3.5))
    width = 0.8 / len(metrics)
    pos = np.arange(len(rules))
    for i, m in enumerate(metrics):
        ax.bar(pos + (i - (len(metrics) - 1) / 2) * width, [table[r].get(m, np.nan) for r in rules], width, label=m)
    ax.set_xticks(pos, rules, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=len(metrics), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    if title:
        ax.set_title(title, pad=22)
    return _save(fig, path)


def training_curves_plot(history: Mapping[str, np.ndarray], metrics: Mapping[str, np.ndarray] | None,
                         path: str | Path, run: int = 0, title: str = "") -> Path:
    """Paper Fig. 4: loss, R^2 and rho^2 per epoch (batch means from ``FitResult.history``), and train /
    test AUC and boundary accuracy at the snapshot epochs (``interpret.snapshot_metrics``), for one run."""
    plt = _plt()
    panels = [("loss", ["loss", "train_loss", "test_loss"]), ("sphere", [k for k in ("radius2", "margin2") if k in history])]
    if metrics is not None:
        panels += [("AUC", ["train_auc", "test_auc"]), ("accuracy (score > 0)", ["train_acc", "test_acc"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for k in keys:
            if k in history:
                v = np.asarray(history[k])[:, run]
                ax.plot(np.arange(1, len(v) + 1), v,
                        label={"radius2": "R²", "margin2": "ρ²", "loss": "batch mean (train)"}.get(k, k))
            elif metrics is not None and k in metrics:
                ax.plot(metrics["epoch"], np.asarray(metrics[k])[:, run], "o-",
                        label=k.split("_")[0] + (" (whole set)" if k.endswith("loss") else ""))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if name == "loss":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
