#!/usr/bin/env bash
# Fresh-venv walk-through of README's quickstarts: a new clone, a new venv, only the README's commands.
set -x
cd /tmp/walk && rm -rf repo venv && git clone -q /work/main repo && cd repo
git log --oneline | head -1
python3 -m venv /tmp/walk/venv && . /tmp/walk/venv/bin/activate
export IMDAD_NO_COMPILE_CACHE=  # default behaviour
time pip install -q -e . 2>&1 | tail -2
python -c "import jax, flax, optax, orbax.checkpoint; print('jax', jax.__version__, 'flax', flax.__version__)"
mkdir -p /tmp/walk/out && cd /tmp/walk/repo
# 1. reproduce the paper (tabular: Table III protocol, 5-fold CV, 200 epochs)
time python experiments/run.py --dataset=card --all_classes --no_progress --out_dir=/tmp/walk/out
# 2. own data: the estimator and the CLI
cd /tmp/walk/out && time python /tmp/walk/own_data.py
python - <<'PY'
import numpy as np
def write(path, seed, n=300, m=15):
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(0, 1, (n, 4)), rng.normal(3, 1, (m, 4))]
    y = np.r_[np.zeros(n, int), np.ones(m, int)]
    with open(path, "w") as f:
        f.write("id,temp,pressure,vibration,current,target\n")
        for i, (xi, yi) in enumerate(zip(x, y)):
            f.write(f"s{i}," + ",".join(f"{v:.3f}" for v in xi) + f",{yi}\n")
write("sensors.csv", seed=0)
write("sensors_new.csv", seed=1)
PY
time imdad-jax train --data sensors.csv --label_column target --features temp,pressure,vibration,current --out model --epochs 50
time imdad-jax score --model model --data sensors_new.csv
# 3. sweeps: the estimator's fit_many and the experiment CLI's --tune
time python /tmp/walk/sweep.py
cd /tmp/walk/repo && time python experiments/run.py --dataset=bc --all_classes --tune='lr=1e-3,1e-4;nu1=0.05,0.1' --no_progress --out_dir=/tmp/walk/out
