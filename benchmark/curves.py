"""Learning curves from MLflow alone (`python -m benchmark curves`): the `val/...` metrics that
`train.eval_every` logs, against training steps and against training time, one line per model (or
per value of a chosen param), seeds as bands; with the learning floors drawn on the judge-on-
reconstruction panels. Writes <out>/<name>.png, the numbers as <name>.csv and provenance <name>.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from benchmark import tracking
from benchmark.directions import DIRECTIONS, LOWER, direction_or_none
from benchmark.directions import name as metric_name
from experiments import LEARNING_FLOORS


def curve_metrics(dataset: str, available: set[str]) -> list[str]:
    """The panels of a dataset: the protocol's Acc (row and per side), the judge on reconstructions per
    label family, reconstruction MSE and, for speech, the EERs; those the runs logged."""
    from metrics.protocols import PROTOCOLS
    sides = [s.name for s in PROTOCOLS.get(dataset, ())]
    want = ["acc"] + [f"acc_{s}" for s in sides if len(sides) > 1]
    want += sorted(m for m in available if m.startswith("recon_acc_"))
    want += ["recon_mse", "eer_z_f", "eer_z_t"]
    return [m for m in want if m in available]


def collect_curves(runs, hue: str, uri: str | None = None) -> pd.DataFrame:
    """Long form (run_id, model, dataset, seed, hue, step, train_time_s, metric, value) of the runs' val/* metrics."""
    client = tracking.get_client(uri)
    rows = []
    for r in runs:
        names = [k for k in r.data.metrics if k.startswith("val/")]
        if not names:
            continue
        times = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "val/train_time_s")}
        label = _hue_value(r, hue)
        base = {"run_id": r.info.run_id, "model": r.data.tags.get("model"), "dataset": r.data.tags.get("dataset"),
                "seed": int(r.data.tags.get("seed", 0)), "hue": label}
        for name in names:
            for m in client.get_metric_history(r.info.run_id, name):
                rows.append({**base, "step": m.step, "train_time_s": times.get(m.step), "metric": name[4:],
                             "value": m.value})
    return pd.DataFrame(rows)


def _hue_value(run, hue: str) -> str:
    """The line a run belongs to: a tag or param's value; several comma-separated keys are joined (those the
    run lacks left out)."""
    if "," in hue:
        d = run.data
        return " ".join(_hue_value(run, h) for h in hue.split(",") if h in ("model", "dataset", "seed")
                        or h in d.params or h in d.tags) or "?"
    if hue in ("model", "dataset", "seed"):
        return str(run.data.tags.get(hue))
    if hue in run.data.params:
        return f"{hue}={run.data.params[hue]}"
    return f"{hue}={run.data.tags.get(hue, '?')}"


def plot_curves(df: pd.DataFrame, dataset: str, title: str, path: Path) -> Path:
    """Panels of up to 4 metrics a row, each row pair against steps and against training minutes. Seeds of a
    line are a band (±1 sd)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    d = df[df.dataset == dataset].copy()
    metrics = curve_metrics(dataset, set(d.metric))
    # the time axis of a line: the mean over its seeds of the training time at each scored step
    d["train_min"] = d.groupby(["hue", "step"])["train_time_s"].transform("mean") / 60
    hues = sorted(d.hue.unique())
    ncol = min(4, len(metrics))
    nblock = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(2 * nblock, ncol, figsize=(3.6 * ncol, 5.6 * nblock), squeeze=False)
    for j in range(len(metrics), nblock * ncol):  # empty slots of the last row pair
        axes[2 * (j // ncol), j % ncol].set_visible(False)
        axes[2 * (j // ncol) + 1, j % ncol].set_visible(False)
    for j, metric in enumerate(metrics):
        m = d[d.metric == metric]
        for i, x in enumerate(("step", "train_min")):
            ax = axes[2 * (j // ncol) + i, j % ncol]
            sns.lineplot(m, x=x, y="value", hue="hue", hue_order=hues, errorbar="sd", marker="o", markersize=3,
                         ax=ax, legend=(i == 0 and j == ncol - 1))
            floor = LEARNING_FLOORS.get(dataset, {}).get(metric[len("recon_acc_"):]) if metric.startswith(
                "recon_acc_") else None
            if floor is not None:
                ax.axhline(floor, color="grey", ls="--", lw=1)
            ax.set_xlabel("training steps" if x == "step" else "training min (eval excluded)")
            ax.set_ylabel(_label(metric))
            ax.set_title(_label(metric), fontsize=9)
    if axes[0, ncol - 1].get_legend() is not None:
        sns.move_legend(axes[0, ncol - 1], "upper left", bbox_to_anchor=(1.02, 1), title=None, frameon=False)
    fig.suptitle(f"{title} — val split; dashed: learning floor; band: ±1 sd over seeds", y=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _label(metric: str) -> str:
    """The metric's name; where which way is better is not obvious (not an accuracy), that too."""
    d = direction_or_none(metric)
    obvious = d is None or metric.startswith(("acc", "recon_acc_"))
    return metric_name(metric) if obvious else f"{metric_name(metric)}, {d} better"


