"""`python -m benchmark leaderboard`: every model × dataset × metric of the committed tables, ranked within
(dataset, metric) in the metric's direction, beside the paper's value, with the MLflow run ids of its seeds.

Read from `results/tableN.csv` + `tableN_provenance.json` alone (no MLflow needed, nothing retrained), so
every number is a committed table's; `--tracking-uri` only checks the run ids against a store.

Rank: within (profile, dataset, metric), 1 = best mean over seeds in the metric's direction
(benchmark/directions.py); equal means (exactly, as the table csv holds them) share the best rank of their
group and the next rank skips (1, 2, 2, 4: "competition" ranking); a NaN mean, or a metric that
directions.py gives no direction (a per-factor probe), is listed unranked.
One entry per (profile, model, dataset, metric): when several tables hold it (s3vae on faces is in Tables 1 and 2),
entries with the same runs are one entry; otherwise the one with more seeds, then the lower table number,
is ranked and the others are listed in `other_tables`.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.directions import HIGHER, direction_or_none
from benchmark.tables import PAPER_CSV, _fmt

TABLE_FILE = re.compile(r"table(\d+)\.csv")
REPO = Path(__file__).resolve().parent.parent  # where the runs' code commits are
SHORT_ID = 8  # characters of a run id in the markdown (the csv has the full ids)
COLUMNS = ["profile", "dataset", "metric", "direction", "rank", "of", "model", "mean", "std", "n", "paper",
           "paper_rank", "table", "run_ids", "other_tables"]


def _git(repo: Path, *args) -> str | None:
    """A git answer about `repo`, or None where there is no git or no such commit/file."""
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def table_sources(results: Path) -> list[dict]:
    """One dict per committed table file: number, paths, provenance (empty when absent), git dates."""
    results = Path(results)
    found = sorted((int(m.group(1)), p) for p in results.glob("table*.csv") if (m := TABLE_FILE.fullmatch(p.name)))
    if not found:
        raise FileNotFoundError(f"leaderboard: no table*.csv in {results}; run `python -m benchmark run --table N` "
                                f"first")
    out = []
    for number, csv in found:
        prov_path = results / f"table{number}_provenance.json"
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
        commit = prov.get("git_commit")
        last = _git(results, "log", "-1", "--format=%h %cs", "--", csv.name)
        out.append({"table": number, "csv": csv, "datasets": list(dict.fromkeys(pd.read_csv(csv).dataset)),
                    "provenance": prov_path if prov else None, "prov": prov,
                    "git_commit": commit, "git_dirty": prov.get("git_dirty"),
                    # the provenance has no date: the date of the code commit the runs were trained at
                    "commit_date": _git(REPO, "show", "-s", "--format=%cs", commit) if commit else None,
                    "committed": last,  # "<hash> <date>" of the commit that last changed the csv
                    "changed_since": bool(_git(results, "status", "--porcelain", "--", csv.name, prov_path.name)),
                    "profile": prov.get("profile"), "seeds": prov.get("seeds"), "command": prov.get("command"),
                    "parent_run_id": prov.get("parent_run_id")})
    return out


def _run_ids(prov: dict, dataset: str, model: str, metric: str) -> list[str]:
    """Run ids of the seeds behind one cell, in seed order: the per-seed rows that have the metric."""
    rows = [r for r in prov.get("per_seed", []) if r.get("dataset") == dataset and r.get("model") == model]
    rows = [r for r in rows if r.get(metric) is not None] or \
        [r for r in prov.get("jobs", []) if r.get("dataset") == dataset and r.get("model") == model]
    return [r["run_id"] for r in sorted(rows, key=lambda r: r.get("seed", 0)) if r.get("run_id")]


def entries(sources: list[dict]) -> pd.DataFrame:
    """Every (table, dataset, model, metric) row of the tables, with its paper value and seed run ids."""
    paper = pd.read_csv(PAPER_CSV)
    pv = {(r.table, r.dataset, r.model, r.metric): r.value for r in paper.itertuples()}
    rows = []
    for s in sources:
        df = pd.read_csv(s["csv"])
        missing = {"dataset", "model", "metric", "mean", "std", "n"} - set(df.columns)
        if missing:
            raise ValueError(f"{s['csv']}: not a table file (missing columns {', '.join(sorted(missing))})")
        for r in df.itertuples():
            rows.append({"table": s["table"], "profile": s["profile"] or "?", "dataset": r.dataset,
                         "model": r.model, "metric": r.metric,
                         "mean": float(r.mean), "std": float(r.std), "n": int(r.n),
                         "paper": pv.get((s["table"], r.dataset, r.model, r.metric), np.nan),
                         "run_ids": _run_ids(s["prov"], r.dataset, r.model, r.metric)})
    return pd.DataFrame(rows)


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One entry per (profile, dataset, model, metric): see the module docstring."""
    out = []
    for _, g in df.groupby(["profile", "dataset", "model", "metric"], sort=False):
        g = g.sort_values(["n", "table"], ascending=[False, True])
        best = g.iloc[0].to_dict()
        same = g[g.run_ids.map(lambda ids: list(ids) == list(best["run_ids"]))] if best["run_ids"] else g.iloc[:1]
        rest = g.drop(same.index)
        best["table"] = ", ".join(str(t) for t in sorted(same.table))
        if np.isnan(best["paper"]) and same.paper.notna().any():
            best["paper"] = same.paper.dropna().iloc[0]
        best["other_tables"] = "; ".join(f"table {r.table}: {_fmt(r.metric, r.mean)} ± {_fmt(r.metric, r.std)} "
                                         f"(n={r.n})" for r in rest.itertuples())
        out.append(best)
    return pd.DataFrame(out)


