#!/usr/bin/env python
"""The CNN encoders' full training step on CPU, by convolution form and run-axis strategy, in one process.

    python benchmarks/bench_cpu_conv.py                     # the default: both encoders, every form and mode
    python benchmarks/bench_cpu_conv.py --archs=lenet --rounds=5

What is timed: one jitted training step (forward, backward, Adam with weight decay as ``imdad_jax.train.state``
chains it; the loss is Deep SVDD's mean squared distance to a fixed center) of an encoder mirroring
``imdad_jax.models.CNNEncoder`` (5x5 SAME bias-free convolutions, leaky ReLU, 2x2 max-pool, bias-free dense
layers), batch 150 of 28x28x1 images, for

* two encoders: ``lenet`` (conv 8, 4; dense 32: the LeNet-size encoder of ``bench_vs_pytorch.py``) and
  ``cnn2`` (conv 16, 32; dense 128, 64, 32: ``build_encoder("cnn2")``);
* three forms: ``nn`` (``nn.Conv`` + ``nn.max_pool``: the library today), ``im2col`` (``layers.Conv(impl=
  "im2col")`` in every layer + ``layers.max_pool_2x2``) and ``auto`` (``layers.Conv(impl="auto")``: im2col
  where the layer has few input channels, XLA's convolution elsewhere, + ``max_pool_2x2``);
* three modes: ``single`` (one run), ``loop`` (R runs, each its own state and batch, one jitted single-run step
  called for each in turn: the engine's ``loop`` strategy) and ``vmap`` (R runs in one ``jit(vmap(step))``:
  the engine's ``vmap`` strategy). ``auto`` under vmap resolves to im2col in every layer
  (``resolve_conv_impl(..., vmapped=True)``), which is the ``im2col`` row, so it is not run twice.

With PyTorch importable, the same step in PyTorch (``torch.set_num_threads`` = the cores) runs in the same
rounds: the same layers (``TorchCNN2FC3`` from ``bench_vs_pytorch.py``, both encoders) and, for LeNet, the
reference Deep SVDD's ``MNIST_LeNet`` (its two affine-free BatchNorms included), which is what the issue's CPU
target (ours at 2x PyTorch's per-step rate) was measured against. PyTorch trains runs one after another, so its
rate is the same for any R.

Timing: every step function is compiled ahead of time (lower + compile: "compile s"), run once, then the
configurations take turns, ``--rounds`` times: in each round each runs whole program steps for at least
``--seconds`` (at least one). Reported: the median over rounds of the time per program step (and the fastest
and slowest round); steps/s = program steps per second (a loop or vmap step advances all R runs), run-steps/s =
R x steps/s, the comparable throughput. The machine may be shared: the load average is recorded each round.

``--malloc``: glibc returns every freed block over its mmap threshold (at most 32 MiB) to the kernel, and
XLA:CPU allocates a step's temporaries afresh each call, so a step whose temporaries pass the threshold
page-faults through all of them every step. ``no_mmap`` sets ``mallopt(M_MMAP_MAX, 0)`` and a 1 GiB trim
threshold for the whole run; ``both`` alternates the two settings inside each round (each configuration is then
timed under both). Writes ``--out``.json and ``--out``.md and prints the table.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.io.results import cpu_model  # noqa: E402
from imdad_jax.models.layers import Conv, max_pool_2x2, resolve_conv_impl  # noqa: E402

LR, WEIGHT_DECAY = 1e-4, 1e-6  # the paper's Adam settings, as bench_vs_pytorch.py
ARCHS = {  # name: (conv features, dense features); lenet as bench_vs_pytorch.LENET, cnn2 as its CNN2
    "lenet": ((8, 4), (32,)),
    "cnn2": ((16, 32), (128, 64, 32)),
}
FORMS = {
    "nn": "nn.Conv + nn.max_pool (today)",
    "im2col": "im2col Conv + max_pool_2x2",
    "auto": "Conv(impl='auto') + max_pool_2x2",
}
MODES = ("single", "loop", "vmap")


# ------------------------------------------------------------------------------------------------ the model

class BenchCNN(nn.Module):
    """``CNNEncoder`` with its default options (same parameter tree: conv{i}, fc/dense{i}), the convolution and
    pooling taken from ``form``. Built here so the benchmark does not depend on how encoders.py is wired."""

    conv_features: Sequence[int]
    dense_features: Sequence[int]
    form: str = "nn"
    kernel_size: int = 5

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim == 3:
            x = x[..., None]
        k = (self.kernel_size, self.kernel_size)
        for i, ch in enumerate(self.conv_features):
            if self.form == "nn":
                h = nn.Conv(ch, k, padding="SAME", use_bias=False, name=f"conv{i}")(x)
            else:
                h = Conv(ch, k, padding="SAME", use_bias=False, impl=self.form, name=f"conv{i}")(x)
            h = nn.leaky_relu(h, negative_slope=0.01)
            x = nn.max_pool(h, (2, 2), strides=(2, 2)) if self.form == "nn" else max_pool_2x2(h)
        return _MLP(self.dense_features, name="fc")(x)


class _MLP(nn.Module):
    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.features):
            x = nn.Dense(width, use_bias=False, name=f"dense{i}")(x)
            if i < len(self.features) - 1:
                x = nn.leaky_relu(x, negative_slope=0.01)
        return x


def optimizer() -> optax.GradientTransformation:
    # imdad_jax.train.state's chain without its schedule and masks: decay, Adam, -lr.
    return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.scale_by_adam(), optax.scale(-LR))


def make_step(model: nn.Module) -> Callable:
    tx = optimizer()

    def step(params: Any, opt_state: Any, x: jnp.ndarray) -> tuple[Any, Any, jnp.ndarray]:
        def loss_fn(p: Any) -> jnp.ndarray:
            z = model.apply(p, x)
            return jnp.mean(jnp.sum((z - 0.1) ** 2, axis=-1))  # Deep SVDD: distance to a fixed center

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


# ------------------------------------------------------------------------------------------- configurations

class Config:
    """One timed thing: ``run_once()`` advances every run of it by one step and blocks until done."""

    def __init__(self, arch: str, form: str, mode: str, runs: int, label: str):
        self.arch, self.form, self.mode, self.runs, self.label = arch, form, mode, runs, label
        self.compile_s = 0.0
        self.first_loss: float | None = None
        self.times: list[dict[str, Any]] = []  # per round: {"malloc", "step_s", "steps"}

    def run_once(self) -> None:
        raise NotImplementedError

    def before_round(self) -> None:
        """Called before each round's timing of this configuration."""