# from the one table of directions (benchmark/directions.py), so curves and the leaderboard agree
LOWER_IS_BETTER = tuple(m for m, d in DIRECTIONS.items() if d == LOWER)


def parse_targets(specs: list[str] | None) -> list[tuple[str, float]]:
    """`--until acc=80 --until eer_z_f=20` -> [(metric, value)]; a clear error for a malformed one."""
    out = []
    for spec in specs or ():
        name, sep, value = spec.partition("=")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--until {spec!r}: expected METRIC=VALUE, e.g. acc=80 or eer_z_f=20")
    return out


def default_targets(dataset: str) -> list[tuple[str, float]]:
    """The learning floors of a dataset, as judge-on-reconstruction targets."""
    return [(f"recon_acc_{f}", v) for f, v in LEARNING_FLOORS.get(dataset, {}).items()]


def time_to_target(df: pd.DataFrame, metric: str, target: float) -> pd.DataFrame:
    """Per line (hue) and seed: the first scored step and training minutes at which `metric` reaches `target`
    (≥, or ≤ for a lower-is-better metric); NaN where it never does, with the steps it was given."""
    lower = metric in LOWER_IS_BETTER
    rows = []
    for (hue, seed), g in df[df.metric == metric].sort_values("step").groupby(["hue", "seed"]):
        hit = g[g.value <= target] if lower else g[g.value >= target]
        first = hit.iloc[0] if len(hit) else None
        rows.append({"hue": hue, "seed": seed, "metric": metric, "target": target,
                     "step": float(first.step) if first is not None else float("nan"),
                     "train_min": float(first.train_time_s) / 60 if first is not None and first.train_time_s is not None
                     else float("nan"), "max_step": int(g.step.max())})
    return pd.DataFrame(rows)


def targets_table(df: pd.DataFrame, dataset: str, targets: list[tuple[str, float]]) -> str:
    """Markdown: time to each target, per line (mean over the seeds that reached it, and how many did)."""
    d = df[df.dataset == dataset]
    lines = ["| line | metric | target | seeds reaching | step | train min |", "|---|---|---|---|---|---|"]
    for metric, target in targets:
        t = time_to_target(d, metric, target)
        for hue, g in t.groupby("hue"):
            ok = g.dropna(subset=["step"])
            cmp = "≤" if metric in LOWER_IS_BETTER else "≥"
            lines.append(f"| {hue} | {metric} | {cmp} {target:g} | {len(ok)}/{len(g)} | "
                         + (f"{ok.step.mean():.0f} | {ok.train_min.mean():.1f} |" if len(ok) else
                            f"not within {g.max_step.max()} steps | — |"))
    return "\n".join(lines)


