"""The config's flags are generated from its fields and the objectives' registry; the config imports without JAX."""
import argparse
import dataclasses
import subprocess
import sys

import pytest

from imdad_jax.config import ExperimentConfig, make_config
from imdad_jax.config_flags import add_config_flags, config_fields, config_overrides
from imdad_jax.objectives import REGISTRY, hyperparameter_names, option_defaults


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return config_overrides(p.parse_args(argv))


def test_importing_the_config_does_not_import_jax():
    code = ("import sys; import imdad_jax.config as c; import imdad_jax.data.registry; "
            "print(c.DATASETS); assert 'jax' not in sys.modules and 'flax' not in sys.modules, sorted(sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fmnist" in out.stdout


def test_every_field_is_a_flag_in_both_spellings():
    p = argparse.ArgumentParser()
    add_config_flags(p)
    options = {s for a in p._actions for s in a.option_strings}
    for f in config_fields():
        assert f"--{f.name}" in options and f"--{f.metadata['section']}.{f.name}" in options
    for h in hyperparameter_names():
        assert f"--{h}" in options and f"--hp.{h}" in options
    for o in option_defaults():
        assert f"--{o}" in options and f"--options.{o}" in options
    # the fields that are not flags are the ones the CLI spells its own way (lists of datasets, classes, ...)
    not_flags = {f.name for f in dataclasses.fields(ExperimentConfig) if not f.metadata.get("flag")}
    assert not_flags == {"dataset", "classes", "seeds", "method", "hp", "options", "preset"}


def test_flags_parse_to_the_config_they_name():
    over = _parse(["--optim.lr=1e-3", "--conv_features=8,16", "--batch_norm", "--max_runs=all", "--nu1=0.05",
                   "--hp.dual_lr=0.2", "--options.center_constraint=multiplier", "--tune=lr=1e-3,1e-4",
                   "--milestone_fractions=0.25,0.5"])
    assert over == {"lr": 1e-3, "conv_features": (8, 16), "batch_norm": True, "max_runs": None,
                    "milestone_fractions": (0.25, 0.5), "tune": (("lr", (1e-3, 1e-4)),),
                    "hp": {"nu1": 0.05, "dual_lr": 0.2}, "options": {"center_constraint": "multiplier"}}
    cfg = make_config("tiny", dataset="moons", **over)
    assert (cfg.lr, cfg.nu1, cfg.center_constraint, cfg.section("model")["batch_norm"]) == (1e-3, 0.05, "multiplier",
                                                                                            True)
    assert _parse([]) == {}  # a flag left out keeps the preset's or the dataset's value


def test_a_value_is_checked_by_every_method_that_owns_it():
    from imdad_jax.config import ConfigError

    # nu1 belongs to imdad, dad and mdad: out of range it is refused whichever method the config trains
    owners = [n for n, o in REGISTRY.items() if "nu1" in o.HYPERPARAMS]
    assert len(owners) >= 2
    with pytest.raises(ConfigError, match="nu1 must lie in"):
        make_config("tiny", method="deep_sad", nu1=1.5)
    with pytest.raises(ConfigError, match="unknown config fields"):
        make_config("tiny", nu7=0.1)
    with pytest.raises(ConfigError, match="kappa must be > 0"):
        make_config("tiny", method="deep_svdd", kappa=0.0)