class JaxConfig(Config):
    def __init__(self, arch: str, form: str, mode: str, runs: int, x_runs: np.ndarray):
        conv, dense = ARCHS[arch]
        super().__init__(arch, form, mode, runs if mode != "single" else 1, FORMS[form])
        model = BenchCNN(conv, dense, form)
        step = make_step(model)
        tx = optimizer()
        n = self.runs
        # Run r's parameters from key r, whatever the form: the forms' first losses must then agree.
        init = jax.jit(model.init)  # one compile instead of every initializer op's, run by run
        params = [init(jax.random.PRNGKey(r), x_runs[r][:1]) for r in range(n)]
        t = time.perf_counter()
        if mode == "vmap":
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
            self.state = (stacked, jax.vmap(tx.init)(stacked))
            self.x = jnp.asarray(x_runs[:n])
            self.fn = jax.jit(jax.vmap(step), donate_argnums=(0, 1)).lower(*self.state, self.x).compile()
        else:
            self.state = [(p, tx.init(p)) for p in params]
            self.x = [jnp.asarray(x_runs[r]) for r in range(n)]
            self.fn = jax.jit(step, donate_argnums=(0, 1)).lower(*self.state[0], self.x[0]).compile()
        self.compile_s = time.perf_counter() - t
        self.first_loss = float(np.mean(self._advance()))

    def _advance(self) -> Any:
        if self.mode == "vmap":
            p, o, loss = self.fn(*self.state, self.x)
            self.state = (p, o)
            return jax.block_until_ready(loss)
        losses = []
        for r in range(self.runs):  # dispatch is asynchronous: run r + 1 is queued while run r computes
            p, o, loss = self.fn(*self.state[r], self.x[r])
            self.state[r] = (p, o)
            losses.append(loss)
        return jax.block_until_ready(losses)

    def run_once(self) -> None:
        self._advance()


