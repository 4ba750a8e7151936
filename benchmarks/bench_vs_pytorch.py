#!/usr/bin/env python
"""This library against PyTorch, side by side in one process: same machine, same data, same batch size.

    pip install -e ".[bench]"     # PyTorch; CPU wheels: pip install torch --index-url https://download.pytorch.org/whl/cpu
    python benchmarks/bench_vs_pytorch.py --runs=1,10 --seconds=20

Five sides, each timed for every R in ``--runs``:

(a) ``torch_deep_svdd_ref``: the reference PyTorch Deep SVDD trainer (lukasruff/Deep-SVDD-PyTorch, unchanged, in
    ``benchmarks/third_party/deep_svdd_pytorch``): its ``DeepSVDDTrainer`` (one-class) and its ``MNIST_LeNet``,
    fed by a thin dataset over our arrays. Its R runs (normal classes) train one after another.
(b) ``torch_imdad_cnn2``: IMD-AD in plain PyTorch as a user of the paper would write it: the CNN2+FC3 encoder of
    ``imdad_jax.models`` (5x5 conv 16, pool, 5x5 conv 32, pool, dense 128-64-32, bias-free, leaky ReLU), the
    head (w, b, rho), the Lagrangian of ``imdad_jax/objectives/imdad.py`` and projected ascent on the duals,
    ``||c|| = 1`` by projection; one normal class after another.
(c) ``jax_deep_svdd_lenet`` and ``jax_imdad_cnn2``: this library (``imdad_jax.train.fit``), all R runs as one
    program: Deep SVDD with the LeNet-size encoder (MNIST_LeNet's convolutions, pools and dense layer, and its
    two affine-free BatchNorms: ``batch_norm=True``) against (a), and IMD-AD
    with CNN2+FC3 against (b) and (d).
(d) ``torch_imdad_cnn2_vmap``: a PyTorch peer worth beating: (b)'s model and step with all R runs as one program,
    PyTorch's own model-ensembling recipe (the tutorial "Model ensembling": ``torch.func.stack_module_state`` +
    ``functional_call`` + ``torch.vmap``) carried through to training: R stacked copies of encoder + head,
    ``vmap(torch.func.grad_and_value(Lagrangian))`` with each run its own batch of its own rows (drawn as (b)
    draws them: a shuffle of its normals and labelled anomalies together), ``torch.optim.Adam`` over the stacked
    leaves (equal to R Adams: Adam is elementwise), dual ascent and ``||c|| = 1`` on stacked tensors; the data sit
    on the device once and each step gathers its (R, batch) rows there, and no step waits for the device
    (``TorchIMDADEnsemble``, ``TorchRunBatches``; ``--check_d`` checks it against (b)).

Data: Fashion-MNIST's training set from the Debian package (``load_fashion_mnist(None)``), pixels in [0, 1];
``--synthetic`` gives random 28x28 images with ten classes of 6000 instead. Run r is normal class r mod 10 (seed
r // 10) with the paper's 10% labelled anomalies; every side trains run r on the same rows. Deep SVDD trains on
the normals only (6000 a class: 40 steps an epoch at batch 150), IMD-AD on normals and labelled anomalies
(6000 + 5400: 76 steps an epoch).

Timing: each side first warms up (PyTorch (a): the reference's center pass and one epoch, per run; (b):
``--torch_warmup_steps`` steps per run; (d): as many steps of all runs at once, plus its setup; ours: a probe
``fit`` of a few steps, then the measured ``fit``, whose first epoch holds the compilation), then runs about
``--seconds`` of steady state: (a) whole epochs of its trainer, (b) and (d) steps until the time is up, (c) a
fixed number of steps sized from the probe. (a) and (b) split the seconds over their R runs; (d), like ours,
advances all R runs with every step (on cuda it closes each timed phase with ``torch.cuda.synchronize()``).
"warm-up s" is what the warm-up phase cost beyond its steps at the steady rate (compilation, the center pass,
setup). ``torch.set_num_threads(os.cpu_count())``; JAX's default
threading. The projected wall time is the paper's protocol (10 classes x 200 epochs) at the measured rates:
``(10 / R) * warm-up + 10 * 200 * steps_per_epoch / run-steps/s``.

Writes ``--out``.json (everything) and appends a section to ``--md`` (``benchmarks/RESULTS.md``; created with a
header that says what each column means), and prints the section.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REF_DIR = ROOT / "benchmarks" / "third_party" / "deep_svdd_pytorch"
REF_COMMIT = "1901612d595e23675fb75c4ebb563dd0ffebc21e"  # lukasruff/Deep-SVDD-PyTorch, see REF_DIR/README.md

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F
except ImportError:  # the benchmark is optional; the library does not need torch
    sys.exit("bench_vs_pytorch.py needs PyTorch, which imdad_jax does not install. Install it with\n"
             "    pip install -e \".[bench]\"\n"
             "or, for CPU-only wheels,\n"
             "    pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
             "and run this script again.")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from imdad_jax.data import load_fashion_mnist, one_vs_rest_runs, preprocess_images  # noqa: E402
from imdad_jax.data.fashion_mnist import DataNotFoundError  # noqa: E402
from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.io.results import cpu_model  # noqa: E402
from imdad_jax.models import build_encoder  # noqa: E402
from imdad_jax.objectives import get_objective  # noqa: E402
from imdad_jax.train import RunData, fit, plan_batches  # noqa: E402

PAPER_CLASSES, PAPER_EPOCHS = 10, 200
LR, WEIGHT_DECAY = 1e-4, 1e-6  # the paper's Adam settings, every side
LENET = dict(conv_features=(8, 4), dense_features=(32,), batch_norm=True)  # MNIST_LeNet in our CNNEncoder (affine-free BN too)
CNN2 = dict(conv_features=(16, 32), dense_features=(128, 64, 32))  # imdad_jax.models.build_encoder("cnn2")

SIDES = {
    # name: (label, method, framework, compared with: None, a side, or a tuple of sides (one ratio row each))
    "torch_deep_svdd_ref": ("(a) PyTorch Deep SVDD, reference trainer + MNIST_LeNet", "deep_svdd", "torch", None),
    "jax_deep_svdd_lenet": ("(c) ours: Deep SVDD, LeNet-size encoder", "deep_svdd", "jax", "torch_deep_svdd_ref"),
    "torch_imdad_cnn2": ("(b) PyTorch IMD-AD, CNN2+FC3 (plain loop)", "imdad", "torch", None),
    "torch_imdad_cnn2_vmap": ("(d) PyTorch ensembling (torch.func vmap), IMD-AD CNN2+FC3", "imdad", "torch", None),
    "jax_imdad_cnn2": ("(c) ours: IMD-AD, CNN2+FC3", "imdad", "jax", ("torch_imdad_cnn2", "torch_imdad_cnn2_vmap")),
}


# ----------------------------------------------------------------------------------------------- data

def load_images(synthetic: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Training images in [0, 1] (N, 28, 28, 1) float32, labels (N,), and where they came from."""
    if synthetic:
        rng = np.random.default_rng(seed)
        y = rng.permutation(np.repeat(np.arange(10), 6000))
        x = rng.integers(0, 256, size=(len(y), 28, 28, 1), dtype=np.uint8)
        return preprocess_images(x), y, "synthetic: random 28x28 images, 10 classes x 6000"
    try:
        ds = load_fashion_mnist(None)
    except DataNotFoundError as e:
        sys.exit(f"{e}\nOr time on random images of the same shape: add --synthetic.")
    return preprocess_images(ds.x_train), ds.y_train, f"Fashion-MNIST training set ({ds.source})"


