"""Command-line flags generated from the config's fields, as flax's ``config_flags`` does from a ConfigDict.

Every ``ExperimentConfig`` field marked as a flag becomes ``--name`` and ``--section.name`` (``--lr``,
``--optim.lr``), with its help and parser from the field's metadata; every registered objective's hyperparameter
becomes ``--name`` / ``--hp.name`` and every static option ``--name`` / ``--options.name``. A flag left out keeps
the preset's or the dataset's value. So a new setting is one config field, and a new method's hyperparameter is
one entry in its objective's ``HYPERPARAMS``: no list here or in a script to keep in step.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from imdad_jax.config import ConfigError, ExperimentConfig


def parse_ints(text: str) -> tuple[int, ...]:
    """``"0,2,6"`` -> ``(0, 2, 6)``."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_floats(text: str) -> tuple[float, ...]:
    """``"0.5,0.75"`` -> ``(0.5, 0.75)``."""
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_max_runs(text: str) -> int | str | None:
    """``auto``, ``all`` (None: every run in one program) or a number of runs."""
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max_runs must be 'auto', 'all' or a number of runs, got {text!r}") \
            from None


def parse_grid(text: str) -> tuple:
    """``"lr=1e-3,1e-4;nu1=0.05,0.1"`` -> the config's ``tune`` grid."""
    from imdad_jax.tuning import parse_grid as parse

    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "ints": parse_ints,
                                            "floats": parse_floats, "max_runs": parse_max_runs, "grid": parse_grid}


def config_fields() -> list[dataclasses.Field]:
    """The config fields that are flags, in declaration order."""
    return [f for f in dataclasses.fields(ExperimentConfig) if f.metadata.get("flag")]


def _add(group: argparse._ActionsContainer, name: str, section: str, parse: str, help: str) -> None:
    # left out, a flag sets nothing (SUPPRESS: not even None, which is a value some fields take, e.g. --max_runs=all)
    spellings = (f"--{name}", f"--{section}.{name}")
    if parse == "bool":  # an on-switch; left out, the preset's value stands
        group.add_argument(*spellings, dest=name, action="store_true", default=argparse.SUPPRESS, help=help)
    else:
        group.add_argument(*spellings, dest=name, type=PARSERS[parse], default=argparse.SUPPRESS, help=help)


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """Add a flag for every config field (of ``sections``, default all) and for every registered objective's
    hyperparameters and options, grouped by section in ``--help``."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in config_fields():
        section = f.metadata["section"]
        if sections is not None and section not in sections:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} (--{section}.NAME also works)")
        _add(groups[section], f.name, section, f.metadata["parse"], f.metadata["help"])
    if sections is None or "method" in sections:
        from imdad_jax.objectives import REGISTRY, hyperparameter_names, option_defaults

        g = parser.add_argument_group("the methods' own hyperparameters (per run; default: the method's own)")
        for h in hyperparameter_names():
            owners = ", ".join(n for n, o in REGISTRY.items() if h in o.HYPERPARAMS)
            _add(g, h, "hp", "float", f"{owners} (default: the method's)")
        g = parser.add_argument_group("the methods' static options (they change the compiled program)")
        for o, default in option_defaults().items():
            kind = "int" if isinstance(default, int) and not isinstance(default, bool) else \
                "float" if isinstance(default, float) else "str"
            owners = ", ".join(n for n, obj in REGISTRY.items() if o in obj.Options._fields)
            _add(g, o, "options", kind, f"{owners} (default {default})")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags in ``args`` give (those left out are absent): config fields by name, the methods'
    hyperparameters under ``hp`` and options under ``options``, ready for ``make_config(preset, **overrides)``."""
    given = vars(args)
    out: dict[str, Any] = {f.name: given[f.name] for f in config_fields() if f.name in given}
    from imdad_jax.objectives import hyperparameter_names, option_defaults

    hp = {h: given[h] for h in hyperparameter_names() if h in given}
    opts = {o: given[o] for o in option_defaults() if o in given}
    if hp:
        out["hp"] = hp
    if opts:
        out["options"] = opts
    return out


__all__ = ["ConfigError", "PARSERS", "add_config_flags", "config_fields", "config_overrides", "parse_floats",
           "parse_grid", "parse_ints", "parse_max_runs"]
