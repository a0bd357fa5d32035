"""Declarative experiments: which models × datasets × protocols make a table (executed by benchmark/)."""
from __future__ import annotations

from dataclasses import dataclass, field


# The judge's accuracy (%) on a model's own posterior reconstructions below which the model has not
# learned to render that label family (so no swap can carry it): a table built on such runs measures
# noise (DEVELOPERS.md). Speech has no judge: its floor is the raw-feature EER (`diagnose`).
LEARNING_FLOORS = {
    "sprites": {"action": 95.0, "skin": 90.0, "top": 90.0, "pants": 90.0, "hair": 90.0},
    "faces": {"identity": 90.0, "expression": 80.0},
    "smmnist": {"digit1": 85.0, "digit2": 85.0},
}


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
    # dataset -> dotted overrides pointing it at the user's real files (`run --data-dir/--data-option`; set
    # per command, never in a spec): part of every run's config, so of its fingerprint
    data: dict = field(default_factory=dict, hash=False)
    # dotted overrides of every run of one command (`run --precision`; never in a spec)
    run: dict = field(default_factory=dict, hash=False)

    def overrides(self, profile: str, dataset: str) -> dict:
        return {**self.budgets.get(profile, {}).get(dataset, {}), **self.data.get(dataset, {}), **self.run}


def tables() -> dict[int, TableSpec]:
    from experiments import table1, table2, table3
    return {t.TABLE.number: t.TABLE for t in (table1, table2, table3)}