def make_runs(x: np.ndarray, y: np.ndarray, n_runs: int) -> tuple[RunData, np.ndarray, list[dict]]:
    """Run r: normal class r % 10, seed r // 10, the paper's 10% labelled anomalies (imdad_jax's protocol)."""
    classes = sorted(np.unique(y).tolist())
    ids, data, keys = one_vs_rest_runs(x, y, classes, range(math.ceil(n_runs / len(classes))), 0.1)
    take = lambda a: a[:n_runs]  # noqa: E731
    return (RunData(data.x, take(data.normal_pool), take(data.n_valid), take(data.anomaly_pool), take(data.m_valid)),
            keys[:n_runs], ids[:n_runs])


def run_rows(data: RunData, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Run r's training normals and labelled anomalies (rows of data.x)."""
    return (data.x[data.normal_pool[r, :data.n_valid[r]]], data.x[data.anomaly_pool[r, :data.m_valid[r]]])


def to_nchw(x: np.ndarray) -> "torch.Tensor":
    """NHWC float32 -> a torch NCHW tensor with standard strides, as torchvision's ToTensor gives (numpy keeps a
    size-1 axis's odd stride through the transpose, and torch would then run the convolutions channels-last)."""
    n, h, w, c = x.shape
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    out.copy_(torch.from_numpy(x).permute(0, 3, 1, 2))
    return out


def cnn_macs(conv_features, dense_features, hw: int = 28, c_in: int = 1, k: int = 5) -> int:
    """Multiply-adds of one sample's forward pass through a 'SAME' 5x5 conv + 2x2 pool stack and dense layers."""
    macs = 0
    for c in conv_features:
        macs += hw * hw * c * k * k * c_in
        hw, c_in = hw // 2, c
    width = hw * hw * c_in
    for d in dense_features:
        macs += width * d
        width = d
    return macs


def torch_macs(net: "tnn.Module", sample: "torch.Tensor") -> int:
    """Multiply-adds of one sample's forward pass through net's Conv2d and Linear layers (forward hooks)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, tnn.Conv2d):
            total[0] += out[0].numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        else:
            total[0] += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (tnn.Conv2d, tnn.Linear))]
    was = net.training
    net.eval()
    with torch.no_grad():
        net(sample[:1])
    net.train(was)
    for h in hs:
        h.remove()
    return total[0]


# ------------------------------------------------------------------------- (a) the reference, unchanged

def import_reference() -> tuple[type, type, type]:
    """DeepSVDDTrainer, MNIST_LeNet and BaseADDataset from the unchanged reference source (its imports are
    top-level: ``from base.base_trainer import ...``, so its ``src`` goes on sys.path)."""
    src = REF_DIR / "src"
    if not (src / "optim" / "deepSVDD_trainer.py").is_file():
        sys.exit(f"the reference Deep SVDD source is missing: {src} (see benchmarks/third_party/deep_svdd_pytorch/README.md)")
    sys.path.insert(0, str(src))
    from base.base_dataset import BaseADDataset
    from networks.mnist_LeNet import MNIST_LeNet
    from optim.deepSVDD_trainer import DeepSVDDTrainer
    for cls in (BaseADDataset, MNIST_LeNet, DeepSVDDTrainer):
        f = Path(sys.modules[cls.__module__].__file__).resolve()
        if src.resolve() not in f.parents:  # a module named base/optim/networks elsewhere would shadow it
            sys.exit(f"{cls.__name__} was imported from {f}, not from {src}; a package of the same name shadows it")
    return DeepSVDDTrainer, MNIST_LeNet, BaseADDataset


def make_ref_dataset(base_cls: type, x_nchw: "torch.Tensor"):
    """The thin driver: the reference's dataset interface (``loaders`` -> train and test DataLoaders yielding
    (inputs, labels, indices) triples, as its torchvision datasets do) over one run's training normals."""
    from torch.utils.data import DataLoader, TensorDataset

    class ArrayADDataset(base_cls):
        def __init__(self, x: "torch.Tensor"):
            super().__init__(root="")
            self.normal_classes, self.outlier_classes = (0,), ()
            self.train_set = TensorDataset(x, torch.zeros(len(x), dtype=torch.long), torch.arange(len(x)))
            self.test_set = self.train_set

        def loaders(self, batch_size: int, shuffle_train=True, shuffle_test=False, num_workers: int = 0):
            return (DataLoader(self.train_set, batch_size=batch_size, shuffle=shuffle_train, num_workers=num_workers),
                    DataLoader(self.test_set, batch_size=batch_size, shuffle=shuffle_test, num_workers=num_workers))

    return ArrayADDataset(x_nchw)


