"""Declarative experiments: which models × datasets × protocols make a table (executed by benchmark/)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    metrics: tuple[str, ...]           # the paper's columns, in order
    extra_metrics: tuple[str, ...] = ()  # ours too (per-side accuracies, label KL)
    optional_datasets: tuple[str, ...] = ()  # allowed with --datasets
    # profile -> dataset -> dotted overrides of every run of this table: a smaller budget where a
    # profile cannot afford the table's runs (recorded in each run's config and the provenance)
    budgets: dict = field(default_factory=dict, hash=False)

    def overrides(self, profile: str, dataset: str) -> dict:
        return dict(self.budgets.get(profile, {}).get(dataset, {}))


def tables() -> dict[int, TableSpec]:
    from experiments import table1, table2, table3
    return {t.TABLE.number: t.TABLE for t in (table1, table2, table3)}
