"""Learning curves from MLflow alone: two seeds of a smoke run with eval_every, then `curves`."""
import json

import pandas as pd
import pytest

from benchmark.__main__ import main


def test_curves_from_mlflow_filter(workdir, capsys):
    for seed in ("0", "1"):
        assert main(["train", "--profile", "smoke", "--seed", seed, "-o", "train.max_steps=4", "-o",
                     "train.eval_every=2", "--tag", "study=curve-test"]) == 0
    assert main(["train", "--profile", "smoke", "-o", "train.eval_every=2", "--tag", "study=other"]) == 0
    capsys.readouterr()
    assert main(["curves", "--filter", "tags.study = 'curve-test'", "--name", "ct", "--hue", "loss.recon",
                 "--out", "curves"]) == 0
    assert (workdir / "curves" / "ct.png").stat().st_size > 10_000
    df = pd.read_csv(workdir / "curves" / "ct.csv")
    assert sorted(df.seed.unique()) == [0, 1] and sorted(df.step.unique()) == [2, 4]  # the other study is out
    assert {"acc", "recon_acc_action", "recon_mse", "train_time_s"} <= set(df.metric)
    assert set(df.hue) == {"loss.recon=gaussian-learned"}
    prov = json.loads((workdir / "curves" / "ct.json").read_text())
    assert len(prov["runs"]) == 2 and prov["command"].startswith("python -m benchmark")
    md = (workdir / "curves" / "ct.md").read_text()
    assert "| loss.recon=gaussian-learned | 2 |" in md and "| loss.recon=gaussian-learned | 4 |" in md
    assert "Val held out (trained on `fit`) in 0 of 2 runs" in md  # train contains val: said, not hidden
    # a --until target these runs never logged is an error, not a silently missing row
    assert main(["curves", "--filter", "tags.study = 'curve-test'", "--name", "ct2", "--out", "curves",
                 "--until", "acc=50", "--until", "acc_typo=1"]) == 2
    err = capsys.readouterr().err
    assert "acc_typo" in err and "recon_mse" in err
    # no val metrics: a clear error naming the setting
    assert main(["curves", "--filter", "tags.study = 'nothing'", "--name", "x"]) == 2
    assert "no finished training run" in capsys.readouterr().err


