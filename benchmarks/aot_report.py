#!/usr/bin/env python
"""The accelerator programs, compiled ahead of time on this machine (no GPU or TPU needed) and read.

    pip install -e ".[aot]"
    python benchmarks/aot_report.py            # every target, both models, every strategy, 1/10/100/1000 runs
    python benchmarks/aot_report.py --quick    # the main job's model at 10 runs on h100 and tpu_v5e

For each target (``imdad_jax.aot.TARGETS``: an H100 80GB, TPU v5e, v6e and v4, one chip each), model (``cnn2``: the
main job's IMD-AD CNN2+FC3 step on Fashion-MNIST shapes, batch 150, 76 steps an epoch; ``fc3``: the tabular
IMD-AD step, FC3 64-32-16, batch 50, 30 features), strategy (``imdad_jax.train.runners``) and run count, the
training step is compiled exactly as a sweep runs it (``train.programs.lower_train_step``) and XLA's analyses are
read: whether it compiled, the cuDNN convolution kernels of the GPU program (forward / backward-input /
backward-filter, grouped or not), the device memory per run and the most runs one device holds, the TPU cost
analysis's FLOPs and bytes per run-step beside the model's analytic FLOPs (matmuls and convolutions of the
jaxpr), and a roofline lower bound of the paper's Fashion-MNIST protocol (10 runs x 200 epochs x 76 steps).
Nothing is run: every figure is "compiled for <target>, not timed".

Writes ``--out``.json and ``--out``.md (default ``benchmarks/results_aot``, with ``--quick``
``benchmarks/results_aot_quick``); ``--render`` redoes the derived columns and the markdown from the JSON without
compiling. JSON layout::

    {"meta": {command, commit, versions, host, wall_s, ...},
     "protocol": {"runs", "epochs", "steps_per_epoch", "run_steps"},
     "targets": {"h100" | "tpu_v5e" | "tpu_v6e" | "tpu_v4": {
         "target": {platform, memory, usable, peak_flops, bandwidth, source} | {"error": why it did not compile},
         "models": {"cnn2" | "fc3": {
             "analytic_flops_per_run_step": float,
             "max_runs_auto": the chunk --max_runs=auto plans on this target (train.chunks.estimate_memory),
             "strategies": {"vmap" | "vmap_fwd" | "map" | "chunked": {
                 "runs_that_fit": int,
                 "runs": {"1" | "10" | ...: {compiled, error, compile_s, temp_bytes, argument_bytes, output_bytes,
                                              alias_bytes, program_bytes, bytes_per_run, kernels (GPU),
                                              kernel_summary, flops, bytes, flops_per_run_step,
                                              bytes_per_run_step (TPU), roofline_protocol_s}}}}}}}}}

``roofline_protocol_s`` (runs = 10 only): the protocol's run-steps x max(FLOPs per run-step / peak FLOP/s, bytes
per run-step / HBM bandwidth). TPU: FLOPs and bytes from its cost analysis at its bf16 peak (JAX's default
precision runs float32 matmuls and convolutions as bf16 passes on the MXU). H100: XLA:GPU gives no cost analysis,
so the analytic FLOPs at the TF32 tensor-core peak (JAX's default float32 precision on an H100) and, for bytes,
the TPU v5e program's bytes per run-step of the same strategy (labelled so).
"""
from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin is installed, the GPU is not

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imdad_jax import aot  # noqa: E402
from imdad_jax.models.detector import build_encoder  # noqa: E402
from imdad_jax.objectives import get_objective  # noqa: E402
from imdad_jax.train.chunks import MEMORY_FRACTION, estimate_memory, plan_chunks  # noqa: E402
from imdad_jax.data.runs import RunData  # noqa: E402
from imdad_jax.train.runners import Runner  # noqa: E402
from imdad_jax.train.step import plan_batches  # noqa: E402

MiB = 2 ** 20
PROTOCOL = {"runs": 10, "epochs": 200, "steps_per_epoch": 76}
PROTOCOL["run_steps"] = PROTOCOL["runs"] * PROTOCOL["epochs"] * PROTOCOL["steps_per_epoch"]
# (encoder kwargs, input shape, shared training rows N, normals, labelled anomalies, batch)
MODELS = {
    "cnn2": (dict(arch="cnn2", conv_features=(16, 32), dense_features=(128, 64, 32)), (28, 28, 1), 60000, 6000, 5400,
             150),
    "fc3": (dict(arch="fc3", dense_features=(64, 32, 16)), (30,), 2000, 300, 30, 50),
}