def side_torch_deep_svdd(data: RunData, n_runs: int, seconds: float, batch: int, device: str = "cpu"
                         ) -> dict[str, Any]:
    """Each run: the reference's ``train`` for one epoch (its center pass + epoch: the warm-up), then ``train``
    again for as many epochs as fill this run's share of the seconds (the center is kept, so no second pass).
    ``device``: the reference trainer's own ``device`` argument (it moves the net there and each batch as it
    comes off the DataLoader, and reads every step's loss back with ``.item()``, so its timing is synchronous)."""
    Trainer, LeNet, Base = import_reference()
    warm_s, warm_steps, steady_s, steady_steps, samples, macs = 0.0, 0, 0.0, 0, 0, 0
    for r in range(n_runs):
        x_n, _ = run_rows(data, r)
        ds = make_ref_dataset(Base, to_nchw(x_n))
        torch.manual_seed(r)
        net = LeNet()
        macs = torch_macs(net, ds.train_set.tensors[0])
        trainer = Trainer("one-class", 0.0, None, 0.1, optimizer_name="adam", lr=LR, n_epochs=1, lr_milestones=(),
                          batch_size=batch, weight_decay=WEIGHT_DECAY, device=device, n_jobs_dataloader=0)
        spe = len(ds.loaders(batch_size=batch)[0])
        t = time.perf_counter()
        net = trainer.train(ds, net)
        warm_s += time.perf_counter() - t
        warm_steps += spe
        epochs = max(1, round(seconds / n_runs / max(trainer.train_time, 1e-6)))
        trainer.n_epochs = epochs
        t = time.perf_counter()
        net = trainer.train(ds, net)
        steady_s += time.perf_counter() - t
        steady_steps += epochs * spe
        samples += epochs * len(x_n)
    return dict(warm_s=warm_s, warm_steps=warm_steps, steady_s=steady_s, steady_steps=steady_steps,
                steady_samples=samples, macs_per_sample=macs, program_steps=steady_steps,
                model="MNIST_LeNet (conv 8, conv 4, dense 32; BatchNorm, affine-free)",
                how=f"reference DeepSVDDTrainer (commit {REF_COMMIT[:12]}), one-class, unchanged; runs one after another")


# --------------------------------------------------------------------------------- (b) plain PyTorch IMD-AD

class TorchCNN2FC3(tnn.Module):
    """imdad_jax's CNN2+FC3 encoder in PyTorch: 5x5 'same' conv, leaky ReLU, 2x2 max-pool (twice), then
    dense layers with leaky ReLU between them and a linear last layer; no biases."""

    def __init__(self, conv=CNN2["conv_features"], dense=CNN2["dense_features"]):
        super().__init__()
        chans = (1,) + tuple(conv)
        self.convs = tnn.ModuleList(tnn.Conv2d(a, b, 5, padding=2, bias=False) for a, b in zip(chans, chans[1:]))
        widths = (chans[-1] * (28 >> len(conv)) ** 2,) + tuple(dense)
        self.fcs = tnn.ModuleList(tnn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:]))

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.leaky_relu(conv(x), 0.01), 2)
        x = x.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.leaky_relu(x, 0.01)
        return x


class TorchSphereHead(tnn.Module):
    """``s(z) = ||z||^2 - (w.z + b)``: w = 2c (||c|| = 1 at the start), b = R^2 - ||c||^2, rho^2 = softplus(rho)."""

    def __init__(self, k: int = 32, init_radius2: float = 1.0, init_margin2: float = 0.1):
        super().__init__()
        v = torch.randn(k)
        self.w = tnn.Parameter(2.0 * v / v.norm())
        self.b = tnn.Parameter(torch.tensor(init_radius2 - 1.0))
        self.rho = tnn.Parameter(torch.tensor(init_margin2 + math.log(-math.expm1(-init_margin2))))

    def forward(self, z):
        return (z * z).sum(-1) - (z @ self.w + self.b)


def make_torch_imdad_step(enc: "tnn.Module", head: "tnn.Module", opt: "torch.optim.Optimizer",
                          hp: dict[str, float], device: str = "cpu"):
    """(b)'s training step on one run: ``step(xb, yb) -> primal`` (a float) and the duals it updates in place.
    Adam step on the Lagrangian, projected ascent on mu_R, then ``w <- 2w/||w||``."""
    nu, nu1, nu2, eta = hp["nu"], hp["nu1"], hp["nu2"], hp["dual_lr"]
    duals = {"mu_R": 0.0, "mu_rho": 0.0}  # mu_h stays 0: ||c|| = 1 is held by projection

    def step(xb, yb) -> float:
        xb, yb = xb.to(device), yb.to(device)
        opt.zero_grad()
        s = head(enc(xb))
        r2 = head.b + (head.w ** 2).sum() / 4.0
        rho2 = F.softplus(head.rho)
        anom = yb
        norm = 1.0 - anom
        hinge_n = (F.relu(s) * norm).sum() / norm.sum().clamp(min=1.0)
        hinge_a = (F.relu(rho2 - s) * anom).sum() / anom.sum().clamp(min=1.0)
        primal = r2 - nu * rho2 + hinge_n / nu1 + hinge_a / nu2
        lag = primal - duals["mu_R"] * r2 - duals["mu_rho"] * rho2
        lag.backward()
        opt.step()
        with torch.no_grad():  # projected gradient ascent on the duals (dL/dmu_R = -R^2), then ||c|| = 1
            duals["mu_R"] = max(0.0, duals["mu_R"] - eta * r2.detach().item())
            head.w.mul_(2.0 / head.w.norm())
        return primal.detach().item()

    return step, duals


