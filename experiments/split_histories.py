#!/usr/bin/env python
"""Move the per-epoch history out of results files written before histories had their own file.

    python experiments/split_histories.py                 # every results/**/*.json over 100 kB
    python experiments/split_histories.py --min_kb=0 DIR  # every results file under DIR that holds a history

Each file's ``"history"`` goes to ``<stem>.history.json.gz`` beside it (git ignores these under ``results/``) and
the JSON keeps ``"history_file"`` in its place; ``imdad_jax.io.load_history`` reads either layout. The policy:
``results/README.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imdad_jax.io.results import HISTORY_SUFFIX, move_history_out  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=[str(ROOT / "results")], help="results files or folders")
    p.add_argument("--min_kb", type=float, default=100.0, help="only files larger than this (kB, 1000 bytes)")
    a = p.parse_args(argv)
    files = []
    for path in map(Path, a.paths):
        files += sorted(path.rglob("*.json")) if path.is_dir() else [path]
    moved = before = after = 0
    for f in files:
        if f.name.endswith(HISTORY_SUFFIX) or f.stat().st_size <= a.min_kb * 1000:
            continue
        size = f.stat().st_size
        try:
            side = move_history_out(f)
        except ValueError:  # not JSON, or not a dict: not a results file
            continue
        if side is not None:
            moved += 1
            before += size
            after += f.stat().st_size
            print(f"{f}: {size / 1e3:.0f} kB -> {f.stat().st_size / 1e3:.0f} kB (+ {side.name}, "
                  f"{side.stat().st_size / 1e3:.0f} kB)")
    print(f"{moved} files: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