def summary_table(df: pd.DataFrame, dataset: str) -> str:
    """Markdown: per line (hue) and scored step, the mean over seeds of each panel's metric."""
    d = df[df.dataset == dataset]
    metrics = curve_metrics(dataset, set(d.metric))
    piv = (d[d.metric.isin(metrics)].groupby(["hue", "step", "metric"])["value"].mean().unstack("metric")[metrics])
    t = d.groupby(["hue", "step"])["train_time_s"].mean() / 60
    lines = ["| line | step | train min | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    for (h, step), row in piv.iterrows():
        lines.append(f"| {h} | {step} | {t.loc[(h, step)]:.1f} | " + " | ".join(f"{v:.3g}" for v in row) + " |")
    return "\n".join(lines)


def write_curves(runs, name: str, hue: str, out: str | Path, uri: str | None, command: str, title: str,
                 log_to: str | None = None, targets: list[tuple[str, float]] | None = None) -> list[Path]:
    """Figures (one per dataset), the long-form CSV, a markdown summary and provenance for `runs`."""
    df = collect_curves(runs, hue, uri)
    if df.empty:
        raise FileNotFoundError(f"curves {name}: none of the {len(runs)} selected runs logged val/ metrics; train "
                                "with -o train.eval_every=N (steps)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    datasets = sorted(df.dataset.unique())
    unknown = sorted({m for m, _ in targets or () if m not in set(df.metric)})
    if unknown:  # a typo must not silently drop the target from the report
        raise ValueError(f"--until {', '.join(unknown)}: not a val metric these runs logged; they logged "
                         f"{', '.join(sorted(set(df.metric)))}")
    from benchmark.validation import val_held_out
    used = [r for r in runs if r.info.run_id in set(df.run_id)]
    held = sum(val_held_out(r.data.params.get("train.split", "train")) for r in used)
    md = [f"# Learning curves: {title}", "", f"Generated by `{command}` from MLflow ({len(df.run_id.unique())} runs); "
          f"values on the val split, mean over seeds. Run ids: `{name}.json`.", "",
          f"Val held out (trained on `fit`) in {held} of {len(used)} runs" + ("" if held == len(used) else
          "; the others trained on `train`, which contains val: their curves measure the fit to training "
          "data, not generalisation (compare the test split: `eval --run`)") + ".", ""]
    for d in datasets:
        stem = name if len(datasets) == 1 else f"{name}-{d}"
        files.append(plot_curves(df, d, f"{title} ({d})", out / f"{stem}.png"))
        md += [f"## {d}", "", summary_table(df, d), ""]
        wanted = [t for t in (targets or default_targets(d)) if t[0] in set(df[df.dataset == d].metric)]
        if wanted:
            md += ["### Time to target (training minutes exclude evaluation)", "", targets_table(df, d, wanted), ""]
    df.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    runs_meta = [{"run_id": r.info.run_id, "model": r.data.tags.get("model"), "dataset": r.data.tags.get("dataset"),
                  "seed": r.data.tags.get("seed"), "git_commit": r.data.tags.get("git_commit"),
                  "git_dirty": r.data.tags.get("git_dirty"), "hue": _hue_value(r, hue),
                  "params": {k: v for k, v in r.data.params.items() if k.startswith(("loss.", "model.", "train."))}}
                 for r in runs if r.info.run_id in set(df.run_id)]
    (out / f"{name}.json").write_text(json.dumps({"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                  **tracking.git_info(), "hue": hue, "runs": runs_meta}, indent=2))
    files += [out / f"{name}.csv", out / f"{name}.md", out / f"{name}.json"]
    if log_to:
        run = tracking.open_run(log_to, uri)
        for f in files:
            run.log_artifact(f, "curves")
    return files


def table_curves(number: int, out="results/curves", uri: str | None = None, command: str = "",
                 targets: list[tuple[str, float]] | None = None) -> list[Path]:
    """The curves of the newest finished run of table N, one figure per dataset, logged to the table's run."""
    parents = tracking.complete_table_runs(number, uri)
    if not parents:
        raise FileNotFoundError(f"curves --table {number}: no finished table run in {tracking.resolve_uri(uri)}")
    parent = parents[0]
    jobs = json.loads(Path(tracking.download_artifact(parent.info.run_id, "jobs.json", uri)).read_text())
    runs = [tracking.find_run(j["run_id"], uri) for j in jobs]
    return write_curves(runs, f"table{number}", "model", out, uri, command, f"Table {number}",
                        log_to=parent.info.run_id, targets=targets)


def filtered_curves(filter_string: str, name: str, hue: str = "model", out="results/curves", uri: str | None = None,
                    command: str = "", targets: list[tuple[str, float]] | None = None) -> list[Path]:
    """The curves of every finished training run matching an MLflow filter (e.g. "tags.study = 'x'")."""
    tracking.health_check(tracking.resolve_uri(uri))
    runs = [r for r in tracking.search_runs(filter_string, uri, (tracking.DEFAULT_EXPERIMENT, tracking.SWEEP_EXPERIMENT))
            if r.info.status == "FINISHED"
            and r.data.tags.get("kind") == "train"]
    if not runs:
        raise FileNotFoundError(f"curves --filter {filter_string!r}: no finished training run matches in "
                                f"{tracking.resolve_uri(uri)}")
    print(f"[curves] {len(runs)} runs", file=sys.stderr)
    return write_curves(runs, name, hue, out, uri, command, name, targets=targets)
