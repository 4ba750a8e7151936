"""The GPU and TPU programs, compiled ahead of time on a machine without either, and read.

``pip install -e ".[aot]"`` brings the compile-only plugins (libtpu and the CUDA PJRT plugin, pinned to the
installed jax); with them ``jax.experimental.topologies`` gives compile-only devices of a target, and
``programs.lower_train_step`` lowers the sweep's exact training step for them. Nothing runs; XLA's analyses are
read off the compiled program: memory (both), FLOPs and bytes (TPU: ``cost_analysis``; XLA:GPU reports none) and
the cuDNN convolution kernels the GPU program calls. On a machine with the CUDA plugin but no GPU, set
``JAX_PLATFORMS=cpu`` before jax is imported.

Targets (``TARGETS``): ``h100`` (an H100 80GB HBM3 from ``imdad_jax/targets/h100_target.pbtxt``), ``tpu_v5e``,
``tpu_v6e``, ``tpu_v4`` (one chip each). Peak figures are the vendors' published ones (``Target.source``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from types import ModuleType
from typing import Any

import jax
import numpy as np

from imdad_jax.train.runners import Runner
from imdad_jax.train.programs import compile_lowered, lower_train_step, program_bytes
from imdad_jax.train.step import BatchPlan, make_train_step

GiB = 2 ** 30


@dataclass(frozen=True)
class Target:
    """A compile-only accelerator: how to get its devices, its memory and its published peaks.

    ``peak_flops``: {precision: FLOP/s}; ``bandwidth``: HBM bytes/s; ``memory``: bytes on one device; ``usable``:
    the share of it a JAX process gets by default (the allocator's preallocation, ``XLA_PYTHON_CLIENT_MEM_FRACTION``
    0.75 on GPU; TPUs give the process all of HBM).
    """

    name: str
    platform: str
    topology: dict
    memory: int
    usable: float
    peak_flops: dict
    bandwidth: float
    source: str

    def devices(self) -> list:
        """The target's compile-only devices (one chip). Raises ``RuntimeError`` naming the extra to install."""
        import os

        from jax.experimental import topologies
        # libtpu takes a machine-wide lockfile for the TPU it drives; compiling for a TPU that is not here drives
        # none, and a second process (a test worker, a report beside a test run) must not be refused.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        kw = dict(self.topology)
        if self.platform == "cuda":
            kw["target_config"] = resources.files("imdad_jax.targets").joinpath("h100_target.pbtxt").read_text()
        try:
            return list(topologies.get_topology_desc(platform=self.platform, **kw).devices)
        except Exception as e:  # noqa: BLE001 - the plugin's own errors vary by version
            raise RuntimeError(f"cannot compile for {self.name} here ({type(e).__name__}: {str(e).splitlines()[0]}); "
                               'install the compile-only plugins with pip install -e ".[aot]" and run with '
                               "JAX_PLATFORMS=cpu") from e


TARGETS = {
    "h100": Target("h100", "cuda", {"topology": "1x1x1"}, memory=84_929_347_584, usable=0.75,
                   peak_flops={"fp32": 67e12, "tf32": 494.7e12}, bandwidth=3.35e12,
                   source="NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 67 TFLOP/s FP32, 989 TFLOP/s TF32 with "
                          "sparsity (494.7 dense), 3.35 TB/s HBM3; memory from the target description"),
    "tpu_v5e": Target("tpu_v5e", "tpu", {"topology_name": "v5e:1x1", "chips_per_host_bounds": (1, 1, 1)},
                      memory=16 * GiB, usable=1.0, peak_flops={"bf16": 197e12}, bandwidth=819e9,
                      source="Google Cloud TPU v5e documentation: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s per chip"),
    "tpu_v6e": Target("tpu_v6e", "tpu", {"topology_name": "v6e:1x1", "chips_per_host_bounds": (1, 1, 1)},
                      memory=32 * GiB, usable=1.0, peak_flops={"bf16": 918e12}, bandwidth=1640e9,
                      source="Google Cloud TPU v6e (Trillium) documentation: 918 TFLOP/s bf16, 32 GiB HBM at "
                             "1640 GB/s per chip"),
    "tpu_v4": Target("tpu_v4", "tpu", {"topology_name": "v4:1x1x1", "chip_config_name": "megacore",
                                       "chips_per_host_bounds": (1, 1, 1)},
                     memory=32 * GiB, usable=1.0, peak_flops={"bf16": 275e12}, bandwidth=1228e9,
                     source="Google Cloud TPU v4 documentation: 275 TFLOP/s bf16, 32 GiB HBM2 at 1228 GB/s per chip"),
}


def available(name: str = "h100") -> str | None:
    """None when ``name`` compiles here, else the reason (for a test's skip). Loads the target's plugin: call it
    when about to compile, not at import or test collection."""
    try:
        TARGETS[name].devices()
        return None
    except RuntimeError as e:
        return str(e)


_CONV = re.compile(r'custom_call_target="__cudnn\$(conv[A-Za-z]*)"')


def gpu_conv_kernels(hlo_text: str) -> list[dict]:
    """The cuDNN convolutions a compiled XLA:GPU program calls: ``{"kind": forward | backward-input |
    backward-filter, "target": the custom call, "groups": feature_group_count (1: ungrouped), "window": ...}``."""
    out = []
    for line in hlo_text.splitlines():
        m = _CONV.search(line)
        if not m or " custom-call(" not in line:
            continue
        target = m.group(1)
        kind = ("backward-filter" if "BackwardFilter" in target else "backward-input" if "BackwardInput" in target
                else "forward")
        groups = re.search(r"feature_group_count=(\d+)", line)
        window = re.search(r"window=\{([^}]*)\}", line)
        out.append({"kind": kind, "target": target, "groups": int(groups.group(1)) if groups else 1,
                    "window": window.group(1) if window else ""})
    return out


