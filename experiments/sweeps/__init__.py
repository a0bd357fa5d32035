"""Search spaces for `python -m benchmark sweep --space NAME`: every module here registers one
(or more) SearchSpace in SPACES; adding a file adds a space, nothing else changes."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from benchmark.registry import Registry

SPACES = Registry("search space")


@dataclass(frozen=True)
class Param:
    low: float
    high: float
    log: bool = True


@dataclass(frozen=True)
class SearchSpace:
    """What a sweep varies and how a trial is scored; `benchmark/sweep.py` executes it.

    params: dotted config keys (the same names as `-o KEY=VALUE` and the MLflow params) -> range.
    metric: key of the protocol metrics, measured on the `val` split after every epoch (never `test`).
    """
    name: str
    doc: str
    model: str
    params: dict[str, Param]
    metric: str
    direction: str
    datasets: tuple[str, ...]
    sampler: Callable[[int], object]          # seed -> optuna sampler
    pruner: Callable[[], object]
    fixed: dict = field(default_factory=dict)  # overrides every trial shares

    def suggest(self, trial) -> dict[str, float]:
        return {k: trial.suggest_float(k, p.low, p.high, log=p.log) for k, p in self.params.items()}


def load_spaces() -> Registry:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return SPACES