class TorchConfig(Config):
    def __init__(self, arch: str, which: str, x: np.ndarray, threads: int, tag: bool = False):
        import torch

        bvp = _import_bench_vs_pytorch()
        conv, dense = ARCHS[arch]
        torch.manual_seed(0)
        if which == "same":
            net, label = bvp.TorchCNN2FC3(conv=conv, dense=dense), "PyTorch, the same layers (no BN)"
        else:
            _, lenet, _ = bvp.import_reference()
            net, label = lenet(), "PyTorch, reference MNIST_LeNet (affine-free BN)"
        if tag:  # a thread count other than the cores', labelled as such
            label += f", {threads} thread{'s' if threads > 1 else ''}"
        super().__init__(arch, f"torch_{which}", "single", 1, label)
        self.threads = threads
        self.torch, self.net = torch, net.train()
        self.opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.x = bvp.to_nchw(x)
        self.before_round()
        t = time.perf_counter()
        self.first_loss = self._step()
        self.compile_s = time.perf_counter() - t  # the first step: PyTorch's warm-up

    def before_round(self) -> None:
        self.torch.set_num_threads(self.threads)  # PyTorch configurations may differ in it

    def _step(self) -> float:
        self.opt.zero_grad()
        z = self.net(self.x)
        loss = ((z - 0.1) ** 2).sum(dim=1).mean()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def run_once(self) -> None:
        self._step()


def _import_bench_vs_pytorch() -> Any:
    """bench_vs_pytorch.py as a module (its PyTorch encoder, NCHW conversion and reference import)."""
    name = "bench_vs_pytorch"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "bench_vs_pytorch.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# ------------------------------------------------------------------------------------------------ timing

from imdad_jax.io.host import set_malloc  # noqa: E402  (the library's own allocator switch)


def time_round(cfg: Config, seconds: float, malloc: str, warm: bool) -> None:
    cfg.before_round()
    if warm:  # one untimed step after a switch of the malloc setting: the allocator's state under this setting
        cfg.run_once()
    steps, t0 = 0, time.perf_counter()
    while True:
        cfg.run_once()
        steps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    cfg.times.append({"malloc": malloc, "step_s": elapsed / steps, "steps": steps})


def summarize(cfg: Config, malloc: str, batch: int) -> dict[str, Any]:
    ts = [t["step_s"] for t in cfg.times if t["malloc"] == malloc]
    med = statistics.median(ts)
    return {"arch": cfg.arch, "form": cfg.form, "label": cfg.label, "mode": cfg.mode, "runs": cfg.runs,
            "malloc": malloc, "compile_s": cfg.compile_s, "first_loss": cfg.first_loss,
            "step_ms_median": med * 1e3, "step_ms_min": min(ts) * 1e3, "step_ms_max": max(ts) * 1e3,
            "steps_per_s": 1.0 / med, "run_steps_per_s": cfg.runs / med, "samples_per_s": cfg.runs * batch / med,
            "rounds_step_ms": [t * 1e3 for t in ts], "rounds_steps": [t["steps"] for t in cfg.times
                                                                      if t["malloc"] == malloc]}


# ------------------------------------------------------------------------------------------------ report

def ratios(rows: list[dict]) -> list[dict]:
    """Each JAX row's run-steps/s over the PyTorch rows' (same encoder, same malloc setting)."""
    out = []
    for r in rows:
        if r["form"].startswith("torch"):
            continue
        for t in rows:
            if t["form"].startswith("torch") and t["arch"] == r["arch"] and t["malloc"] == r["malloc"]:
                out.append({"arch": r["arch"], "form": r["form"], "mode": r["mode"], "runs": r["runs"],
                            "malloc": r["malloc"], "vs": t["label"],
                            "speed_ratio": r["run_steps_per_s"] / t["run_steps_per_s"]})
    return out