def model_for(name: str):
    kw, shape, n, n_norm, n_anom, batch = MODELS[name]
    obj = get_objective("imdad")
    opts = obj.Options()
    kw = dict(kw)
    model = obj.make_model(build_encoder(kw.pop("arch"), **kw), shape, opts)
    plan = plan_batches(n_norm, n_anom, batch)
    hp_names = ("lr", "weight_decay", *obj.HYPERPARAMS)
    return obj, opts, model, plan, (n,) + shape, hp_names, (n_norm, n_anom, batch)


def per_run_divisor(runner: Runner, n_runs: int) -> int:
    """How many runs the cost analysis's count covers: a ``lax.map`` body is counted once."""
    if runner.strategy == "map":
        return 1
    if runner.strategy == "chunked":
        k = runner.chunk_runs
        return k + n_runs % k if n_runs > k else n_runs
    return n_runs


def auto_chunk(target: str, name: str) -> int:
    """The chunk ``--max_runs=auto`` plans on ``target`` for 100000 runs (its per-run cost decides)."""
    obj, opts, model, plan, x_shape, hp_names, (n_norm, n_anom, batch) = model_for(name)
    data = RunData(np.zeros(x_shape, np.float32), np.zeros((1, n_norm), np.int32), np.array([n_norm]),
                   np.zeros((1, n_anom), np.int32), np.array([n_anom]))
    hp = {k: np.zeros(1, np.float32) for k in hp_names}
    tgt = aot.TARGETS[target]
    budget = int(tgt.memory * tgt.usable * MEMORY_FRACTION)
    est = estimate_memory(model, obj, opts, data, hp, batch_size=batch, runner="vmap", devices=tgt.devices(),
                          budget=budget)
    return len(plan_chunks(100000, None, est, budget)[0])