def rank(values: pd.Series, better: str) -> pd.Series:
    """Competition ranks (1 = best; ties share the best rank, the next rank skips; NaN unranked)."""
    return values.rank(method="min", ascending=better != HIGHER, na_option="keep").astype("Int64")


def build(results: str | Path = "results") -> tuple[pd.DataFrame, list[dict]]:
    """(leaderboard rows in COLUMNS, the tables they came from)."""
    sources = table_sources(Path(results))
    df = _dedupe(entries(sources))
    df["direction"] = df.metric.map(lambda m: direction_or_none(m) or "none")
    # a profile changes image size, widths and budgets: models rank only against runs of the same profile
    keys = ["profile", "dataset", "metric"]
    order = {k: i for i, k in enumerate(dict.fromkeys(zip(*(df[k] for k in keys))))}  # the tables' own order
    parts = []
    for key, g in df.groupby(keys, sort=False):
        better = direction_or_none(key[2])
        ranked = better is not None
        g = g.assign(rank=rank(g["mean"], better) if ranked else pd.array([pd.NA] * len(g), "Int64"),
                     of=int(g["mean"].notna().sum()) if ranked else 0,
                     paper_rank=rank(g["paper"], better) if ranked else pd.array([pd.NA] * len(g), "Int64"),
                     _order=order[key])
        parts.append(g)
    df = pd.concat(parts).sort_values(["_order", "rank", "model"], na_position="last")
    df["run_ids"] = df.run_ids.map(";".join)
    return df[COLUMNS].reset_index(drop=True), sources


def _check_store(ids: list[str], uri: str | None) -> dict[str, str | None]:
    """run id -> a link (http(s) stores), "" (found) or None (not in the store)."""
    from benchmark import tracking
    uri = tracking.resolve_uri(uri)
    tracking.health_check(uri)
    out = {}
    for i in ids:
        try:
            run = tracking.find_run(i, uri)  # or the run imported under that id
        except tracking.TrackingError:
            out[i] = None
            continue
        out[i] = f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" \
            if uri.startswith(("http://", "https://")) else ""
    return out


def _runs_md(ids: str, store: dict | None) -> str:
    cells = []
    for i in filter(None, ids.split(";")):
        s = f"`{i[:SHORT_ID]}`"
        if store is not None:
            s = f"[{s}]({store[i]})" if store.get(i) else (s if store.get(i) == "" else s + " (not in store)")
        cells.append(s)
    return " ".join(cells) or "–"


