"""The objective protocol, checked once when a module is registered.

An objective is a module of pure per-run functions (``imdad_jax/objectives/imdad.py`` is the model). ``Objective``
reads one such module into a frozen record: every required name must be there, every optional hook gets its
default here, so the engine, the experiment and the estimator call ``obj.project(...)`` or test
``obj.geometry is not None`` instead of probing the module with ``hasattr`` at each use.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping

REQUIRED = ("Options", "HYPERPARAMS", "DEFAULT_HP", "USES_ANOMALIES", "make_model", "init_obj_state", "loss", "score",
            "validate_hp")


class ObjectiveError(TypeError):
    """A module registered as an objective does not meet the protocol; the message names what is missing."""


def _keep_state(obj_state: Any, aux: Mapping, hp: Mapping, opts: Any, epoch: Any) -> Any:
    return obj_state


def _keep_params(params: Any, obj_state: Any, opts: Any) -> Any:
    return params


def _any_options(opts: Any) -> None:
    return None


def _shared_step(hp: Mapping, opts: Any) -> None:
    return None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one record per registered module
class Objective:
    """One registered objective: the module's functions with the optional hooks filled in.

    Required (see ``imdad_jax.objectives``): ``Options`` (a NamedTuple of static choices), ``HYPERPARAMS`` and
    ``DEFAULT_HP`` (the per-run numbers it reads from ``hp``), ``USES_ANOMALIES``, ``make_model``,
    ``init_obj_state``, ``loss``, ``score``, ``validate_hp``.
    Optional, defaulted here: ``update_obj_state`` and ``project`` (identity), ``validate_options`` (accepts
    anything), ``head_step_size(hp, opts)`` (the head's own step size per run, or None: ``lr`` for every weight), ``prepare_features`` + ``prepare`` (None: no initial pass over the normals), ``geometry`` and
    ``signed_distance`` (None: no sphere to read off the weights), ``SCORE_BOUNDARY`` (False: the score has no
    boundary at 0).
    """

    name: str
    module: ModuleType
    Options: type
    HYPERPARAMS: tuple[str, ...]
    DEFAULT_HP: Mapping[str, float]
    USES_ANOMALIES: bool
    make_model: Callable
    init_obj_state: Callable
    loss: Callable
    score: Callable
    validate_hp: Callable[[Mapping], None]
    update_obj_state: Callable = _keep_state
    project: Callable = _keep_params
    validate_options: Callable[[Any], None] = _any_options
    head_step_size: Callable[[Mapping, Any], Any] = _shared_step
    prepare_features: Callable | None = None
    prepare: Callable | None = None
    geometry: Callable | None = None
    signed_distance: Callable | None = None
    # whether ``score`` is > 0 exactly outside the model's own boundary (a sphere's d - R^2): the estimator's
    # default threshold then needs no labelled anomaly and no contamination guess
    SCORE_BOUNDARY: bool = False

    @property
    def __name__(self) -> str:  # the module's dotted name: messages and the autotune cache key use it
        return self.module.__name__

    def options(self, values: Mapping[str, Any] | None = None) -> Any:
        """The static ``Options`` from ``values`` (names it does not have are ignored: they belong to other
        methods), defaults elsewhere; checked by the objective. Raises ``ValueError`` naming a bad value."""
        values = values or {}
        opts = self.Options(**{f: values[f] for f in self.Options._fields if f in values})
        self.validate_options(opts)
        return opts

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> "Objective":
        """Read ``module`` as the objective ``name``; ``ObjectiveError`` lists every missing or inconsistent name."""
        missing = [n for n in REQUIRED if not hasattr(module, n)]
        if missing:
            raise ObjectiveError(f"objective {name!r} ({module.__name__}) lacks {', '.join(missing)}; see the "
                                 "protocol in imdad_jax/objectives/__init__.py")
        hps, defaults = tuple(module.HYPERPARAMS), dict(module.DEFAULT_HP)
        if set(hps) != set(defaults):
            raise ObjectiveError(f"objective {name!r}: DEFAULT_HP {sorted(defaults)} must give a value for exactly "
                                 f"the HYPERPARAMS {list(hps)}")
        if hasattr(module, "prepare") != hasattr(module, "prepare_features"):
            raise ObjectiveError(f"objective {name!r}: prepare and prepare_features come together (the features of "
                                 "the training normals are what prepare reads)")
        optional = {n: getattr(module, n) for n in ("update_obj_state", "project", "validate_options", "head_step_size",
                                                     "prepare_features", "prepare", "geometry", "signed_distance")
                    if hasattr(module, n)}
        if hasattr(module, "SCORE_BOUNDARY"):
            optional["SCORE_BOUNDARY"] = bool(module.SCORE_BOUNDARY)
        return cls(name=name, module=module, Options=module.Options, HYPERPARAMS=hps, DEFAULT_HP=defaults,
                   USES_ANOMALIES=bool(module.USES_ANOMALIES), make_model=module.make_model,
                   init_obj_state=module.init_obj_state, loss=module.loss, score=module.score,
                   validate_hp=module.validate_hp, **optional)


__all__ = ["Objective", "ObjectiveError", "REQUIRED"]