def test_continue_extends_the_same_runs_curve(workdir, capsys, monkeypatch):
    """`train --continue RUN_ID` with a larger max_steps goes on in the same MLflow run: one curve, under the
    config the run trained with (a profile changed since does not leak in), and only for the run's model."""
    from mlflow.tracking import MlflowClient

    from benchmark import tracking
    from benchmark.profiles import PROFILES
    from benchmark.safeload import load_data
    args = ["train", "--profile", "smoke", "-o", "train.eval_every=2", "--tag", "study=cont"]
    assert main(args + ["-o", "train.max_steps=4"]) == 0
    captured = capsys.readouterr()
    run_id = json.loads(captured.out)["run_id"]
    assert "contains the val split" in captured.err  # in-sample curves are announced
    assert tracking.find_run(run_id).data.tags["val_held_out"] == "false"
    lr = tracking.find_run(run_id).data.params["train.lr"]
    assert main(["eval", "--run", run_id, "--passes", "1", "--max-sequences", "4"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(PROFILES["smoke"].train, "lr", 0.5)  # the profile as a later commit might have it
    assert main(args + ["--model", "dsvae", "--continue", run_id]) == 2
    assert "the run trained s3vae on sprites" in capsys.readouterr().err
    assert main(args + ["-o", "train.max_steps=6", "--continue", run_id]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == run_id and out["steps"] == 6
    config = load_data(out["checkpoint"], "test")["config"]
    assert str(config["train"]["lr"]) == lr and config["train"]["max_steps"] == 6
    client = MlflowClient(tracking.resolve_uri(None))
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [2, 4, 6]
    # its eval/ metrics are of 4 steps: stale, so no table reuses them; params stay (MLflow) and the change is a tag
    from benchmark.tables import _finished_eval
    run = tracking.find_run(run_id)
    assert tracking.EVAL_STALE_TAG in run.data.tags and not _finished_eval([run], "acc")
    assert run.data.tags["continued_with"] == "train.max_steps: 4 -> 6"
    assert main(["eval", "--run", run_id, "--passes", "1", "--max-sequences", "4"]) == 0
    run = tracking.find_run(run_id)
    assert tracking.EVAL_STALE_TAG not in run.data.tags and _finished_eval([run], "acc")
    assert len(tracking.search_runs("tags.study = 'cont'")) == 1
    assert main(args + ["--continue", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_hue_joins_several_keys():
    from types import SimpleNamespace

    from benchmark.curves import _hue_value
    run = SimpleNamespace(data=SimpleNamespace(tags={"model": "s3vae", "study": "x"},
                                               params={"loss.recon": "bce"}))
    assert _hue_value(run, "model") == "s3vae"
    assert _hue_value(run, "model,loss.recon") == "s3vae loss.recon=bce"
    assert _hue_value(run, "loss.mi_reduce") == "loss.mi_reduce=?"
    assert _hue_value(run, "model,loss.mi_reduce,loss.recon") == "s3vae loss.recon=bce"  # absent keys left out


def test_time_to_target_known_answer():
    import math

    import pandas as pd
    import pytest

    from benchmark.curves import parse_targets, targets_table, time_to_target
    rows = []
    for seed, accs in ((0, [10, 50, 85, 90]), (1, [10, 40, 60, 81])):
        for i, a in enumerate(accs):
            rows.append({"hue": "s3vae", "seed": seed, "dataset": "sprites", "metric": "acc", "step": 500 * (i + 1),
                         "train_time_s": 60.0 * (i + 1), "value": float(a)})
            rows.append({"hue": "s3vae", "seed": seed, "dataset": "sprites", "metric": "recon_mse",
                         "step": 500 * (i + 1), "train_time_s": 60.0 * (i + 1), "value": 1.0 / (i + 1)})
    df = pd.DataFrame(rows)
    t = time_to_target(df, "acc", 80).set_index("seed")
    assert t.loc[0, "step"] == 1500 and t.loc[0, "train_min"] == 3.0 and t.loc[1, "step"] == 2000
    assert math.isnan(time_to_target(df, "acc", 95).step.iloc[0])
    assert time_to_target(df, "recon_mse", 0.3).step.tolist() == [2000, 2000], "lower is better: first ≤ target"
    md = targets_table(df, "sprites", [("acc", 80), ("acc", 95)])
    assert "| s3vae | acc | ≥ 80 | 2/2 | 1750 | 3.5 |" in md and "not within 2000 steps" in md
    assert parse_targets(["acc=80", "eer_z_f=20.5"]) == [("acc", 80.0), ("eer_z_f", 20.5)]
    with pytest.raises(ValueError, match="--until 'acc'"):
        parse_targets(["acc"])


def test_report_and_curves_skip_a_stopped_sitting(workdir):
    """A `--stop-after` sitting's parent ends FINISHED without jobs.json: `curves --table` / `report --table` take
    the newest complete table run, and with none say so clearly instead of failing on a missing artifact."""
    from benchmark import tracking
    from benchmark.curves import table_curves
    with tracking.start_run("table1-cpu", tags={"kind": "table", "table": 1}) as done:
        done.log_text("[]", "jobs.json")
    with tracking.start_run("table1-cpu", tags={"kind": "table", "table": 1}) as stopped:
        stopped.set_tags({"stopped": "--stop-after 60 min"})
    assert [r.info.run_id for r in tracking.complete_table_runs(1)] == [done.run_id]
    with tracking.start_run("table2-cpu", tags={"kind": "table", "table": 2}) as only_stopped:
        only_stopped.set_tags({"stopped": "--stop-after 60 min"})
    with pytest.raises(FileNotFoundError, match="curves --table 2: no finished table run"):
        table_curves(2, workdir / "curves")
