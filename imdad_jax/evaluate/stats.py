"""Statistics across methods (paper Table IV, Fig. 2): average ranks, Friedman, Wilcoxon and Nemenyi post hoc.

Input everywhere: an AUC matrix (blocks x methods), a block being one (dataset, normal class) cell of the tables.
The tests themselves are scipy's and scikit-posthocs'; this module only arranges the data and the outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats


@dataclass
class Comparison:
    """Everything a significance table and a critical-difference diagram need."""

    methods: list[str]
    average_rank: dict[str, float]  # 1 = best (highest AUC)
    friedman_statistic: float
    friedman_p: float
    wilcoxon_p: dict[str, float]  # reference method vs each other (two-sided, Holm-adjusted)
    nemenyi_p: np.ndarray  # (k, k) pairwise p-values, Nemenyi after Friedman
    critical_difference: float  # Nemenyi CD at alpha
    alpha: float
    n_blocks: int
    reference: str


def auc_matrix(aucs: Mapping[str, Mapping[tuple, float]]) -> tuple[np.ndarray, list[str], list[tuple]]:
    """``{method: {block: auc}}`` -> (blocks x methods) array over the blocks every method has."""
    methods = list(aucs)
    blocks = sorted(set.intersection(*(set(v) for v in aucs.values())), key=str)
    if len(methods) < 2 or not blocks:
        raise ValueError(f"need >= 2 methods sharing >= 1 block, got methods {methods} with {len(blocks)} shared blocks")
    return np.array([[aucs[m][b] for m in methods] for b in blocks], float), methods, blocks


def average_ranks(matrix: np.ndarray) -> np.ndarray:
    """Mean rank of each method over the blocks, rank 1 = highest AUC, ties averaged (Demsar 2006)."""
    return np.mean([stats.rankdata(-row) for row in matrix], axis=0)


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi CD = q_alpha sqrt(k (k + 1) / (6 n)), q_alpha the studentized range quantile / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def compare(matrix: np.ndarray, methods: Sequence[str], reference: str = "imdad", alpha: float = 0.05) -> Comparison:
    """Friedman over all methods, then Wilcoxon (reference vs others, Holm) and Nemenyi (all pairs)."""
    import scikit_posthocs as sp

    matrix = np.asarray(matrix, float)
    n, k = matrix.shape
    if k < 3:
        raise ValueError(f"the Friedman test needs >= 3 methods, got {k}")
    if reference not in methods:
        raise ValueError(f"reference method {reference!r} is not among {list(methods)}")
    fr = stats.friedmanchisquare(*matrix.T)
    ref = list(methods).index(reference)
    raw = {}
    for j, m in enumerate(methods):
        if j != ref:
            diff = matrix[:, ref] - matrix[:, j]
            raw[m] = 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(matrix[:, ref], matrix[:, j]).pvalue)
    adjusted = _holm(raw)
    nem = sp.posthoc_nemenyi_friedman(matrix).to_numpy()
    ranks = average_ranks(matrix)
    return Comparison(list(methods), {m: float(r) for m, r in zip(methods, ranks)}, float(fr.statistic),
                      float(fr.pvalue), adjusted, nem, critical_difference(k, n, alpha), alpha, n, reference)


def _holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (family-wise error over the reference's comparisons)."""
    names = sorted(pvalues, key=pvalues.get)
    m = len(names)
    out, running = {}, 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        out[name] = running
    return out


def significance_table(c: Comparison) -> str:
    """Markdown: average rank per method, and the reference's Wilcoxon p-value against each."""
    lines = [f"Friedman chi² = {c.friedman_statistic:.2f}, p = {c.friedman_p:.2e} over {c.n_blocks} blocks; "
             f"Nemenyi CD ({c.alpha:g}) = {c.critical_difference:.2f} ranks.", "",
             f"| method | average rank | Wilcoxon p ({c.reference} vs method, Holm) |", "|---|---|---|"]
    for m in sorted(c.methods, key=c.average_rank.get):
        p = "—" if m == c.reference else f"{c.wilcoxon_p[m]:.2e}"
        lines.append(f"| {m} | {c.average_rank[m]:.2f} | {p} |")
    return "\n".join(lines)