def side_torch_imdad(data: RunData, n_runs: int, seconds: float, batch: int, warmup_steps: int,
                     hp: dict[str, float], device: str = "cpu") -> dict[str, Any]:
    """One normal class after another: DataLoader over the run's normals + labelled anomalies, Adam (weight decay
    on the encoder only), the Lagrangian, projected dual ascent, ``w <- 2w/||w||`` after each step. On a GPU
    (``device="cuda"``) the model lives there and each batch is moved there as it comes off the DataLoader, as
    the reference trainer does; the dual step's ``.item()`` makes every step synchronous."""
    from torch.utils.data import DataLoader, TensorDataset

    warm_s, warm_steps, steady_s, steady_steps, samples, macs = 0.0, 0, 0.0, 0, 0, 0
    for r in range(n_runs):
        x_n, x_a = run_rows(data, r)
        x = to_nchw(np.concatenate([x_n, x_a]))
        y = torch.cat([torch.zeros(len(x_n)), torch.ones(len(x_a))])
        loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
        torch.manual_seed(r)
        enc, head = TorchCNN2FC3(), TorchSphereHead()
        macs = torch_macs(enc, x)
        enc, head = enc.to(device), head.to(device)
        opt = torch.optim.Adam([{"params": enc.parameters(), "weight_decay": WEIGHT_DECAY},
                                {"params": head.parameters(), "weight_decay": 0.0}], lr=LR)
        step, _ = make_torch_imdad_step(enc, head, opt, hp, device)

        def batches():
            while True:
                yield from loader

        it = batches()
        t = time.perf_counter()
        for _ in range(warmup_steps):
            step(*next(it))
        warm_s += time.perf_counter() - t
        warm_steps += warmup_steps
        budget, n, t = seconds / n_runs, 0, time.perf_counter()
        while True:
            xb, yb = next(it)
            step(xb, yb)
            n += 1
            samples += len(xb)
            if time.perf_counter() - t >= budget:
                break
        steady_s += time.perf_counter() - t
        steady_steps += n
    return dict(warm_s=warm_s, warm_steps=warm_steps, steady_s=steady_s, steady_steps=steady_steps,
                steady_samples=samples, macs_per_sample=macs, program_steps=steady_steps,
                model="CNN2+FC3 (conv 16, conv 32, dense 128-64-32, no BN) + head (w, b, rho)",
                how="plain PyTorch loop, DataLoader(shuffle) over normals + anomalies; runs one after another")


# ------------------------------------------------------------- (d) PyTorch's model ensembling (torch.func)

class TorchIMDADNet(tnn.Module):
    """(b)'s encoder and head as one module, so that one ``stack_module_state`` stacks both. Built right after
    ``torch.manual_seed(r)`` it draws the same initial weights as (b)'s ``TorchCNN2FC3(), TorchSphereHead()``."""

    def __init__(self):
        super().__init__()
        self.enc, self.head = TorchCNN2FC3(), TorchSphereHead()

    def forward(self, x):
        return self.head(self.enc(x))