def fmt_kernels(info: dict) -> str:
    return aot.summarize_kernels(info["kernels"]) if "kernels" in info else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="cnn2 at 10 runs on h100 and tpu_v5e only")
    p.add_argument("--targets", default="h100,tpu_v5e,tpu_v6e,tpu_v4")
    p.add_argument("--models", default="cnn2,fc3")
    p.add_argument("--strategies", default="vmap,vmap_fwd,map,chunked")
    p.add_argument("--runs", default="1,10,100,1000")
    p.add_argument("--chunk_runs", type=int, default=8)
    p.add_argument("--out", help="file stem (default benchmarks/results_aot, or benchmarks/results_aot_quick with "
                                 "--quick)")
    p.add_argument("--render", action="store_true",
                   help="recompute the derived columns and the markdown from --out.json (nothing is compiled)")
    a = p.parse_args()
    a.out = a.out or str(ROOT / "benchmarks" / ("results_aot_quick" if a.quick else "results_aot"))
    if a.render:
        out = json.loads(Path(a.out + ".json").read_text())
        correct_loop_counts(out)
        add_rooflines(out)
        out["meta"]["rendered"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
        Path(a.out + ".md").write_text(markdown(out))
        print(markdown(out))
        return 0
    if a.quick:
        a.targets, a.models, a.runs = "h100,tpu_v5e", "cnn2", "10"
    targets = [t for t in a.targets.split(",") if t]
    models = [m for m in a.models.split(",") if m]
    strategies = [s for s in a.strategies.split(",") if s]
    run_counts = [int(r) for r in a.runs.split(",") if r]
    t_start = time.perf_counter()
    out: dict = {"protocol": PROTOCOL, "targets": {}}
    for tname in targets:
        tgt = aot.TARGETS[tname]
        why = aot.available(tname)
        if why:
            out["targets"][tname] = {"target": {"error": why}}
            print(f"[aot] {tname}: {why}", flush=True)
            continue
        tinfo = {"target": {"platform": tgt.platform, "device_kind": tgt.devices()[0].device_kind,
                            "memory": tgt.memory, "usable": tgt.usable, "peak_flops": tgt.peak_flops,
                            "bandwidth": tgt.bandwidth, "source": tgt.source}, "models": {}}
        out["targets"][tname] = tinfo
        for mname in models:
            obj, opts, model, plan, x_shape, hp_names, _ = model_for(mname)
            minfo = {"analytic_flops_per_run_step": aot.step_flops(model, obj, opts, plan, x_shape, hp_names),
                     "strategies": {}}
            try:
                minfo["max_runs_auto"] = auto_chunk(tname, mname)
            except Exception as e:  # noqa: BLE001
                minfo["max_runs_auto"] = None
                minfo["max_runs_auto_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            tinfo["models"][mname] = minfo
            for sname in strategies:
                runner = Runner(sname, chunk_runs=a.chunk_runs)
                sinfo = {"runs": {}}
                minfo["strategies"][sname] = sinfo
                for r in run_counts:
                    if (sname == "chunked" and r <= a.chunk_runs) or (sname == "map" and r == 1):
                        continue  # the same program as vmap
                    info = aot.compile_for(tgt, model, obj, opts, runner, r, plan, x_shape, hp_names)
                    if info["compiled"]:
                        info["bytes_per_run"] = info["program_bytes"] / r
                        if "kernels" in info:
                            info["kernel_summary"] = fmt_kernels(info)
                        if "flops" in info:
                            d = per_run_divisor(runner, r)
                            info["flops_per_run_step"] = info["flops"] / d
                            info["bytes_per_run_step"] = info["bytes"] / d
                    sinfo["runs"][str(r)] = info
                    print(f"[aot] {tname} {mname} {runner.name} R={r}: "
                          + (f"{info['program_bytes'] / MiB:.0f} MiB, {info['compile_s']:.1f} s compile"
                             + (f", {info['kernel_summary']}" if "kernel_summary" in info else "")
                             + (f", {info['flops_per_run_step'] / 1e9:.2f} GFLOP/run-step"
                                if "flops_per_run_step" in info else "")
                             if info["compiled"] else f"did not compile: {info['error']}"), flush=True)
                ok = {int(k): v["program_bytes"] for k, v in sinfo["runs"].items() if v["compiled"]}
                if len(ok) >= 2:
                    sinfo["runs_that_fit"] = aot.runs_that_fit(tgt, ok)
                elif len(ok) == 1:
                    (r0, b0), = ok.items()
                    sinfo["runs_that_fit"] = int(tgt.memory * tgt.usable * MEMORY_FRACTION // (b0 / r0))
    out["chunk_runs"] = a.chunk_runs
    correct_loop_counts(out)
    add_rooflines(out)
    out["meta"] = meta(a, time.perf_counter() - t_start)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
    Path(a.out + ".md").write_text(markdown(out))
    print(markdown(out))
    return 0


def correct_loop_counts(out: dict) -> None:
    """Per-run-step FLOPs and bytes of ``map`` and ``chunked`` from two run counts.

    The cost analysis counts a loop body once, but what lies outside the loop (gathering each run's state into
    the loop and its results back out, the optimizer's pass over the stacked state) is counted for all R runs:
    ``count(R) = body + R * outside``. Two compiled run counts R1 < R2 give ``outside = (count(R2) - count(R1)) /
    (R2 - R1)``, and a run-step costs ``(count(R) - R * outside) / runs_per_body + outside``. Each run count uses
    its next larger neighbour (the largest, its smaller one)."""
    for tinfo in out["targets"].values():
        for minfo in tinfo.get("models", {}).values():
            for sname, sinfo in minfo["strategies"].items():
                if sname not in ("map", "chunked"):
                    continue
                ok = sorted((int(r), info) for r, info in sinfo["runs"].items() if "flops" in info)
                for i, (r, info) in enumerate(ok):
                    if len(ok) < 2:
                        break
                    (r1, a), (r2, b) = (ok[i], ok[i + 1]) if i + 1 < len(ok) else (ok[i - 1], ok[i])
                    d = per_run_divisor(Runner(sname, chunk_runs=out.get("chunk_runs", 8)), r)
                    for key in ("flops", "bytes"):
                        outside = max((b[key] - a[key]) / (r2 - r1), 0.0)
                        info[f"{key}_per_run_step"] = max(info[key] - r * outside, 0.0) / d + outside
                    info["per_run_step_basis"] = f"loop body + outside share from R = {r1} and {r2}"


def add_rooflines(out: dict) -> None:
    runs = str(PROTOCOL["runs"])
    v5e = out["targets"].get("tpu_v5e", {}).get("models", {})
    for tname, tinfo in out["targets"].items():
        tgt = aot.TARGETS[tname]
        for mname, minfo in tinfo.get("models", {}).items():
            for sname, sinfo in minfo["strategies"].items():
                info = sinfo["runs"].get(runs)
                if not info or not info.get("compiled"):
                    continue
                if tgt.platform == "tpu":
                    flops, bts, peak = info["flops_per_run_step"], info["bytes_per_run_step"], tgt.peak_flops["bf16"]
                    info["roofline_basis"] = "TPU cost analysis at the bf16 peak"
                else:
                    flops, peak = minfo["analytic_flops_per_run_step"], tgt.peak_flops["tf32"]
                    proxy = v5e.get(mname, {}).get("strategies", {}).get(sname, {}).get("runs", {}).get(runs, {})
                    bts = proxy.get("bytes_per_run_step")
                    info["roofline_basis"] = ("analytic FLOPs at the TF32 peak; bytes from the TPU v5e program"
                                              if bts else "analytic FLOPs at the TF32 peak (no bytes figure)")
                    bts = bts or 0.0
                info["roofline_protocol_s"] = PROTOCOL["run_steps"] * max(flops / peak, bts / tgt.bandwidth)


def meta(a: argparse.Namespace, wall: float) -> dict:
    def git(*args):
        try:
            return subprocess.check_output(["git", *args], cwd=ROOT, text=True, stderr=subprocess.DEVNULL).strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    import flax
    import jaxlib
    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__}
    for mod in ("libtpu", "jax_plugins.xla_cuda12"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            versions[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            versions[mod] = "not installed"
    return {"command": "python " + " ".join(sys.argv), "commit": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "versions": versions,
            "host": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
            "wall_s": round(wall, 1), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "note": "compiled ahead of time on a CPU-only host for each target; nothing was run or timed"}


def markdown(out: dict) -> str:
    m = out.get("meta", {})
    lines = ["# Accelerator programs, compiled ahead of time (not run, not timed)", "",
             f"`{m.get('command', '')}` at commit `{m.get('commit', '')}`"
             f"{' (with uncommitted changes)' if m.get('dirty') else ''}, {m.get('date', '')}, on {m.get('host', '')};"
             f"{' `--max_runs=auto` column ' + m['max_runs_auto'] + ';' if m.get('max_runs_auto') else ''}"
             f" {', '.join(f'{k} {v}' for k, v in m.get('versions', {}).items())}; wall time {m.get('wall_s', 0)} s.",
             "", "Every figure is XLA's analysis of the program compiled for the target on a CPU-only host "
             "(`benchmarks/aot_report.py` says how each is made). Memory: arguments + non-aliased outputs + "
             "temporaries of one training step. \"Runs/device\": the most runs one chip holds within "
             f"{MEMORY_FRACTION:.0%} of what a JAX process gets (GPU: 75% of HBM by default; TPU: all of it). "
             "FLOPs/bytes per run-step: the TPU cost analysis, divided by the runs it covers (for `map` and "
             "`chunked`, whose loop body it counts once, from two run counts: `correct_loop_counts`); "
             "analytic: matmul + convolution FLOPs of one run's step from its jaxpr. Roofline: a lower bound of "
             f"the Fashion-MNIST protocol ({PROTOCOL['runs']} runs x {PROTOCOL['epochs']} epochs x "
             f"{PROTOCOL['steps_per_epoch']} steps) at the chip's published peaks.", ""]
    for tname, tinfo in out["targets"].items():
        t = tinfo["target"]
        if "error" in t:
            lines += [f"## {tname}: not compiled", "", t["error"], ""]
            continue
        lines += [f"## {tname} ({t['device_kind']}, {t['memory'] / 2**30:.1f} GiB)", "", f"Peaks: {t['source']}.", ""]
        for mname, minfo in tinfo["models"].items():
            auto = minfo.get("max_runs_auto")
            lines += [f"### {mname}: analytic {minfo['analytic_flops_per_run_step'] / 1e9:.4g} GFLOP per run-step; "
                      f"`--max_runs=auto` plans chunks of {auto if auto is not None else 'n/a'} runs here", "",
                      "| strategy | runs | compiled | GPU convolution kernels | MiB/run | program MiB | runs/device "
                      "| GFLOP/run-step (TPU) | MB/run-step (TPU) | roofline protocol s | compile s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            for sname, sinfo in minfo["strategies"].items():
                for r, info in sinfo["runs"].items():
                    if not info["compiled"]:
                        lines.append(f"| {sname} | {r} | no: {info['error'][:120]} | | | | | | | | |")
                        continue
                    fl = f"{info['flops_per_run_step'] / 1e9:.4g}" if "flops_per_run_step" in info else "n/a"
                    by = f"{info['bytes_per_run_step'] / 1e6:.4g}" if "bytes_per_run_step" in info else "n/a"
                    rl = f"{info['roofline_protocol_s']:.3g}" if "roofline_protocol_s" in info else ""
                    lines.append(f"| {sname} | {r} | yes | {info.get('kernel_summary', 'n/a')} | "
                                 f"{info['bytes_per_run'] / MiB:.1f} | {info['program_bytes'] / MiB:.0f} | "
                                 f"{sinfo.get('runs_that_fit', '')} | {fl} | {by} | {rl} | {info['compile_s']:.1f} |")
            lines.append("")
    bases = {info.get("roofline_basis") for t in out["targets"].values() for mi in t.get("models", {}).values()
             for si in mi["strategies"].values() for info in si["runs"].values() if info.get("roofline_basis")}
    if bases:
        lines += ["Roofline bases: " + "; ".join(sorted(bases)) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
