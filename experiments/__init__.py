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


def below_floors(rows) -> list[dict]:
    """The runs that have not learned: one entry per (run, label family) whose judge-on-reconstruction accuracy
    (`recon_acc_<family>`) is under its dataset's floor. `rows`: dicts with dataset, model, seed (and run_id), as a
    table's per-seed rows; a row without the accuracy (MoCoGAN has no reconstructions) is not judged here."""
    out = []
    for r in rows:
        for family, floor in LEARNING_FLOORS.get(r.get("dataset"), {}).items():
            v = r.get(f"recon_acc_{family}")
            if v is not None and v == v and v < floor:  # v == v: NaN (a column other rows have) is no value
                out.append({"dataset": r["dataset"], "model": r["model"], "seed": r.get("seed"),
                            "run_id": r.get("run_id"), "family": family, "recon_acc": float(v), "floor": floor})
    return out


def shortfall(s: dict, floor: bool = True) -> str:
    """One `below_floors` entry as text: "pants 82.0 % (floor 90)"."""
    return f"{s['family']} {s['recon_acc']:.1f} %" + (f" (floor {s['floor']:g})" if floor else "")


def floors_warning(short: list[dict]) -> str | None:
    """One line for the top of a table or its diagnostics: which runs are below their learning floors."""
    if not short:
        return None
    runs = dict.fromkeys((s["dataset"], s["model"], s["seed"]) for s in short)
    what = "; ".join(f"{m}/{d} seed {seed}: " + ", ".join(
        shortfall(s) for s in short
        if (s["dataset"], s["model"], s["seed"]) == (d, m, seed)) for d, m, seed in runs)
    return (f"NOT LEARNED: {len(runs)} run(s) render a label family below its learning floor on their own test "
            "reconstructions, so their protocol numbers measure what the decoder cannot draw, not disentanglement "
            f"— {what}")


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