class TorchIMDADEnsemble:
    """R copies of (b)'s model and training step as one vmapped program, PyTorch's "Model ensembling" recipe
    (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``), carried through to training.

    * parameters: ``stack_module_state`` of R ``TorchIMDADNet`` (run r built after ``torch.manual_seed(seeds[r])``,
      as (b) builds run r), so every leaf has a leading run axis; ``functional_call`` runs a ``meta``-device copy.
    * gradient: ``vmap(grad_and_value(lagrangian, has_aux=True))`` over (params, x, y, mu_R, mu_rho): each run
      its own batch and duals; the Lagrangian is (b)'s, written again over the functional parameters. It is called
      under ``torch.no_grad()``, which ``torch.func.grad`` ignores inside but which keeps autograd from recording
      an outer graph through the stacked leaves (they have ``requires_grad``).
    * Adam: ``torch.optim.Adam`` over the stacked leaf tensors (the gradients are assigned to ``.grad``), with
      (b)'s two groups (weight decay on the encoder only). This equals R separate Adams because Adam (with
      coupled weight decay) is elementwise: each entry's moments, bias correction (a step count all runs share,
      since they all step together) and update read only that entry's gradient and parameter, so stacking runs
      along a new axis changes nothing per run. It was chosen over a hand-written functional Adam because it is
      what a PyTorch user would write and PyTorch's multi-tensor (``foreach``) implementation is its fastest
      eager Adam; a hand-written one would be the same arithmetic in more, smaller kernels.
    * duals and projection on stacked tensors: ``mu_R <- max(0, mu_R - eta R^2)`` with each run's pre-step R^2
      (mu_rho stays 0: with the softplus margin rho^2 > 0 always, as in (b)), then ``w <- 2 w / ||w||`` per run.
      No ``.item()``: a step never waits for the device.
    """

    def __init__(self, seeds, hp: dict[str, float], device: str = "cpu"):
        import copy

        nets = []
        for r in seeds:
            torch.manual_seed(r)
            nets.append(TorchIMDADNet().to(device))
        self.n_runs, self.device = len(nets), device
        self.params, _ = torch.func.stack_module_state(nets)  # no buffers (no BatchNorm)
        base = copy.deepcopy(nets[0]).to("meta")
        enc_p = [v for k, v in self.params.items() if k.startswith("enc.")]
        head_p = [v for k, v in self.params.items() if k.startswith("head.")]
        self.opt = torch.optim.Adam([{"params": enc_p, "weight_decay": WEIGHT_DECAY},
                                     {"params": head_p, "weight_decay": 0.0}], lr=LR)
        self.mu_R = torch.zeros(self.n_runs, device=device)
        self.mu_rho = torch.zeros(self.n_runs, device=device)  # stays 0 (softplus margin), kept for the Lagrangian
        self.eta = hp["dual_lr"]
        nu, nu1, nu2 = hp["nu"], hp["nu1"], hp["nu2"]

        def lagrangian(params, x, y, mu_R, mu_rho):  # one run: x (B, 1, 28, 28), y (B,), scalars mu
            s = torch.func.functional_call(base, params, (x,))
            w, b, rho = params["head.w"], params["head.b"], params["head.rho"]
            r2 = b + (w * w).sum() / 4.0
            rho2 = F.softplus(rho)
            norm = 1.0 - y
            hinge_n = (F.relu(s) * norm).sum() / norm.sum().clamp(min=1.0)
            hinge_a = (F.relu(rho2 - s) * y).sum() / y.sum().clamp(min=1.0)
            primal = r2 - nu * rho2 + hinge_n / nu1 + hinge_a / nu2
            return primal - mu_R * r2 - mu_rho * rho2, (primal, r2)

        self._grad_and_value = torch.vmap(torch.func.grad_and_value(lagrangian, has_aux=True))

    def step(self, xb: "torch.Tensor", yb: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """One step of every run: xb (R, B, 1, 28, 28), yb (R, B) on the device. Returns (primal, R^2), each
        (R,), both before the step, left on the device."""
        with torch.no_grad():
            grads, (_, (primal, r2)) = self._grad_and_value(self.params, xb, yb, self.mu_R, self.mu_rho)
        for k, p in self.params.items():
            p.grad = grads[k]
        self.opt.step()
        with torch.no_grad():
            self.mu_R.sub_(self.eta * r2).clamp_(min=0.0)
            w = self.params["head.w"]
            w.mul_(2.0 / w.norm(dim=-1, keepdim=True))
        return primal, r2


class TorchRunBatches:
    """Every run's batches as one gather on the device: the data go to the device once (``x``, NCHW); per epoch
    each run draws a random permutation of its own rows (its normals and labelled anomalies together, as (b)'s
    ``DataLoader(shuffle=True)`` over their concatenation does, so a batch's anomaly count varies as in (b)) and
    cuts it into ``ceil(rows / batch)`` batches; a run whose rows do not fill the last batch wraps around (fixed
    shapes for vmap; (b) gives a short last batch there; Fashion-MNIST's 11,400 rows are 76 full batches of 150)."""

    def __init__(self, x: "torch.Tensor", data: RunData, n_runs: int, batch: int, device: str, seed: int = 0):
        rows = [np.concatenate(run_rows_idx(data, r)) for r in range(n_runs)]
        sizes = [len(a) for a in rows]
        n_max = max(sizes)
        pool, lab = np.zeros((n_runs, n_max), np.int64), np.zeros((n_runs, n_max), np.float32)
        for r, a in enumerate(rows):
            pool[r, :len(a)] = a
            lab[r, int(data.n_valid[r]):len(a)] = 1.0
        self.x, self.batch, self.device, self.n_runs, self.n_max = x, batch, device, n_runs, n_max
        self.pool, self.lab = torch.from_numpy(pool).to(device), torch.from_numpy(lab).to(device)
        self.size = torch.tensor(sizes, device=device)
        self.steps = math.ceil(n_max / batch)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def epoch(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(R, steps, batch) row indices into x and their labels (0 normal, 1 anomaly)."""
        u = torch.rand(self.n_runs, self.n_max, generator=self.gen, device=self.device)
        u = u.masked_fill(torch.arange(self.n_max, device=self.device) >= self.size[:, None], 2.0)  # padding last
        pos = torch.arange(self.steps * self.batch, device=self.device)[None, :] % self.size[:, None]
        perm = u.argsort(dim=1).gather(1, pos)
        shape = (self.n_runs, self.steps, self.batch)
        return self.pool.gather(1, perm).view(shape), self.lab.gather(1, perm).view(shape)

    def __iter__(self):
        while True:
            rows, ys = self.epoch()
            for i in range(self.steps):
                yield self.x[rows[:, i]], ys[:, i]  # (R, B, 1, 28, 28), (R, B)


def run_rows_idx(data: RunData, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Run r's training normals and labelled anomalies as row indices into data.x (``run_rows``'s rows)."""
    return data.normal_pool[r, :data.n_valid[r]], data.anomaly_pool[r, :data.m_valid[r]]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def side_torch_imdad_vmap(data: RunData, n_runs: int, seconds: float, batch: int, warmup_steps: int,
                          hp: dict[str, float], device: str = "cpu") -> dict[str, Any]:
    """All R runs as one vmapped PyTorch program (``TorchIMDADEnsemble``, batches from ``TorchRunBatches``):
    warm-up ``warmup_steps`` steps of all runs (as (b) warms up each run), then steps until ``seconds`` are up
    (not split over runs: every step advances all of them). The warm-up time also holds the setup (the data and
    the stacked parameters onto the device). On cuda, ``torch.cuda.synchronize()`` closes each timed phase (the
    steps themselves never wait for the device)."""
    t = time.perf_counter()
    x_dev = to_nchw(data.x).to(device)
    ens = TorchIMDADEnsemble(range(n_runs), hp, device)
    it = iter(TorchRunBatches(x_dev, data, n_runs, batch, device))
    for _ in range(warmup_steps):
        ens.step(*next(it))
    _sync(device)
    warm_s = time.perf_counter() - t
    n, t = 0, time.perf_counter()
    while True:
        ens.step(*next(it))
        n += 1
        if time.perf_counter() - t >= seconds:
            break
    _sync(device)
    steady_s = time.perf_counter() - t
    finite = torch.stack([torch.isfinite(p).reshape(n_runs, -1).all(1) for p in ens.params.values()]).all(0)
    return dict(warm_s=warm_s, warm_steps=warmup_steps * n_runs, steady_s=steady_s, steady_steps=n * n_runs,
                steady_samples=n * n_runs * batch, program_steps=n,
                macs_per_sample=torch_macs(TorchCNN2FC3(), x_dev[:1].cpu()), diverged=int((~finite).sum()),
                model="CNN2+FC3 (conv 16, conv 32, dense 128-64-32, no BN) + head (w, b, rho)",
                how=(f"torch.func.stack_module_state + functional_call + vmap(grad_and_value), torch.optim.Adam "
                     f"over the stacked leaves, data on the {device} and gathered per step; all {n_runs} runs as "
                     f"one program"))


def check_torch_imdad_vmap(data: RunData, hp: dict[str, float], batch: int, device: str = "cpu",
                           steps: int = 30) -> bool:
    """A one-off check of (d) against (b), printed (``--check_d``). (1) R = 1, R = 3, and R = 1 with every head's
    b lowered by 1.5 (R^2 = -0.5, so the dual ascent makes mu_R > 0 at once and the second step's Lagrangian
    carries it): each run starts from (b)'s initial weights for that run, and over two steps on the same two
    batches its gradients, primal, parameters after Adam and the projection, and mu_R match (b)'s
    ``make_torch_imdad_step`` run by run. (2) R = 3 trained for ``steps`` steps: each run's primal falls (mean
    of the last 5 steps below the first 5), mu_R >= 0 throughout, ||w|| = 2 (||c|| = 1), everything finite."""
    ok = True
    x_dev = to_nchw(data.x).to(device)
    for n_runs, b_shift in ((1, 0.0), (min(3, data.n_runs), 0.0), (1, -1.5)):
        ens = TorchIMDADEnsemble(range(n_runs), hp, device)
        with torch.no_grad():
            ens.params["head.b"].add_(b_shift)
        it = iter(TorchRunBatches(x_dev, data, n_runs, batch, device, seed=123))
        two = [next(it) for _ in range(2)]
        init = {k: v.detach().clone() for k, v in ens.params.items()}
        models = []
        for r in range(n_runs):  # (b)'s construction for run r
            torch.manual_seed(r)
            enc, head = TorchCNN2FC3(), TorchSphereHead()
            enc, head = enc.to(device), head.to(device)
            with torch.no_grad():
                head.b.add_(b_shift)
            named = {**{f"enc.{k}": v for k, v in enc.named_parameters()},
                     **{f"head.{k}": v for k, v in head.named_parameters()}}
            opt = torch.optim.Adam([{"params": enc.parameters(), "weight_decay": WEIGHT_DECAY},
                                    {"params": head.parameters(), "weight_decay": 0.0}], lr=LR)
            models.append((named, *make_torch_imdad_step(enc, head, opt, hp, device)))
        same_init = all(torch.equal(named[k].detach(), init[k][r]) for r, (named, _, _) in enumerate(models)
                        for k in named)
        for i, (xb, yb) in enumerate(two):
            primal_d, _ = ens.step(xb, yb)
            for r, (named, step_b, duals_b) in enumerate(models):
                primal_b = step_b(xb[r], yb[r])
                g_err = max(float((named[k].grad - ens.params[k].grad[r]).abs().max() /
                                  named[k].grad.abs().max().clamp(min=1e-30)) for k in named)
                p_err = max(float((named[k].detach() - ens.params[k].detach()[r]).abs().max()) for k in named)
                checks = dict(same_init=same_init, grad_rel_err=g_err, param_abs_err=p_err, primal_b=primal_b,
                              primal_d=float(primal_d[r]), mu_R_b=duals_b["mu_R"], mu_R_d=float(ens.mu_R[r]))
                good = (same_init and g_err < 1e-4 and p_err < 1e-6
                        and abs(primal_b - float(primal_d[r])) <= 1e-5 * max(1.0, abs(primal_b))
                        and abs(duals_b["mu_R"] - float(ens.mu_R[r])) < 1e-6)
                ok &= good
                print(f"check (d) vs (b), R={n_runs}{f' b{b_shift:+g}' if b_shift else ''} run {r}, step {i + 1}: "
                      f"{'OK' if good else 'MISMATCH'} "
                      + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in checks.items()),
                      flush=True)
    n_runs = min(3, data.n_runs)
    ens = TorchIMDADEnsemble(range(n_runs), hp, device)
    it = iter(TorchRunBatches(x_dev, data, n_runs, batch, device, seed=7))
    hist, mu_min = [], 0.0
    for _ in range(steps):
        primal, _ = ens.step(*next(it))
        hist.append(primal.detach().cpu())
        mu_min = min(mu_min, float(ens.mu_R.min()))
    hist = torch.stack(hist)  # (steps, R)
    first, last = hist[:5].mean(0), hist[-5:].mean(0)
    w_norm = ens.params["head.w"].detach().norm(dim=-1)
    finite = all(bool(torch.isfinite(p).all()) for p in ens.params.values())
    good = bool((last < first).all()) and mu_min >= 0.0 and bool(((w_norm - 2.0).abs() < 1e-5).all()) and finite
    ok &= good
    print(f"check (d), R={n_runs}, {steps} steps: {'OK' if good else 'FAILED'}: primal first 5 "
          f"{[round(v, 3) for v in first.tolist()]} -> last 5 {[round(v, 3) for v in last.tolist()]}; "
          f"mu_R {[round(v, 4) for v in ens.mu_R.tolist()]} (min over steps {mu_min:.3g}); "
          f"||w|| {[round(v, 6) for v in w_norm.tolist()]}; finite {finite}", flush=True)
    return ok


# ----------------------------------------------------------------------------------------------- (c) ours

def side_jax(method: str, enc_kw: dict, data: RunData, keys: np.ndarray, seconds: float, batch: int,
             strategy: str, epoch_mode: str, probe_steps: int) -> dict[str, Any]:
    """A probe ``fit`` (a few steps after its compile) sizes the measured ``fit``: its first epoch compiles, the
    later ones (``chunk`` steps each, the whole epoch when that fits a quarter of the seconds) are the steady
    state. Both are the library's one-program run axis: every step advances all R runs."""
    obj = get_objective(method)
    opts = obj.Options()
    model = obj.make_model(build_encoder("cnn2", **enc_kw), data.x.shape[1:], opts)
    n_runs = data.n_runs
    hp = {k: np.full(n_runs, v, np.float32) for k, v in dict(lr=LR, weight_decay=WEIGHT_DECAY, **obj.DEFAULT_HP).items()}
    common = dict(batch_size=batch, strategy=strategy, epoch_mode=epoch_mode)
    t = time.perf_counter()
    probe = fit(model, obj, opts, data, hp, keys, epochs=3, steps_per_epoch=probe_steps, **common)
    probe_s = time.perf_counter() - t
    rate = probe_steps / max(float(np.median(probe.epoch_s[1:])), 1e-9)  # program steps / s
    full = probe.full_steps_per_epoch
    chunk = int(min(full, max(1, math.floor(rate * seconds / 4))))
    epochs = 1 + max(1, math.ceil(rate * seconds / chunk))
    t = time.perf_counter()
    res = fit(model, obj, opts, data, hp, keys, epochs=epochs, steps_per_epoch=chunk, **common)
    wall = time.perf_counter() - t
    steady_s = float(np.sum(res.epoch_s[1:]))
    steps = chunk * (epochs - 1)
    return dict(warm_s=wall - steady_s, warm_steps=chunk, steady_s=steady_s, steady_steps=steps * n_runs,
                steady_samples=steps * n_runs * batch, program_steps=steps,
                macs_per_sample=cnn_macs(enc_kw["conv_features"], enc_kw["dense_features"]),
                probe_s=probe_s, probe_compile_s=probe.compile_s, fit_compile_s=res.compile_s, chunk_steps=chunk,
                timed_epochs=epochs - 1, strategy=res.strategy, epoch_mode=res.epoch_mode,
                diverged=int(res.diverged.sum()),
                model=(f"CNNEncoder conv {tuple(enc_kw['conv_features'])}, dense {tuple(enc_kw['dense_features'])}, "
                       f"{'BatchNorm (affine-free)' if enc_kw.get('batch_norm') else 'no BN'}, bias-free + head"),
                how=f"imdad_jax.train.fit, {res.strategy}/{res.epoch_mode}, all {n_runs} runs as one program")


# ----------------------------------------------------------------------------------------------- report

def resolve_torch_device(name: str) -> str:
    """``cpu``, ``cuda`` or ``auto``: cuda when PyTorch sees a GPU and JAX runs on one, so that both sides are
    timed on the same accelerator; cpu otherwise. Asking for cuda without one is an error, not a silent CPU run."""
    if name not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--torch_device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--torch_device=cuda, but PyTorch sees no GPU (torch.cuda.is_available() is False); "
                         "install a CUDA build of PyTorch or pass --torch_device=cpu")
    return name