def _source_line(s: dict) -> str:
    commit = (s["git_commit"] or "unknown")[:10]
    dirty = " (uncommitted changes)" if str(s.get("git_dirty")).lower() == "true" else ""
    committed = s["committed"] or "not committed"
    if s["changed_since"]:
        committed += ", changed since"
    prov = f"`{s['provenance'].name}`" if s["provenance"] else "none (no run ids)"
    return (f"| {s['table']} | `{s['csv'].name}` | {prov} | `{commit}`{dirty} | {s['commit_date'] or 'unknown'} | "
            f"{committed} | {s['profile'] or '?'} | {s['seeds'] or '?'} | `{s['command'] or '?'}` |")


def _budget_note(sources: list[dict], profile: str, dataset: str) -> list[str]:
    """A warning where the tables behind one ranking trained this dataset at different budgets: their budget
    overrides, and where every one of them records it, the recipe all their models shared (`tables.recipe_of`)."""
    ranked = [s for s in sources if (s["profile"] or "?") == profile and dataset in s["datasets"]]
    recipes = {s["table"]: s["prov"].get("recipe", {}).get(dataset, {}).get("all") for s in ranked}
    with_recipe = all(r is not None for r in recipes.values())
    budgets = {s["table"]: json.dumps({**s["prov"].get("budget", {}).get(dataset, {}),
                                       **(recipes[s["table"]] if with_recipe else {})}, sort_keys=True)
               for s in ranked}
    if len(set(budgets.values())) < 2:
        return []
    return ["**Budgets differ between the tables ranked here** (" + "; ".join(
        f"table {t}: {b if b != '{}' else 'profile default'}" for t, b in budgets.items()) +
        "): a rank across tables then also compares training budgets.", ""]


