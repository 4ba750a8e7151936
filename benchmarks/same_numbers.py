#!/usr/bin/env python
"""Do two checkouts train to the same numbers? A refactor's check: final parameters and scores at fixed seeds.

    PYTHONPATH=/path/to/old/checkout python benchmarks/same_numbers.py /tmp/old.npz
    python benchmarks/same_numbers.py /tmp/new.npz
    python benchmarks/same_numbers.py --compare /tmp/old.npz /tmp/new.npz

IMD-AD and Deep SVDD x FC3 and a small CNN2 x BatchNorm off and on x (vmap + scanned epoch, loop + steps): 3 runs
of 2 epochs on a fixed synthetic set, 4 CPU devices, one used. Writes every final parameter leaf and every run's
scores (144 arrays); ``--compare`` says which differ, bit for bit.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def compute(path: str) -> None:
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    from imdad_jax.data import one_vs_rest_runs
    from imdad_jax.models.detector import build_encoder
    from imdad_jax.objectives import get_objective
    from imdad_jax.train import fit
    from imdad_jax.train.apply import apply_runs

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (240, 8, 8, 1)).astype(np.float32)
    y = np.repeat(np.arange(4), 60)
    x[np.arange(240), y * 2, y * 2, 0] += 3
    out = {}
    for method in ("imdad", "deep_svdd"):
        obj = get_objective(method)
        hp = dict(lr=1e-2, weight_decay=1e-6, **obj.DEFAULT_HP)
        for arch, xx in (("fc3", x.reshape(240, -1)), ("cnn2", x)):
            for bn in (False, True):
                _, data, keys = one_vs_rest_runs(xx, y, (0, 1, 2), (0,), anomaly_fraction=0.5)
                kw = dict(conv_features=(2, 4)) if arch == "cnn2" else {}
                model = obj.make_model(build_encoder(arch, dense_features=(8, 4), batch_norm=bn, **kw), xx.shape[1:],
                                       obj.Options())
                h = {k: np.full(data.n_runs, v, np.float32) for k, v in hp.items()}
                for strategy, epoch_mode in (("vmap", "scan"), ("loop", "steps")):
                    res = fit(model, obj, obj.Options(), data, h, keys, epochs=2, batch_size=16, milestones=(1,),
                              strategy=strategy, epoch_mode=epoch_mode, devices=jax.devices()[:1])
                    scores = apply_runs(lambda p, xb: obj.score(p[0], p[1], model, xb, obj.Options()),
                                        (res.state.params, res.state.obj_state), xx, strategy=strategy)
                    key = f"{method}_{arch}_bn{int(bn)}_{strategy}"
                    for i, leaf in enumerate(jax.tree.leaves(res.state.params)):
                        out[f"{key}_p{i}"] = np.asarray(leaf)
                    out[f"{key}_scores"] = scores
    np.savez(path, **out)
    print(f"{len(out)} arrays -> {path}")


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    missing = sorted(set(a.files) ^ set(b.files))
    differ = [k for k in a.files if k in b.files and not np.array_equal(a[k], b[k])]
    print(f"{len(a.files)} arrays; {len(differ)} differ{': ' + ', '.join(differ[:10]) if differ else ''}"
          f"{'; missing on one side: ' + ', '.join(missing) if missing else ''}")
    return 1 if differ or missing else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    compute(sys.argv[1])