def finish_row(row: dict[str, Any], n_runs: int, batch: int, steps_per_epoch: int) -> dict[str, Any]:
    """Rates, the warm-up's excess over its steps at the steady rate, and the paper protocol's projected wall."""
    run_steps_per_s = row["steady_steps"] / row["steady_s"]
    row["run_steps_per_s"] = run_steps_per_s
    row["steps_per_s"] = row["program_steps"] / row["steady_s"]
    row["samples_per_s"] = row["steady_samples"] / row["steady_s"]
    per_program_step = row["steady_s"] / row["program_steps"]
    warm_steps_time = row["warm_steps"] * per_program_step if row["framework"] == "jax" else \
        row["warm_steps"] / run_steps_per_s
    row["warmup_excess_s"] = max(row["warm_s"] - warm_steps_time, 0.0)
    row["steps_per_epoch"] = steps_per_epoch
    total_run_steps = PAPER_CLASSES * PAPER_EPOCHS * steps_per_epoch
    row["protocol_wall_s"] = PAPER_CLASSES / n_runs * row["warmup_excess_s"] + total_run_steps / run_steps_per_s
    row["batch"] = batch
    return row


def fmt_wall(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


HEADER = """# Speed against PyTorch (`benchmarks/bench_vs_pytorch.py`)

Each section below is one invocation of `python benchmarks/bench_vs_pytorch.py`: every side on the same machine,
in the same process, on the same rows of the same data at the same batch size. Sides: (a) the reference PyTorch
Deep SVDD trainer (lukasruff/Deep-SVDD-PyTorch, unchanged, `benchmarks/third_party/deep_svdd_pytorch`) with its
MNIST_LeNet; (b) IMD-AD in plain PyTorch (CNN2+FC3, the Lagrangian, projected dual ascent), one class after
another; (c) this library, all R runs as one program (`imdad_jax.train.fit`): Deep SVDD with the LeNet-size
encoder against (a), IMD-AD with CNN2+FC3 against (b) and (d); (d) (b)'s model and step with all R runs as one
vmapped PyTorch program (PyTorch's model-ensembling recipe: `torch.func.stack_module_state`, `functional_call`,
`vmap(grad_and_value)`, Adam over the stacked parameters).

Columns of the timing table:

- **R**: runs (normal class r mod 10, seed r // 10). PyTorch (a) and (b) train their R runs one after another.
- **MMAC/sample**: multiply-adds of one sample's forward pass through the convolutions and dense layers (the
  FLOPs that matter; BatchNorm, activations, pooling and the loss are not counted).
- **warm-up s**: what the warm-up cost beyond its own steps at the steady rate, summed over runs: compilation for
  ours (the first epoch of `fit`, plus init and Deep SVDD's center pass), the reference's center pass and first
  epoch, PyTorch's first steps.
- **steps/s**: training steps per second as the side takes them: ours and (d), one step advances all R runs at
  once; (a) and (b), one step advances one run.
- **run-steps/s**: runs x steps per second, i.e. one run's optimizer steps per second summed over runs: the
  comparable throughput. **samples/s**: run-steps/s x batch (samples through forward + backward).
- **protocol wall**: the paper's protocol (10 classes x 200 epochs; an epoch of one class is its 6000 normals,
  40 steps of 150, for Deep SVDD, and 6000 normals + 5400 labelled anomalies, 76 steps, for IMD-AD) at the
  measured rates: `(10 / R) x warm-up + 10 x 200 x steps per epoch / run-steps/s`.

Ratio table: **speed** = ours' run-steps/s / PyTorch's (above 1: ours is faster); **wall** = PyTorch's projected
protocol wall / ours'.
"""


def markdown(rows: list[dict], ratios: list[dict], meta: dict) -> str:
    gpu = f"{meta['devices']} ({meta['backend']}), " if meta.get("backend", "cpu") != "cpu" else ""
    lines = [f"## {meta['utc']}: {gpu}{meta['cpu_model']} ({meta['cpu_count']} cores), {meta['data']}", "",
             "| R | side | model | MMAC/sample | warm-up s | steps/s | run-steps/s | samples/s | protocol wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['runs']} | {r['label']} | {r['model']} | {r['macs_per_sample'] / 1e6:.2f} "
                     f"| {r['warmup_excess_s']:.1f} | {r['steps_per_s']:.2f} | {r['run_steps_per_s']:.2f} "
                     f"| {r['samples_per_s']:.0f} | {fmt_wall(r['protocol_wall_s'])} |")
    if ratios:
        lines += ["", "| R | ours vs | speed (run-steps/s, ours / torch) | wall (torch / ours) |", "|---|---|---|---|"]
        lines += [f"| {q['runs']} | {q['vs']} | **{q['speed_ratio']:.2f}x** | {q['wall_ratio']:.2f}x |" for q in ratios]
    v = meta["versions"]
    lines += ["", f"- command: `{meta['command']}`",
              f"- commit: `{meta['git_commit']}`{' (tree dirty)' if meta['git_dirty'] else ''}; reference "
              f"lukasruff/Deep-SVDD-PyTorch `{REF_COMMIT}`",
              f"- torch {v['torch']} (on {meta.get('torch_gpu') or meta.get('torch_device', 'cpu')}, "
              f"{meta['torch_threads']} threads), jax {v['jax']} / jaxlib {v['jaxlib']} "
              f"(default threading, {meta['devices']}), flax {v['flax']}, optax {v['optax']}, python {meta['python']}",
              f"- batch {meta['batch']}, about {meta['seconds']} s of steady state per side and R; lr {LR}, "
              f"weight decay {WEIGHT_DECAY}; load average {meta['loadavg_start'][0]:.2f} at the start, "
              f"{meta['loadavg_end'][0]:.2f} at the end", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="1,10", help="comma list of R (runs: normal classes x seeds)")
    p.add_argument("--seconds", type=float, default=20.0, help="steady-state seconds per side and R")
    p.add_argument("--batch_size", type=int, default=150)
    p.add_argument("--synthetic", action="store_true", help="random 28x28 images instead of Fashion-MNIST")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma list of {', '.join(SIDES)}")
    p.add_argument("--strategy", default="auto", help="ours: run-axis strategy (auto: loop on CPU for convolutions)")
    p.add_argument("--epoch_mode", default="auto")
    p.add_argument("--probe_steps", type=int, default=2, help="ours: steps per epoch of the sizing probe")
    p.add_argument("--torch_warmup_steps", type=int, default=5,
                   help="(b): warm-up steps per run; (d): warm-up steps of all runs together")
    p.add_argument("--torch_threads", type=int, default=0, help="torch.set_num_threads (0: os.cpu_count())")
    p.add_argument("--torch_device", default="auto",
                   help="the PyTorch sides' device: cpu, cuda, or auto (cuda when PyTorch sees a GPU and JAX's "
                        "default backend is a GPU too, so both sides share the accelerator; else cpu)")
    p.add_argument("--check_d", action="store_true",
                   help="only check (d) against (b) (same init and batch: first step's gradients; a short training "
                        "run: loss falls, duals feasible, ||c|| = 1), print, exit 0 if it passes; writes nothing")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_vs_pytorch"), help="writes OUT.json")
    p.add_argument("--md", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="markdown section appended here")
    a = p.parse_args()
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        p.error(f"unknown sides {unknown}; choose from {list(SIDES)}")
    runs = [int(r) for r in a.runs.split(",")]
    if min(runs) < 1 or a.seconds <= 0:
        p.error("--runs must be >= 1 and --seconds > 0")

    torch.set_num_threads(a.torch_threads or os.cpu_count() or 1)
    torch_device = resolve_torch_device(a.torch_device)
    load_start = os.getloadavg()
    if load_start[0] > 0.25 * (os.cpu_count() or 1):
        print(f"note: load average {load_start[0]:.2f} on {os.cpu_count()} cores: other work is running, so these "
              "timings are noisy (PyTorch's OpenMP threads suffer most); measure on a quiet machine", flush=True)
    warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\).*")  # the reference's step order
    x, y, source = load_images(a.synthetic)
    imdad_hp = dict(get_objective("imdad").DEFAULT_HP)
    print(f"data: {source}; torch {torch.__version__} ({torch_device}, {torch.get_num_threads()} threads), "
          f"jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind})", flush=True)
    if a.check_d:
        data, _, _ = make_runs(x, y, 3)
        return 0 if check_torch_imdad_vmap(data, imdad_hp, a.batch_size, torch_device) else 1

    rows: list[dict] = []
    for n_runs in runs:
        data, keys, ids = make_runs(x, y, n_runs)
        n_max, m_max = int(data.n_valid.max()), int(data.m_valid.max())
        spe = {"deep_svdd": plan_batches(n_max, 0, a.batch_size).steps,
               "imdad": plan_batches(n_max, m_max, a.batch_size).steps}
        for side in sides:
            label, method, framework, _ = SIDES[side]
            t = time.perf_counter()
            if side == "torch_deep_svdd_ref":
                row = side_torch_deep_svdd(data, n_runs, a.seconds, a.batch_size, torch_device)
            elif side == "torch_imdad_cnn2":
                row = side_torch_imdad(data, n_runs, a.seconds, a.batch_size, a.torch_warmup_steps, imdad_hp,
                                       torch_device)
            elif side == "torch_imdad_cnn2_vmap":
                row = side_torch_imdad_vmap(data, n_runs, a.seconds, a.batch_size, a.torch_warmup_steps, imdad_hp,
                                            torch_device)
            else:
                row = side_jax(method, LENET if method == "deep_svdd" else CNN2, data, keys, a.seconds, a.batch_size,
                               a.strategy, a.epoch_mode, a.probe_steps)
            row.update(side=side, label=label, method=method, framework=framework, runs=n_runs,
                       run_ids=ids, side_wall_s=time.perf_counter() - t)
            rows.append(finish_row(row, n_runs, a.batch_size, spe[method]))
            print(f"R={n_runs:3d}  {side:21s}  warm-up {row['warmup_excess_s']:6.1f} s  {row['steps_per_s']:8.2f} "
                  f"steps/s  {row['run_steps_per_s']:8.2f} run-steps/s  {row['samples_per_s']:8.0f} samples/s  "
                  f"protocol {fmt_wall(row['protocol_wall_s'])}", flush=True)

    ratios = []
    for n_runs in runs:
        by = {r["side"]: r for r in rows if r["runs"] == n_runs}
        for side, (label, _, _, vs) in SIDES.items():
            for v in (vs if isinstance(vs, tuple) else (vs,) if vs else ()):
                if side in by and v in by:
                    ours, ref = by[side], by[v]
                    ratios.append({"runs": n_runs, "ours": side, "vs_side": v, "vs": SIDES[v][0],
                                   "speed_ratio": ours["run_steps_per_s"] / ref["run_steps_per_s"],
                                   "wall_ratio": ref["protocol_wall_s"] / ours["protocol_wall_s"]})

    prov = provenance()
    prov["versions"]["torch"] = torch.__version__
    meta = {**prov, "cpu_model": cpu_model(), "torch_device": torch_device, "torch_threads": torch.get_num_threads(),
            "torch_gpu": torch.cuda.get_device_name() if torch_device == "cuda" else None,
            "jax_device_kind": jax.devices()[0].device_kind,
            "torch_interop_threads": torch.get_num_interop_threads(), "xla_flags": os.environ.get("XLA_FLAGS"),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
            "data": source, "batch": a.batch_size, "seconds": a.seconds, "reference_commit": REF_COMMIT,
            "reference": "https://github.com/lukasruff/Deep-SVDD-PyTorch (MIT)", "lr": LR, "weight_decay": WEIGHT_DECAY,
            "imdad_hp": imdad_hp, "protocol": {"classes": PAPER_CLASSES, "epochs": PAPER_EPOCHS}}
    atomic_write(a.out + ".json", json.dumps({"meta": meta, "rows": rows, "ratios": ratios}, indent=1) + "\n")
    section = markdown(rows, ratios, meta)
    md = Path(a.md)
    old = md.read_text() if md.exists() else HEADER
    atomic_write(md, old.rstrip("\n") + "\n\n" + section)
    print("\n" + section)
    print(f"wrote {a.out}.json and appended to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
