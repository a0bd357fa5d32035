"""Declarative experiments: which models × datasets × protocols make a table (executed by benchmark/)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...]           # the paper's columns, in order
    extra_metrics: tuple[str, ...] = ()  # ours too (per-side accuracies, label KL)
    optional_datasets: tuple[str, ...] = ()  # allowed with --datasets


def tables() -> dict[int, TableSpec]:
    from experiments import table1, table2, table3
    return {t.TABLE.number: t.TABLE for t in (table1, table2, table3)}
