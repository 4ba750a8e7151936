#!/usr/bin/env python
"""Why the LeNet-size step is not 2x PyTorch on CPU: each convolution layer, each form XLA:CPU can run, beside
PyTorch's own (oneDNN) convolution of the same layer, in one process.

    python benchmarks/profile_cpu_layers.py                 # writes benchmarks/results_cpu_layers.{json,md}
    python benchmarks/profile_cpu_layers.py --seconds=0.5 --out=/tmp/layers

Layers (batch 150, 5x5 kernels, SAME padding, no bias): conv1 of the LeNet-size encoder (1 -> 8 channels, 28x28),
its conv2 (8 -> 4, 14x14), CNN2's conv1 (1 -> 16, 28x28) and conv2 (16 -> 32, 14x14). Passes: ``forward``;
``kernel grad`` (the forward and the kernel's gradient: what a first layer needs in a training step);
``fwd + both grads`` (the forward and the gradients of kernel and input: what a later layer needs). PyTorch's
rows time the same: ``conv2d`` then ``backward``. Forms:

* ``xla``: ``lax.conv_general_dilated`` (what ``nn.Conv`` and ``Conv(impl="xla")`` run);
* ``im2col``: ``imdad_jax.models.layers.conv2d_im2col`` (tap-major patch matrix, one matmul; ``Conv(impl="auto")``
  picks it for layers with at most 2 input channels);
* ``im2col_nhwc``: the patch matrix laid out (N*H*W, 25*Cin) by concatenating the 25 shifted windows on the
  channel axis, then one matmul;
* ``shift_sum``: the convolution as one fused sum of 25*Cin shifted, scaled copies of the input (no patch
  matrix; only for Cin <= 8, where the sum stays small);
* ``patches_only``: the NHWC patch matrix alone (no matmul): its memory traffic is im2col's floor.

With PyTorch importable: ``torch.nn.functional.conv2d`` of the same layer forward and forward + backward
(``torch.set_num_threads`` = the cores), and MNIST_LeNet's whole step without a DataLoader (forward, backward,
Adam). Each timing: compile/warm once, then repeat for ``--seconds``; the median of ``--rounds`` such rounds.
Findings: ``benchmarks/RESULTS.md`` ("Why not 2x on this CPU").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.io.host import tune_host_allocator  # noqa: E402
from imdad_jax.io.results import cpu_model  # noqa: E402
from imdad_jax.models.layers import conv2d_im2col  # noqa: E402

BATCH, K, PAD = 150, 5, 2
LAYERS = {  # name: (Cin, Cout, H = W)
    "lenet conv1 1->8 @28": (1, 8, 28),
    "lenet conv2 8->4 @14": (8, 4, 14),
    "cnn2 conv1 1->16 @28": (1, 16, 28),
    "cnn2 conv2 16->32 @14": (16, 32, 14),
}
PASSES = ("forward", "kernel grad", "fwd + both grads")
DN = ("NHWC", "HWIO", "NHWC")


def conv_xla(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return lax.conv_general_dilated(x, w, (1, 1), [(PAD, PAD), (PAD, PAD)], dimension_numbers=DN)


def conv_im2col(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return conv2d_im2col(x, w, [(PAD, PAD), (PAD, PAD)])


def patches_nhwc(x: jnp.ndarray) -> jnp.ndarray:
    n, h, wd, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    return jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(K) for j in range(K)], axis=-1)


def conv_im2col_nhwc(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    n, h, wd, cin = x.shape
    p = patches_nhwc(x).reshape(n * h * wd, K * K * cin)
    return (p @ w.reshape(K * K * cin, -1)).reshape(n, h, wd, -1)


def conv_shift_sum(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    n, h, wd, cin = x.shape
    xp = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
    terms = [xp[:, i:i + h, j:j + wd, c:c + 1] * w[i, j, c] for i in range(K) for j in range(K) for c in range(cin)]
    y = terms[0]
    for t in terms[1:]:
        y = y + t
    return y


FORMS: dict[str, Callable] = {"xla": conv_xla, "im2col": conv_im2col, "im2col_nhwc": conv_im2col_nhwc,
                              "shift_sum": conv_shift_sum}


def timed(fn: Callable[[], Any], seconds: float, rounds: int) -> float:
    """Median over rounds of the mean time per call (ms), after one warm-up call."""
    fn()
    per = []
    for _ in range(rounds):
        n, t = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if time.perf_counter() - t >= seconds:
                break
        per.append((time.perf_counter() - t) / n * 1e3)
    return statistics.median(per)


def jax_pass(form: Callable, which: str) -> Callable:
    # The output is returned beside the gradients: XLA would otherwise drop the forward (a convolution's
    # gradients do not need its output), and a training step always computes it.
    if which == "forward":
        return jax.jit(form)
    if which == "kernel grad":
        def kernel_grad(x, w, g):
            y, vjp = jax.vjp(lambda w: form(x, w), w)
            return y, vjp(g)
        return jax.jit(kernel_grad)

    def both_grads(x, w, g):
        y, vjp = jax.vjp(form, x, w)
        return y, vjp(g)
    return jax.jit(both_grads)


def jax_rows(seconds: float, rounds: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for layer, (cin, cout, hw) in LAYERS.items():
        x = jnp.asarray(rng.random((BATCH, hw, hw, cin), np.float32))
        w = jnp.asarray(rng.standard_normal((K, K, cin, cout)).astype(np.float32) * 0.1)
        g = jnp.asarray(rng.standard_normal((BATCH, hw, hw, cout)).astype(np.float32))
        ref = np.asarray(conv_xla(x, w))
        for name, form in FORMS.items():
            if name == "shift_sum" and cin > 8:
                continue
            err = float(np.max(np.abs(np.asarray(form(x, w)) - ref)) / np.max(np.abs(ref)))
            for which in PASSES:
                if which == "fwd + both grads" and cin == 1:
                    continue  # a first layer never needs its input's gradient
                f = jax_pass(form, which)
                args = (x, w) if which == "forward" else (x, w, g)
                ms = timed(lambda: jax.block_until_ready(f(*args)), seconds, rounds)
                rows.append(dict(layer=layer, framework="jax", form=name, passes=which, ms=ms, max_rel_err=err))
                print(f"{layer:24s} {name:12s} {which:18s} {ms:8.2f} ms", flush=True)
        f = jax.jit(patches_nhwc)
        ms = timed(lambda: jax.block_until_ready(f(x)), seconds, rounds)
        rows.append(dict(layer=layer, framework="jax", form="patches_only", passes="forward", ms=ms,
                         mbytes=BATCH * hw * hw * K * K * cin * 4 / 1e6))
        print(f"{layer:24s} {'patches_only':12s} {'forward':18s} {ms:8.2f} ms", flush=True)
    return rows


def torch_rows(seconds: float, rounds: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    rows = []
    for layer, (cin, cout, hw) in LAYERS.items():
        x = torch.from_numpy(rng.random((BATCH, cin, hw, hw), np.float32))
        w = torch.from_numpy(rng.standard_normal((cout, cin, K, K)).astype(np.float32) * 0.1).requires_grad_(True)
        xg = x.clone().requires_grad_(cin > 1)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, padding=PAD)

        def fwd_bwd():
            w.grad = None
            xg.grad = None
            F.conv2d(xg, w, padding=PAD).sum().backward()

        for which, fn in (("forward", fwd), ("kernel grad" if cin == 1 else "fwd + both grads", fwd_bwd)):
            ms = timed(fn, seconds, rounds)
            rows.append(dict(layer=layer, framework="torch", form="oneDNN", passes=which, ms=ms))
            print(f"{layer:24s} {'torch':12s} {which:18s} {ms:8.2f} ms", flush=True)

    # MNIST_LeNet's whole step (forward, backward, Adam), no DataLoader: the reference trainer's floor
    import torch.nn as tnn

    class LeNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(1, 8, 5, bias=False, padding=2)
            self.bn1 = tnn.BatchNorm2d(8, eps=1e-4, affine=False)
            self.conv2 = tnn.Conv2d(8, 4, 5, bias=False, padding=2)
            self.bn2 = tnn.BatchNorm2d(4, eps=1e-4, affine=False)
            self.fc1 = tnn.Linear(4 * 7 * 7, 32, bias=False)

        def forward(self, x):
            x = F.max_pool2d(F.leaky_relu(self.bn1(self.conv1(x))), 2)
            x = F.max_pool2d(F.leaky_relu(self.bn2(self.conv2(x))), 2)
            return self.fc1(x.flatten(1))

    net = LeNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-6)
    xb = torch.from_numpy(rng.random((BATCH, 1, 28, 28), np.float32))
    c = torch.full((32,), 0.1)

    def step():
        opt.zero_grad()
        ((net(xb) - c) ** 2).sum(1).mean().backward()
        opt.step()

    def forward():
        with torch.no_grad():
            net(xb)

    for which, fn in (("MNIST_LeNet step", step), ("MNIST_LeNet forward", forward)):
        ms = timed(fn, seconds, rounds)
        rows.append(dict(layer="whole net", framework="torch", form="oneDNN", passes=which, ms=ms))
        print(f"{'whole net':24s} {'torch':12s} {which:18s} {ms:8.2f} ms", flush=True)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# CPU convolution layers, form by form ({meta['utc']}; {meta['cpu_model']}, {meta['cpu_count']} cores)",
             "", "Milliseconds per call, batch 150, 5x5 SAME, median of rounds (`benchmarks/profile_cpu_layers.py`).",
             "", "| layer | pass | " + " | ".join(list(FORMS) + ["torch (oneDNN)"]) + " |",
             "|---|---|" + "---|" * (len(FORMS) + 1)]
    get = {(r["layer"], r["form"], r["passes"]): r["ms"] for r in rows}
    for layer in LAYERS:
        for which in PASSES:
            cells = [get.get((layer, f, which)) for f in list(FORMS) + ["oneDNN"]]
            if all(c is None for c in cells):
                continue
            lines.append(f"| {layer} | {which} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    patch = [r for r in rows if r["form"] == "patches_only"]
    if patch:
        lines += ["", "The NHWC patch matrix alone: " + "; ".join(
            f"{r['layer']}: {r['ms']:.2f} ms for {r['mbytes']:.1f} MB ({r['mbytes'] / r['ms']:.1f} GB/s)" for r in patch)]
    whole = [r for r in rows if r["layer"] == "whole net"]
    if whole:
        lines += ["", "PyTorch, MNIST_LeNet without a DataLoader: " + "; ".join(
            f"{r['passes']} {r['ms']:.2f} ms" for r in whole)]
    v = meta["versions"]
    lines += ["", f"- command: `{meta['command']}`",
              f"- commit: `{meta['git_commit']}`{' (tree dirty)' if meta['git_dirty'] else ''}",
              f"- jax {v.get('jax')} / jaxlib {v.get('jaxlib')}, torch {meta.get('torch')}, python {meta['python']}; "
              f"XLA_FLAGS={meta.get('xla_flags')!r}; load average {meta['loadavg'][0]:.2f}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="timing per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch rows")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_cpu_layers"), help="writes OUT.json, OUT.md")
    a = p.parse_args(argv)
    tune_host_allocator()  # as the CLIs do; it helps both frameworks alike
    rows = jax_rows(a.seconds, a.rounds)
    torch_version = None
    if not a.no_torch:
        try:
            import torch
            torch_version = torch.__version__
        except ImportError:
            print("PyTorch not importable: no torch rows", flush=True)
        else:
            rows += torch_rows(a.seconds, a.rounds)
    meta = {**provenance(argv), "cpu_model": cpu_model(), "torch": torch_version,
            "xla_flags": os.environ.get("XLA_FLAGS"), "loadavg": list(os.getloadavg())}
    atomic_write(a.out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = markdown(rows, meta)
    atomic_write(a.out + ".md", md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