def markdown(rows: list[dict], rat: list[dict], meta: dict) -> str:
    v = meta["versions"]
    mallocs = sorted({r["malloc"] for r in rows})
    lines = [f"## CPU convolution forms: {meta['cpu_model']} ({meta['cpu_count']} cores), {meta['utc']}", "",
             "Full training step (forward + backward + Adam), batch 150, 28x28x1. steps/s: program steps (a loop "
             "or vmap step advances all R runs); run-steps/s = R x steps/s. ms/step: median over rounds "
             "(fastest - slowest round).", ""]
    show_malloc = len(mallocs) > 1 or mallocs != ["default"]
    head = "| encoder | form | mode | R |" + (" malloc |" if show_malloc else "") + \
        " compile s | ms/step | steps/s | run-steps/s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['label']} | {r['mode']} | {r['runs']} |"
                     + (f" {r['malloc']} |" if show_malloc else "")
                     + f" {r['compile_s']:.1f} | {r['step_ms_median']:.1f} ({r['step_ms_min']:.1f} - "
                       f"{r['step_ms_max']:.1f}) | {r['steps_per_s']:.2f} | **{r['run_steps_per_s']:.1f}** |")
    if rat:
        lines += ["", "| encoder | form | mode | R |" + (" malloc |" if show_malloc else "")
                  + " vs | speed (run-steps/s, ours / PyTorch) |",
                  "|" + "---|" * (6 + show_malloc)]
        for q in rat:
            lines.append(f"| {q['arch']} | {FORMS[q['form']]} | {q['mode']} | {q['runs']} |"
                         + (f" {q['malloc']} |" if show_malloc else "") + f" {q['vs']} | **{q['speed_ratio']:.2f}x** |")
    la = meta["loadavg_rounds"]
    lines += ["", f"- command: `{meta['command']}`",
              f"- commit: `{meta['git_commit']}`{' (tree dirty)' if meta['git_dirty'] else ''}",
              f"- jax {v.get('jax')} / jaxlib {v.get('jaxlib')} ({meta['devices']}, default threading), flax "
              f"{v.get('flax')}, optax {v.get('optax')}"
              + (f", torch {meta['torch']} ({meta['torch_threads']} threads)" if meta.get("torch") else "")
              + f", python {meta['python']}",
              f"- {meta['rounds']} rounds of >= {meta['seconds']} s per configuration, interleaved; synthetic "
              f"uniform [0, 1) images, one batch per run; XLA_FLAGS={meta['xla_flags']!r}",
              f"- load average (1 min) at the start {meta['loadavg_start'][0]:.2f}, per round "
              f"{', '.join(f'{a:.2f}' for a in la)}, at the end {meta['loadavg_end'][0]:.2f}"
              + (" (a shared machine: other jobs were running)" if max([meta['loadavg_start'][0]] + la) >
                 0.5 * (meta['cpu_count'] or 1) else ""),
              f"- first-step losses agree across forms (max relative spread {meta['loss_spread']:.1e}), so the "
              "forms compute the same step"]
    if meta.get("torch") and max([meta["loadavg_start"][0]] + la) > 0.5 * (meta["cpu_count"] or 1):
        lines.append("- with other jobs on the cores, PyTorch's multi-threaded rate suffers most (its OpenMP threads "
                     "wait on each other at every op): its ratios above are not its quiet-machine ratio")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="lenet,cnn2", help=f"comma list of {', '.join(ARCHS)}")
    p.add_argument("--forms", default="nn,im2col,auto", help=f"comma list of {', '.join(FORMS)}")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--runs", type=int, default=10, help="R for the loop and vmap modes")
    p.add_argument("--batch_size", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.5, help="least time per configuration and round")
    p.add_argument("--torch", default="auto", choices=("auto", "yes", "no"),
                   help="time PyTorch too (auto: when it is importable)")
    p.add_argument("--torch_threads", default="",
                   help="comma list of PyTorch thread counts, each a configuration (default: the cores)")
    p.add_argument("--malloc", default="default", choices=("default", "no_mmap", "both"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_cpu_conv"), help="writes OUT.json, OUT.md")
    a = p.parse_args(argv)
    archs = [s for s in a.archs.split(",") if s]
    forms = [s for s in a.forms.split(",") if s]
    modes = [s for s in a.modes.split(",") if s]
    for vals, allowed, what in ((archs, ARCHS, "archs"), (forms, FORMS, "forms"), (modes, MODES, "modes")):
        if not vals or any(v not in allowed for v in vals):
            p.error(f"--{what} must be a comma list of {list(allowed)}, got {vals}")
    if a.runs < 1 or a.rounds < 1 or a.seconds <= 0:
        p.error("--runs and --rounds must be >= 1 and --seconds > 0")
    use_torch = a.torch == "yes" or (a.torch == "auto" and torch_available())
    if a.torch == "yes" and not torch_available():
        p.error("--torch=yes but PyTorch is not importable")
    if jax.default_backend() != "cpu":
        print(f"note: JAX's default backend is {jax.default_backend()}, not cpu: this benchmark is about XLA:CPU",
              flush=True)
    mallocs = ["default", "no_mmap"] if a.malloc == "both" else [a.malloc]
    if a.malloc != "default" and not set_malloc("default"):
        p.error("--malloc needs glibc's mallopt (Linux)")
    threads = os.cpu_count() or 1
    torch_threads = [int(t) for t in a.torch_threads.split(",") if t] or [threads]
    load_start = os.getloadavg()
    if load_start[0] > 0.25 * threads:
        print(f"note: load average {load_start[0]:.2f} on {threads} cores: other work is running, the timings are "
              "noisy", flush=True)

    rng = np.random.default_rng(0)
    n_runs = max(a.runs if any(m != "single" for m in modes) else 1, 1)
    x_runs = rng.random((n_runs, a.batch_size, 28, 28, 1), dtype=np.float32)

    configs: list[Config] = []
    set_malloc(mallocs[0])
    for arch in archs:
        for form in forms:
            for mode in modes:
                if form == "auto" and mode == "vmap":
                    assert resolve_conv_impl("auto", "cpu", in_features=16, vmapped=True) == "im2col"
                    continue  # = the im2col row (see the docstring)
                t = time.perf_counter()
                cfg = JaxConfig(arch, form, mode, a.runs, x_runs)
                configs.append(cfg)
                print(f"compiled {arch:5s} {form:6s} {mode:6s} R={cfg.runs:<3d} in {cfg.compile_s:5.1f} s "
                      f"(setup {time.perf_counter() - t:5.1f} s), first loss {cfg.first_loss:.6f}", flush=True)
        if use_torch:
            for which in (("same", "ref") if arch == "lenet" else ("same",)):
                for nt in torch_threads:
                    try:
                        configs.append(TorchConfig(arch, which, x_runs[0], nt, tag=nt != threads))
                    except SystemExit as e:  # bench_vs_pytorch exits with a message when the reference is missing
                        print(f"skipping PyTorch {which} for {arch}: {e}", flush=True)

    loadavg_rounds = []
    for rnd in range(a.rounds):
        for malloc in (mallocs if rnd % 2 == 0 else mallocs[::-1]):  # alternate which setting goes first
            set_malloc(malloc)
            for cfg in (configs if rnd % 2 == 0 else configs[::-1]):  # and the order of the configurations
                time_round(cfg, a.seconds, malloc, warm=len(mallocs) > 1)
        loadavg_rounds.append(os.getloadavg()[0])
        print(f"round {rnd + 1}/{a.rounds} done (load average {loadavg_rounds[-1]:.2f})", flush=True)
    set_malloc("default")

    rows = [summarize(c, m, a.batch_size) for c in configs for m in mallocs]
    rat = ratios(rows)
    spread = 0.0  # over the forms of one encoder and mode (the modes differ in their runs' initial keys)
    for arch in archs:
        for mode in modes:
            ls = [c.first_loss for c in configs if c.arch == arch and c.mode == mode and isinstance(c, JaxConfig)]
            if ls:
                spread = max(spread, (max(ls) - min(ls)) / abs(statistics.mean(ls)))
    prov = provenance(argv if argv is None else ["bench_cpu_conv.py", *argv])
    meta = {**prov, "cpu_model": cpu_model(), "xla_flags": os.environ.get("XLA_FLAGS"),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()), "loadavg_rounds": loadavg_rounds,
            "rounds": a.rounds, "seconds": a.seconds, "batch": a.batch_size, "runs": a.runs, "loss_spread": spread,
            "archs": {k: {"conv_features": ARCHS[k][0], "dense_features": ARCHS[k][1]} for k in archs}}
    if use_torch:
        import torch
        meta.update(torch=torch.__version__, torch_threads=",".join(map(str, torch_threads)))
    md = markdown(rows, rat, meta)
    atomic_write(a.out + ".json", json.dumps({"meta": meta, "rows": rows, "ratios": rat}, indent=1) + "\n")
    atomic_write(a.out + ".md", md)
    print("\n" + md)
    print(f"wrote {a.out}.json and {a.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