def write_markdown(df: pd.DataFrame, sources: list[dict], path: Path, store: dict | None = None,
                   png: str | None = None) -> Path:
    lines = ["# Leaderboard", "",
             "Generated by `python -m benchmark leaderboard` from the committed tables below (their `.csv` and "
             "`_provenance.json`); regenerated, never typed: rerun it after `run --table N` or `report --table N`. "
             "The full run ids are in `leaderboard.csv`.", "",
             "| table | file | provenance | code commit of the runs | commit date | table committed | profile | "
             "seeds | command |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_source_line(s) for s in sources]
    lines += ["", "**rank**: 1 = best mean over seeds within (dataset, metric) among runs of one profile, in the "
                  "metric's direction "
                  "(↑ higher is better, ↓ lower is better; `benchmark/directions.py`); equal means share the best "
                  "rank of their group and the next rank skips (1, 2, 2, 4). A rank orders means: it is no "
                  "significance test (see n and std; the paper's claims are tested with Welch's t in "
                  "[claims.md](claims.md)). **paper**: the seed's value, and in brackets its rank among the models "
                  "here that have one. **runs**: MLflow run ids of the seeds, in seed order. A model that several "
                  "tables hold is ranked once: the same runs are one entry (table `1, 2`); otherwise the entry with "
                  "more seeds, then the lower table number, and the others are shown as *also*.", ""]
    if store is not None:
        missing = sorted(i for i, v in store.items() if v is None)
        lines += [f"Run ids checked against the tracking store: {len(store) - len(missing)} of {len(store)} found"
                  + (f"; missing: {', '.join(f'`{i}`' for i in missing)}." if missing else "."), ""]
    if png:
        lines += [f"![leaderboard]({png})", ""]
    for (prof, d), g in df.groupby(["profile", "dataset"], sort=False):
        lines += [f"## {d} (profile `{prof}`)", ""] + _budget_note(sources, prof, d)
        lines += ["| metric | rank | model | ours (mean ± std) | n | paper (rank) | table | runs |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in g.itertuples():
            arrow = {"higher": "↑", "lower": "↓"}.get(r.direction, "(no direction: unranked)")
            rk = "–" if pd.isna(r.rank) else f"{r.rank} / {r.of}"
            paper = "–" if pd.isna(r.paper) else f"{_fmt(r.metric, r.paper)}" + \
                ("" if pd.isna(r.paper_rank) else f" (#{r.paper_rank})")
            ours = f"{_fmt(r.metric, r.mean)} ± {_fmt(r.metric, r.std)}"
            if r.other_tables:
                ours += f" (also {r.other_tables})"
            lines.append(f"| {r.metric} {arrow} | {rk} | {r.model} | {ours} | {r.n} | {paper} | {r.table} | "
                         f"{_runs_md(r.run_ids, store)} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def plot(df: pd.DataFrame, sources: list[dict], path: Path) -> Path:
    """One heatmap per dataset: models × metrics, coloured by rank (green best), each cell '#rank' and
    mean ± std; rows ordered by the model's mean rank over the dataset's metrics."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    groups = [g for _, g in df.groupby(["profile", "dataset"], sort=False)]
    shapes = [(g.model.nunique(), g.metric.nunique()) for g in groups]
    width = max(7.5, 2.0 + 1.45 * max(c for _, c in shapes))  # room for the title
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, sum(0.62 * r + 1.6 for r, _ in shapes)),
                             gridspec_kw={"height_ratios": [r + 2.6 for r, _ in shapes]}, squeeze=False,
                             layout="constrained")  # keeps the suptitle clear of the first panel
    for ax, g in zip(axes[:, 0], groups):
        metrics = list(dict.fromkeys(g.metric))
        models = g.groupby("model")["rank"].mean().sort_values(kind="stable").index.tolist()
        cell = g.set_index(["model", "metric"])
        # colour: rank scaled to [0, 1] within its column, so columns with different model counts compare
        score = pd.DataFrame(np.nan, index=models, columns=metrics)
        text = pd.DataFrame("", index=models, columns=metrics)
        for (mo, me), r in cell.iterrows():
            if not pd.isna(r["rank"]):
                score.loc[mo, me] = (r["rank"] - 1) / max(r["of"] - 1, 1)
            text.loc[mo, me] = ("–" if pd.isna(r["rank"]) else f"#{r['rank']}") + \
                f"\n{_fmt(me, r['mean'])}±{_fmt(me, r['std'])}" + \
                ("" if pd.isna(r["paper"]) else f"\n(paper {_fmt(me, r['paper'])})")
        sns.heatmap(score, annot=text.to_numpy(), fmt="", cmap="RdYlGn_r", vmin=0, vmax=1, cbar=True,
                    cbar_kws={"label": "scaled rank (0 best, 1 worst)"}, linewidths=0.5,
                    linecolor="white", annot_kws={"fontsize": 8}, ax=ax)
        dirs = {"higher": "↑ higher is better", "lower": "↓ lower is better", "none": "no direction: unranked"}
        ax.set_xticklabels([f"{m}\n{dirs[g[g.metric == m].direction.iloc[0]]}" for m in metrics], rotation=0,
                           fontsize=8)
        ax.set_yticklabels(models, rotation=0)
        ax.set_xlabel("metric (direction)")
        ax.set_ylabel("model (by mean rank)")
        ax.set_title(f"dataset: {g.dataset.iloc[0]} (profile {g.profile.iloc[0]})", fontsize=10, loc="left")
    names = ", ".join(f"table {s['table']} ({(s['git_commit'] or 'unknown')[:7]})" for s in sources)
    fig.suptitle(f"Leaderboard from {names}: rank within each (dataset, metric), 1 = best;\n"
                 "cell: #rank, mean ± std over seeds (the paper's value); generated by python -m benchmark "
                 "leaderboard", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_leaderboard(results: str | Path = "results", out: str | Path | None = None,
                      tracking_uri: str | None = None) -> list[Path]:
    """results/leaderboard.{csv,md,png} from the committed tables; `tracking_uri`: also check the run ids."""
    df, sources = build(results)
    out = Path(out or results)
    out.mkdir(parents=True, exist_ok=True)
    store = _check_store([i for ids in df.run_ids for i in ids.split(";") if i], tracking_uri) \
        if tracking_uri else None
    csv = out / "leaderboard.csv"
    df.to_csv(csv, index=False)
    png = plot(df, sources, out / "leaderboard.png")
    md = write_markdown(df, sources, out / "leaderboard.md", store, png.name)
    return [csv, md, png]
