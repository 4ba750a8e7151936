"""The critical-difference diagram (paper Fig. 2), drawn by scikit-posthocs."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def cd_diagram(average_rank: dict[str, float], nemenyi_p: np.ndarray, path: str | Path, title: str = "",
               alpha: float = 0.05) -> Path:
    """Write the diagram (methods on the average-rank axis, bars joining methods not significantly different)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import scikit_posthocs as sp

    names = list(average_rank)
    ranks = pd.Series(average_rank)
    sig = pd.DataFrame(np.asarray(nemenyi_p), index=names, columns=names)
    fig, ax = plt.subplots(figsize=(8, 2.5))
    sp.critical_difference_diagram(ranks, sig, ax=ax, alpha=alpha)
    if title:
        ax.set_title(title)
    path = Path(path)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