def summarize_kernels(kernels: list[dict]) -> str:
    """``forward x3 (grouped 8), backward-filter x2`` style counts."""
    counts: dict[tuple, int] = {}
    for k in kernels:
        key = (k["kind"], k["groups"])
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{kind} x{n}" + (f" (groups {g})" if g > 1 else "") for (kind, g), n in sorted(counts.items())]
    return ", ".join(parts) if parts else "none"


def jaxpr_flops(fn: Any, *args: Any) -> float:
    """FLOPs of the matmuls and convolutions in ``fn``'s jaxpr (2 per multiply-add), nested calls included: the
    model's analytic count, independent of any backend. Elementwise work is not counted."""
    jaxpr = jax.make_jaxpr(fn)(*args)

    def walk(jx: Any, times: float = 1.0) -> float:
        total = 0.0
        for eqn in jx.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (lc, _), (lb, _) = eqn.params["dimension_numbers"]
                a = eqn.invars[0].aval
                contract = np.prod([a.shape[d] for d in lc]) if lc else 1
                total += times * 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * float(contract)
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval
                dn = eqn.params["dimension_numbers"]
                out_feat_dim = dn.rhs_spec[0]
                macs_per_out = float(np.prod(rhs.shape)) / rhs.shape[out_feat_dim]
                total += times * 2.0 * float(np.prod(eqn.outvars[0].aval.shape)) * macs_per_out
            elif name == "scan":
                total += walk(eqn.params["jaxpr"].jaxpr, times * eqn.params["length"])
            elif name == "cond":
                # One branch runs (lax.platform_dependent's CPU and accelerator forms are branches): the dearest.
                total += max(walk(b.jaxpr, times) for b in eqn.params["branches"])
            else:
                for p in eqn.params.values():
                    for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                        inner = getattr(sub, "jaxpr", None)
                        if inner is not None and hasattr(inner, "eqns"):
                            total += walk(inner, times)
                        elif hasattr(sub, "eqns"):
                            total += walk(sub, times)
        return total
    return walk(jaxpr.jaxpr)


def step_flops(model: Any, objective: ModuleType, opts: Any, plan: BatchPlan, x_shape: tuple[int, ...],
               hp_names: tuple[str, ...]) -> float:
    """Analytic matmul + convolution FLOPs of one run's training step (forward and gradient) at ``plan``'s batch."""
    from imdad_jax.train.programs import step_shapes
    one, acc, idx = step_shapes(model, objective, opts, plan, x_shape, hp_names)
    step = make_train_step(model, objective, opts, (), 0.1, plan.labels, plan.steps)
    zeros = lambda t: jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), t)  # noqa: E731
    return jaxpr_flops(step, zeros(one), zeros(acc), np.zeros(x_shape, np.float32), np.zeros(idx.shape, idx.dtype))


def compile_for(target: str | Target, model: Any, objective: ModuleType, opts: Any, runner: Runner, n_runs: int,
                plan: BatchPlan, x_shape: tuple[int, ...], hp_names: tuple[str, ...]) -> dict[str, Any]:
    """Compile the runner's step over ``n_runs`` runs for ``target`` (one device) and read it.

    Returns ``{"compiled": bool, "error", "compile_s", "temp_bytes", "argument_bytes", "output_bytes",
    "kernels" (GPU), "flops", "bytes" (TPU, per program: a ``lax.map`` body is counted once, so per run-step
    divide by ``batch_size`` of the map's group, i.e. 1 for ``map`` and ``chunk_runs`` for ``chunked``)}``.
    """
    import time
    tgt = TARGETS[target] if isinstance(target, str) else target
    out: dict[str, Any] = {"compiled": False}
    t0 = time.perf_counter()
    try:
        lowered = lower_train_step(model, objective, opts, runner, n_runs, plan, x_shape, hp_names, tgt.devices())
        compiled = compile_lowered(lowered)
    except Exception as e:  # noqa: BLE001 - a target that does not take the program is a result, not a crash
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        return out
    out["compile_s"] = time.perf_counter() - t0
    out["compiled"] = True
    mem = compiled.memory_analysis()
    if mem is not None:
        out.update(temp_bytes=int(mem.temp_size_in_bytes), argument_bytes=int(mem.argument_size_in_bytes),
                   output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
                   program_bytes=program_bytes(mem))
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if cost:
        out.update(flops=float(cost.get("flops", 0.0)), bytes=float(cost.get("bytes accessed", 0.0)))
    if tgt.platform == "cuda":
        out["kernels"] = gpu_conv_kernels(compiled.as_text())
    return out


def runs_that_fit(target: str | Target, bytes_at: dict[int, int], memory_fraction: float | None = None) -> int:
    """The most runs one device of ``target`` holds, from the program's bytes at two or more run counts (a line
    through them: fixed + per_run x R), within ``usable x memory_fraction`` of its memory (the budget
    ``train.chunks.device_memory_budget`` gives a sweep on the device itself)."""
    from imdad_jax.train.chunks import MEMORY_FRACTION
    tgt = TARGETS[target] if isinstance(target, str) else target
    frac = MEMORY_FRACTION if memory_fraction is None else memory_fraction
    rs = sorted(bytes_at)
    r0, r1 = rs[0], rs[-1]
    per_run = max((bytes_at[r1] - bytes_at[r0]) / max(r1 - r0, 1), 1.0)
    fixed = bytes_at[r0] - per_run * r0
    budget = tgt.memory * tgt.usable * frac
    return max(0, int((budget - fixed) // per_run))
