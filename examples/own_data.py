#!/usr/bin/env python
"""README's "Your own data" quickstart, end to end: fit, thresholds, probabilities, explanations, save / load.

    python examples/own_data.py [--out own_data_out]

The data stand in for a user's table: 500 normal rows and 25 known anomalies of 8 sensor readings; each anomaly
is a normal row with one reading pushed far out, so the explanation can be checked against the truth.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from imdad_jax import IMDAD
from imdad_jax.plots import attribution_plot

FEATURES = ["temp", "pressure", "vibration", "current", "voltage", "flow", "humidity", "rpm"]


def make(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n normals, m anomalies (one reading each pushed to +-5..7 standard deviations), which reading."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(8, 8)) / 3
    xn, xa = rng.normal(size=(n, 8)) @ mix + rng.normal(size=(n, 8)), rng.normal(size=(m, 8)) @ mix
    which = rng.integers(0, 8, m)
    xa[np.arange(m), which] += rng.choice([-1, 1], m) * rng.uniform(5, 7, m)
    return np.concatenate([xn, xa]).astype(np.float32), np.r_[np.zeros(n, int), np.ones(m, int)], which


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="own_data_out")
    out = Path(p.parse_args().out)
    X, y, _ = make(500, 25, 0)
    X_new, y_new, which = make(200, 20, 1)

    det = IMDAD().fit(X, y)  # y: 1 = a known anomaly, 0 = normal or unlabelled
    scores = det.decision_function(X_new)  # higher = more anomalous
    seeds = [roc_auc_score(y_new, d.decision_function(X_new)) for d in IMDAD().fit_many(X, y, seeds=range(5))]
    print(f"AUC on new data {roc_auc_score(y_new, scores):.4f} (seeds 0-4: {np.mean(seeds):.4f} +- "
          f"{np.std(seeds):.4f}; fit_many's run 0 is this detector: {seeds[0] == roc_auc_score(y_new, scores)})")
    for name, d in [("sphere (default)", det), ("contamination=0.05", IMDAD(contamination=0.05).fit(X, y)),
                    ("gaussian", IMDAD(threshold="gaussian").fit(X, y))]:
        flagged = d.predict(X_new)
        print(f"threshold {name:<19} {d.threshold_:8.4f}: flagged {flagged.sum():3d} of {len(X_new)}, "
              f"{(flagged & y_new).sum()} of them anomalies; training rows flagged {d.labels_.mean():.1%}")
    proba = det.predict_proba(X_new)[:, 1]
    print(f"P(anomaly) of the first anomaly {proba[200]:.3f}, of the first normal {proba[0]:.3f}; "
          f"confidence of their labels {det.predict_confidence(X_new[[200, 0]]).round(3).tolist()}")

    attr = det.explain(X_new[y_new == 1])  # (20, 8): each reading's part of the score
    hit = attr.argmax(axis=1) == which
    flagged = det.predict(X_new[y_new == 1]) == 1
    print(f"explain: the top feature is the pushed reading in {hit[flagged].sum()} of the {flagged.sum()} anomalies "
          f"flagged ({hit.sum()} of all {len(which)}); row 0: {FEATURES[attr[0].argmax()]} (pushed: "
          f"{FEATURES[which[0]]})")
    fig = attribution_plot(attr, out / "explain.png", FEATURES, rows=range(4), top=5,
                           scores=scores[y_new == 1], title="What makes each anomaly anomalous")
    print(f"wrote {fig}")

    det.save(out / "detector")
    back = IMDAD.load(out / "detector")
    print(f"reloaded: same scores {np.array_equal(back.decision_function(X_new), scores)}, "
          f"same labels {np.array_equal(back.predict(X_new), det.predict(X_new))}")
    print(f"sphere: radius {det.radius_:.3f}, margin {det.margin_:.3f}, |center| {np.linalg.norm(det.center_):.3f}")


if __name__ == "__main__":
    main()
