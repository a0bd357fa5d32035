"""`python -m benchmark leaderboard`: its numbers are the committed tables', its ranks follow each metric's
direction, ties share the best rank (competition ranking: 1, 2, 2, 4)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.directions import HIGHER, LOWER, direction
from benchmark.leaderboard import build, write_leaderboard

RESULTS = Path(__file__).resolve().parent.parent / "results"
COMMITTED = sorted(RESULTS.glob("table[0-9].csv"))


def _check_ranks(lb: pd.DataFrame):
    """Within (profile, dataset, metric): rank = 1 + the number of strictly better means."""
    for (_, _, metric), g in lb.groupby(["profile", "dataset", "metric"]):
        assert (g.direction == direction(metric)).all()  # raises for a metric with no direction: none in tables
        for r in g.itertuples():
            better = (g["mean"] > r.mean) if r.direction == HIGHER else (g["mean"] < r.mean)
            assert r.rank == 1 + better.sum(), (metric, r.model)
        assert (g["of"] == len(g)).all()


@pytest.mark.skipif(not COMMITTED, reason="no committed table")
def test_committed_leaderboard_is_the_tables():
    lb = pd.read_csv(RESULTS / "leaderboard.csv", keep_default_na=False, na_values=[""])
    for csv in COMMITTED:
        prov = json.loads((RESULTS / f"{csv.stem}_provenance.json").read_text())
        for r in pd.read_csv(csv).itertuples():
            row = lb[(lb.profile == prov["profile"]) & (lb.dataset == r.dataset) & (lb.model == r.model)
                     & (lb.metric == r.metric)]
            assert len(row) == 1, (csv.name, r.dataset, r.model, r.metric)
            row = row.iloc[0]
            if str(r.table) in str(row.table).split(", "):  # the entry ranked is this table's
                assert np.isclose(row["mean"], r.mean, rtol=1e-12) and np.isclose(row["std"], r.std, rtol=1e-12)
                assert row["n"] == r.n
                runs = sorted((s for s in prov["per_seed"] if s["dataset"] == r.dataset and s["model"] == r.model
                               and s.get(r.metric) is not None), key=lambda s: s["seed"])
                assert row.run_ids.split(";") == [s["run_id"] for s in runs]
            else:  # held by another table too: listed beside the ranked entry
                assert f"table {r.table}:" in row.other_tables
    _check_ranks(lb)
    fresh, _ = build(RESULTS)
    assert len(fresh) == len(lb), "results/leaderboard.csv is stale: run `python -m benchmark leaderboard`"
    for col in ("model", "metric", "rank", "run_ids"):
        assert fresh[col].astype(str).tolist() == lb[col].astype(str).tolist(), \
            f"results/leaderboard.csv is stale ({col}): run `python -m benchmark leaderboard`"
    assert np.allclose(fresh["mean"], lb["mean"], rtol=1e-12)


def _table(path: Path, number: int, rows: list[tuple], profile="cpu", per_seed=None, budget=None, recipe=None):
    """A tableN.csv + provenance in the format `run --table N` writes (rows: dataset, model, metric, mean, std, n)."""
    pd.DataFrame([(number, *r) for r in rows], columns=["table", "dataset", "model", "metric", "mean", "std",
                                                         "n"]).to_csv(path / f"table{number}.csv", index=False)
    prov = {"command": f"python -m benchmark run --table {number} --profile {profile} --seeds 3", "profile": profile,
            "seeds": 3, "passes": 3, "parent_run_id": "p", "git_commit": "0" * 40, "git_dirty": "false",
            "budget": budget or {}, "jobs": [], "per_seed": per_seed or [], **({"recipe": recipe} if recipe else {})}
    (path / f"table{number}_provenance.json").write_text(json.dumps(prov))


def _seeds(dataset, model, prefix, values: dict, seeds=(2, 0, 1)):
    """Per-seed rows, deliberately out of seed order (the leaderboard lists run ids by seed)."""
    return [{"dataset": dataset, "model": model, "seed": s, "run_id": f"{prefix}{s}", **values} for s in seeds]


def test_synthetic_ranks_ties_duplicates_and_paper(tmp_path):
    sprites = [("sprites", "s3vae", "acc", 90.0, 1.0, 3), ("sprites", "baseline", "acc", 80.0, 2.0, 3),
               ("sprites", "dsvae", "acc", 80.0, 0.5, 3), ("sprites", "mocogan", "acc", 70.0, 1.0, 3),
               ("sprites", "s3vae", "h_y_given_x", 0.3, 0.1, 3), ("sprites", "baseline", "h_y_given_x", 0.1, 0.1, 3),
               ("sprites", "dsvae", "h_y_given_x", 0.2, 0.1, 3),
               ("faces", "s3vae", "acc", 60.0, 1.0, 3), ("faces", "dsvae", "acc", 50.0, 1.0, 3)]
    per_seed = [r for m in ("s3vae", "baseline", "dsvae", "mocogan")
                for r in _seeds("sprites", m, f"{m}-", {"acc": 1.0, "h_y_given_x": 1.0})]
    per_seed += _seeds("faces", "s3vae", "f-s3vae-", {"acc": 1.0}) + _seeds("faces", "dsvae", "t1-dsvae-", {"acc": 1.0})
    _table(tmp_path, 1, sprites, per_seed=per_seed)
    # table 2: s3vae on faces from the same runs (one entry), dsvae from other runs with fewer seeds (table 1's
    # entry is ranked), no-mi new; and one table at another profile, ranked on its own
    per_seed2 = _seeds("faces", "s3vae", "f-s3vae-", {"acc": 1.0}) + \
        _seeds("faces", "dsvae", "t2-dsvae-", {"acc": 1.0}, seeds=(0, 1)) + \
        _seeds("faces", "no-mi", "nm-", {"acc": 1.0})
    _table(tmp_path, 2, [("faces", "s3vae", "acc", 60.0, 1.0, 3), ("faces", "dsvae", "acc", 99.0, 0.0, 2),
                         ("faces", "no-mi", "acc", 65.0, 1.0, 3)], per_seed=per_seed2)
    _table(tmp_path, 3, [("speech", "s3vae", "eer_z_f", 20.0, 1.0, 3), ("speech", "dsvae", "eer_z_f", 10.0, 1.0, 3)],
           profile="paper")
    files = write_leaderboard(tmp_path)
    assert [f.name for f in files] == ["leaderboard.csv", "leaderboard.md", "leaderboard.png"]
    assert all(f.stat().st_size > 0 for f in files)
    lb = pd.read_csv(tmp_path / "leaderboard.csv", keep_default_na=False, na_values=[""])
    got = {(r.dataset, r.metric, r.model): r for r in lb.itertuples()}
    # higher is better for acc; the tie (80, 80) shares rank 2 and the next is 4
    assert [got[("sprites", "acc", m)].rank for m in ("s3vae", "baseline", "dsvae", "mocogan")] == [1, 2, 2, 4]
    assert got[("sprites", "acc", "baseline")].of == 4
    # lower is better for H(y|x); mocogan has no value there: 3 ranked
    assert [got[("sprites", "h_y_given_x", m)].rank for m in ("baseline", "dsvae", "s3vae")] == [1, 2, 3]
    assert got[("sprites", "h_y_given_x", "s3vae")].of == 3 and ("sprites", "h_y_given_x", "mocogan") not in got
    # lower for eer_z_f, ranked apart (profile paper)
    assert got[("speech", "eer_z_f", "dsvae")].rank == 1 and got[("speech", "eer_z_f", "dsvae")].profile == "paper"
    # duplicates: same runs merge; different runs -> more seeds wins, the other listed
    s3 = got[("faces", "acc", "s3vae")]
    assert s3.table == "1, 2" and s3.rank == 2 and s3.run_ids == "f-s3vae-0;f-s3vae-1;f-s3vae-2"
    ds = got[("faces", "acc", "dsvae")]
    assert str(ds.table) == "1" and ds.mean == 50.0 and ds.rank == 3
    assert ds.other_tables.startswith("table 2: 99.00") and "(n=2)" in ds.other_tables
    assert got[("faces", "acc", "no-mi")].rank == 1
    # run ids in seed order; the paper's values (experiments/paper_tables.csv) and their own ranks
    assert got[("sprites", "acc", "mocogan")].run_ids == "mocogan-0;mocogan-1;mocogan-2"
    from benchmark.tables import paper_values
    paper = paper_values(1).set_index(["dataset", "model", "metric"]).value
    for m in ("s3vae", "baseline", "dsvae", "mocogan"):
        assert got[("sprites", "acc", m)].paper == paper[("sprites", m, "acc")]
    models = ["s3vae", "baseline", "dsvae", "mocogan"]
    want = pd.Series({m: paper[("sprites", m, "acc")] for m in models}).rank(ascending=False, method="min")
    assert all(got[("sprites", "acc", m)].paper_rank == want[m] for m in models)
    p2 = paper_values(2).set_index(["dataset", "model", "metric"]).value
    assert got[("faces", "acc", "no-mi")].paper == p2[("faces", "no-mi", "acc")]  # from its own table's row
    md = (tmp_path / "leaderboard.md").read_text()
    for line in ("| acc ↑ | 2 / 4 | baseline |", "| acc ↑ | 2 / 4 | dsvae |", "| acc ↑ | 4 / 4 | mocogan |"):
        assert line in md
    assert "`mocogan-` `mocogan-` `mocogan-`" in md and "mocogan-0" not in md  # 8 characters in the markdown
    assert "profile `paper`" in md
    _check_ranks(lb)


def test_budget_difference_is_flagged(tmp_path):
    _table(tmp_path, 1, [("faces", "s3vae", "acc", 60.0, 1.0, 3)], budget={"faces": {"train.max_steps": 100}})
    _table(tmp_path, 2, [("faces", "no-mi", "acc", 65.0, 1.0, 3)])
    write_leaderboard(tmp_path)
    assert "Budgets differ between the tables ranked here" in (tmp_path / "leaderboard.md").read_text()


def test_recipe_difference_is_flagged_only_where_every_table_records_one(tmp_path):
    """Same budget overrides but another recipe (a profile changed between the tables' commits): flagged; a table
    written before recipes were recorded is not taken for a different one."""
    warm = {"faces": {"all": {"loss.kl_warmup": "2000"}, "per_model": {}}}
    plain = {"faces": {"all": {"loss.kl_warmup": "0"}, "per_model": {}}}
    _table(tmp_path, 1, [("faces", "s3vae", "acc", 60.0, 1.0, 3)], recipe=warm)
    _table(tmp_path, 2, [("faces", "no-mi", "acc", 65.0, 1.0, 3)], recipe=plain)
    write_leaderboard(tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Budgets differ between the tables ranked here" in text and '"loss.kl_warmup": "2000"' in text
    _table(tmp_path, 2, [("faces", "no-mi", "acc", 65.0, 1.0, 3)])  # no recipe recorded
    write_leaderboard(tmp_path)
    assert "Budgets differ" not in (tmp_path / "leaderboard.md").read_text()


def test_errors_and_cli(tmp_path, capsys):
    from benchmark.__main__ import main
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    assert "no table*.csv" in capsys.readouterr().err
    # a metric with no direction (a per-factor probe) is listed, unranked
    _table(tmp_path, 1, [("sprites", "s3vae", "probe_action_z_f", 50.0, 1.0, 3),
                         ("sprites", "dsvae", "probe_action_z_f", 60.0, 1.0, 3)])
    assert main(["leaderboard", "--results", str(tmp_path)]) == 0
    lb = pd.read_csv(tmp_path / "leaderboard.csv")
    assert (lb.direction == "none").all() and lb["rank"].isna().all() and len(lb) == 2
    assert "| probe_action_z_f (no direction: unranked) | – | s3vae |" in (tmp_path / "leaderboard.md").read_text()
    with pytest.raises(ValueError, match="benchmark/directions.py"):
        direction("probe_action_z_f")


def test_one_source_of_directions():
    from benchmark.curves import LOWER_IS_BETTER
    from experiments import tables
    from experiments.claims import CLAIMS
    for c in CLAIMS:  # a claim's "better" is its metric's direction
        assert c.better == direction(c.metric), c.text
    for spec in tables().values():  # every table column has a direction
        for m in spec.metrics + spec.extra_metrics:
            assert direction(m) in (HIGHER, LOWER)
    assert {"eer_z_f", "recon_mse", "h_y_given_x", "label_kl"} <= set(LOWER_IS_BETTER)
    assert direction("eer_z_t") == HIGHER and direction("acc_skin_static") == HIGHER


def test_run_links_from_a_store():
    from benchmark.leaderboard import _runs_md
    ids = "a" * 32 + ";" + "b" * 32 + ";" + "c" * 32
    store = {"a" * 32: "http://h/#/experiments/1/runs/" + "a" * 32, "b" * 32: "", "c" * 32: None}
    assert _runs_md(ids, store) == (f"[`{'a' * 8}`](http://h/#/experiments/1/runs/{'a' * 32}) `{'b' * 8}` "
                                    f"`{'c' * 8}` (not in store)")
    assert _runs_md(ids, None) == " ".join(f"`{x * 8}`" for x in "abc")
