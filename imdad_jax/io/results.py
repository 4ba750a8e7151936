"""Results files with provenance, written atomically: JSON (config, provenance, per-run records, timing), a
markdown table (for people), and beside them the per-epoch history as gzipped JSON (``<stem>.history.json.gz``,
which git ignores under ``results/``; see ``results/README.md``)."""
from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_PACKAGES = ("imdad-jax", "jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn", "scipy")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows: for benchmark headers."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command, git commit (and whether the tree was dirty), package versions, device, time."""
    import jax

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    devs = jax.devices()
    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": f"{len(devs)} x {devs[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def atomic_write(path: str | os.PathLike, text: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file (``bytes``: as is)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    vals = [v * scale for v in values if v is not None and np.isfinite(v)]
    if not vals and values and all(v is None for v in values):
        return "n/a"
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def per_class_table(runs: list[dict[str, Any]], class_names: Sequence[str] | None = None,
                    paper: Sequence[float] | None = None) -> str:
    """Markdown table, one row per normal class (mean ± std over seeds), with the paper's AUC beside ours."""
    classes = sorted({r["normal_class"] for r in runs})
    head = ("| class | name | AUC % (ours) | AUC % (paper) | R² | ρ² | ‖c‖ | normals out (bound) "
            "| anomalies in (bound) | runs | diverged |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    ours_all, paper_all = [], []
    for k in classes:
        rs = [r for r in runs if r["normal_class"] == k]
        ok = [r for r in rs if not r["diverged"]]
        aucs = [r["auc"] for r in ok]
        ours_all.append(np.mean([a for a in aucs if a is not None]) * 100 if any(a is not None for a in aucs)
                        else np.nan)
        p = paper[k] if paper is not None and k < len(paper) else None
        if p is not None:
            paper_all.append(p)
        name = class_names[k] if class_names is not None and k < len(class_names) else str(k)
        col = lambda key: _fmt([r.get(key) for r in ok], digits=3)  # noqa: E731
        bound = lambda key: f" ({rs[0][key]:.3f})" if key in rs[0] else ""  # noqa: E731
        lines.append(
            f"| {k} | {name} | {_fmt(aucs, 100)} | {p if p is not None else 'n/a'} "
            f"| {col('radius2')} | {col('margin2')} | {col('center_norm')} "
            f"| {col('frac_normals_out')}{bound('bound_normals_out')} "
            f"| {col('frac_anomalies_in')}{bound('bound_anomalies_in')} "
            f"| {len(rs)} | {sum(r['diverged'] for r in rs)} |")
    mean_ours = np.nanmean(ours_all) if ours_all else np.nan
    mean_paper = (f"{np.mean(paper_all):.2f}" if len(paper_all) == len(classes) and paper_all else "n/a")
    lines.append(f"| **mean** | | **{mean_ours:.2f}** | {mean_paper} | | | | | | {len(runs)} "
                 f"| {sum(r['diverged'] for r in runs)} |")
    return "\n".join(lines)


def method_table(runs_by_method: dict[str, list[dict[str, Any]]], class_names: Sequence[str] | None = None,
                 paper: dict[str, Sequence[float]] | None = None) -> str:
    """Classes as rows, methods as columns: our AUC % (mean over seeds), the paper's beside it where it has one."""
    methods = list(runs_by_method)
    paper = paper or {}
    classes = sorted({r["normal_class"] for rs in runs_by_method.values() for r in rs})
    head = ["class"]
    for m in methods:
        head += [m, f"{m} (paper)"] if m in paper else [m]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means: dict[str, list[float]] = {m: [] for m in methods}
    for k in classes:
        name = class_names[k] if class_names is not None and k < len(class_names) else str(k)
        cells = [f"{k} {name}"]
        for m in methods:
            aucs = [r["auc"] for r in runs_by_method[m] if r["normal_class"] == k and not r["diverged"]]
            vals = [a for a in aucs if a is not None]
            means[m].append(np.mean(vals) * 100 if vals else np.nan)
            cells.append(_fmt(aucs, 100))
            if m in paper:
                cells.append(f"{paper[m][k]:.2f}" if k < len(paper[m]) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**mean**"]
    for m in methods:
        cells.append(f"**{np.nanmean(means[m]):.2f}**" if means[m] else "n/a")
        if m in paper:
            vals = [paper[m][k] for k in classes if k < len(paper[m])]
            cells.append(f"{np.mean(vals):.2f}" if len(vals) == len(classes) else "n/a")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diverged_note(runs: list[dict[str, Any]]) -> str:
    bad = [r for r in runs if r["diverged"]]
    if not bad:
        return ""
    ids = ", ".join(f"class {r['normal_class']} seed {r['seed']}" for r in bad)
    return (f"\n**{len(bad)} run(s) diverged** (non-finite loss or parameters; excluded from the means): {ids}. "
            "Lower --lr or check the inputs.\n")


HISTORY_SUFFIX = ".history.json.gz"


def history_path(json_path: str | os.PathLike) -> Path:
    """Where the per-epoch history of results file ``json_path`` goes: ``<stem>.history.json.gz`` beside it."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.name.removesuffix(".json") + HISTORY_SUFFIX)


def split_history(json_path: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``record["history"]`` to the gzipped sidecar of ``json_path``; return a copy of the record that holds
    ``"history_file": <the sidecar's name>`` in its place. A record without a history (or with an empty one, as the
    shallow methods') comes back unchanged and no sidecar is written."""
    if not record.get("history"):
        return record
    side = history_path(json_path)
    # mtime 0: the same history gives the same bytes
    atomic_write(side, gzip.compress(json.dumps(record["history"], default=_json_default).encode(), mtime=0))
    # the pointer takes the history's place, so the file's keys keep their order
    return {("history_file" if k == "history" else k): (side.name if k == "history" else v) for k, v in record.items()}


def move_history_out(json_path: str | os.PathLike) -> Path | None:
    """Rewrite an existing results file whose record still holds its ``"history"`` into the split layout (the
    history to its sidecar, ``"history_file"`` in its place); the sidecar's path, or None when there was nothing to
    move. The other keys and the JSON layout (``indent=1``) stay as they were."""
    json_path = Path(json_path)
    record = json.loads(json_path.read_text())
    if not isinstance(record, dict) or not record.get("history"):
        return None
    if not all(isinstance(v, list) for v in record["history"].values()):
        return None  # not per-epoch arrays (e.g. a note that the history was dropped): left where it is
    atomic_write(json_path, json.dumps(split_history(json_path, record), indent=1, default=_json_default) + "\n")
    return history_path(json_path)


def load_history(json_path: str | os.PathLike) -> dict[str, Any]:
    """The per-epoch history of results file ``json_path`` (``{name: (epochs, runs) nested lists}``): the record's own
    ``"history"`` (older or hand-written files), else its gzipped sidecar (``"history_file"``), else ``{}``.

    The sidecar is not in git: a fresh checkout has the tables and per-run records, and the history only where the
    run was made (or copied). A missing sidecar raises ``FileNotFoundError`` naming it."""
    json_path = Path(json_path)
    record = json.loads(json_path.read_text())
    if "history" in record:
        return record["history"]
    name = record.get("history_file")
    if not name:
        return {}
    side = json_path.parent / name
    if not side.is_file():
        raise FileNotFoundError(f"{side}: the per-epoch history of {json_path} is not here (history files are kept "
                                "beside the results where the run was made and are not in git; rerun the command "
                                "in its provenance to get it)")
    with gzip.open(side, "rt") as f:
        return json.load(f)


def write_results(out_dir: str | os.PathLike, stem: str, record: dict[str, Any], table: str) -> tuple[Path, Path]:
    """``{stem}.json`` (config, provenance, per-run records, timing; ``"history_file"`` names the history),
    ``{stem}.history.json.gz`` (the per-epoch history, read back with ``load_history``) and ``{stem}.md`` (the table
    + how it was made). ``record`` itself is not modified."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    # The sidecar first, so the JSON never names a history that is not there.
    atomic_write(json_path, json.dumps(split_history(json_path, record), indent=1, default=_json_default) + "\n")
    prov, t, cfg = record["provenance"], record["timing"], record["config"]
    md = [f"# {stem}", "", table, diverged_note(record["runs"]), "",
          f"- command: `{prov['command']}`",
          f"- commit: `{prov['git_commit']}`{' (uncommitted changes)' if prov['git_dirty'] else ''}",
          f"- device: {prov['devices']} ({prov['backend']}, {prov['cpu_count']} CPU cores), {prov['platform']}",
          "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
          f"- wall time: {t['total_s']:.1f} s (train {t['train_s']:.1f} s incl. compile, eval {t['eval_s']:.1f} s); "
          f"strategy {t['strategy']}/{t['epoch_mode']}; {t['steps_per_epoch']} steps/epoch"
          + _autotune_note(t.get("autotune")),
          f"- schedule: preset `{cfg['preset']}`, {cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']}, "
          f"milestones {cfg['milestones_epochs']} (x{cfg['gamma']}), weight decay {cfg['weight_decay']}, "
          f"anomalies' batch share {cfg.get('anomaly_share') or 'as in the training set'}",
          f"- method `{cfg['method']}`: " + (", ".join(f"{k} {v:g}" for k, v in record.get("hyperparams", {}).items())
                                            or "no objective hyperparameters")
          + _options_note(record)
          + (f"; autoencoder pretraining {cfg['pretrain_epochs']} epochs" if cfg.get("pretrain_epochs") else "")
          + f"; arch {cfg['arch']} conv {cfg['conv_features']} dense {cfg['dense_features']}",
          *_tuning_lines(record),
          f"- finished: {prov['utc']}", ""]
    atomic_write(md_path, "\n".join(md))
    return json_path, md_path


def _options_note(record: dict[str, Any]) -> str:
    """The method's static options for the markdown: as the experiment resolved them (``record["options"]``), or
    IMD-AD's two as files written before the options had their own section name them (top-level config fields)."""
    cfg = record["config"]
    opts = record.get("options")
    if opts is None:
        return (f"; margin `{cfg['margin_param']}`, center `{cfg['center_constraint']}`"
                if "margin_param" in cfg and "center_constraint" in cfg else "")
    return "; " + ", ".join(f"{k} `{v}`" for k, v in opts.items()) if opts else ""


def _tuning_lines(record: dict[str, Any]) -> list[str]:
    """How the per-run hyperparameters were chosen, and how often each value won."""
    tuning = record.get("tuning")
    if not tuning:
        return []
    wins = []
    for name, values in tuning["grid"]:
        got = [r["tuned"][name] for r in record["runs"] if "tuned" in r]
        wins.append(f"{name}: " + ", ".join(f"{v:g} x{sum(g == v for g in got)}" for v in values))
    return [f"- tuned per run on a validation split ({tuning['val_fraction']:g} of each run's training normals and "
            f"labelled anomalies, median {int(np.median(tuning['n_val_anomalies']))} anomalies), then retrained on "
            f"all its training data; chosen: " + "; ".join(wins) + f" ({tuning['seconds']:.0f} s)"]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _autotune_note(info: dict | None) -> str:
    """How ``auto`` chose the strategy on an accelerator: each candidate's measured run-steps/s."""
    if not info:
        return ""
    rates = ", ".join(f"{k} {v:,.0f}" if v else f"{k} failed" for k, v in info["run_steps_per_s"].items())
    how = "cached measurement" if info.get("cached") else f"measured over {info.get('steps')} steps each"
    return f" (auto chose {info['chosen']}: run-steps/s {rates}; {how})"
