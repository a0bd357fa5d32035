"""`run --table N` end to end at smoke size: files, reuse, report from MLflow, a real mlflow server."""
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
import torch

from benchmark.__main__ import main
from benchmark.config import resolve_config
from benchmark.tables import report_table, run_table

SCHEMA = ["table", "dataset", "model", "metric", "mean", "std", "n"]


def check_files(out, number):
    for ext in ("csv", "md", "tex", "png"):
        assert (out / f"table{number}.{ext}").is_file()
    df = pd.read_csv(out / f"table{number}.csv")
    assert list(df.columns) == SCHEMA and (df.table == number).all()
    prov = json.loads((out / f"table{number}_provenance.json").read_text())
    assert {"command", "git_commit", "profile", "seeds", "per_seed", "jobs", "hardware", "packages"} <= set(prov)
    run_ids = {j["run_id"] for j in prov["jobs"]}
    assert {r["run_id"] for r in prov["per_seed"]} == run_ids
    return df, prov


def test_table2_smoke_then_reuse_and_report(workdir, monkeypatch):
    from benchmark import tracking
    out = workdir / "results"
    # as in a checkout whose committed results the table overwrites: "dirty" once its own files are written
    monkeypatch.setattr(tracking, "git_info", lambda: {"git_commit": "c0ffee",
                                                       "git_dirty": str((out / "table2.csv").exists()).lower()})
    first = run_table(2, "smoke", seeds=1, datasets=["sprites"], passes=1, out=out, progress=False)
    assert {j["how"] for j in first["jobs"]} == {"trained"}
    df, prov = check_files(out, 2)
    assert prov["git_dirty"] == "false", "the tree as it was when the table started, not after writing its files"
    report_table(2, workdir / "rebuilt0")
    rebuilt_prov = json.loads((workdir / "rebuilt0" / "table2_provenance.json").read_text())
    assert (rebuilt_prov["git_commit"], rebuilt_prov["git_dirty"]) == ("c0ffee", "false"), "from the table run's tags"
    assert rebuilt_prov["command"] == prov["command"] and rebuilt_prov["rebuilt_by"] == "python -m benchmark report --table 2"
    assert set(df.model) == {"s3vae", "no-scc", "no-dfp", "no-mi"} and (df.n == 1).all()
    assert {"acc", "is", "h_y_given_x", "h_y"} <= set(df.metric)
    again = run_table(2, "smoke", seeds=1, datasets=["sprites"], passes=1, out=out, progress=False)
    assert {j["how"] for j in again["jobs"]} == {"reused"}, "a second run trains nothing"
    assert [j["run_id"] for j in again["jobs"]] == [j["run_id"] for j in first["jobs"]]
    rebuilt = workdir / "rebuilt"
    report_table(2, rebuilt)
    pd.testing.assert_frame_equal(pd.read_csv(rebuilt / "table2.csv"), df)


@pytest.mark.parametrize("number, datasets, metrics", [
    (1, ["smmnist"], {"acc", "is", "h_y_given_x", "h_y"}),
    (3, None, {"eer_z_f", "eer_z_t"}),
])
def test_tables_1_and_3_smoke(workdir, number, datasets, metrics):
    out = workdir / "results"
    run_table(number, "smoke", seeds=1, datasets=datasets, passes=1, out=out, progress=False)
    df, _ = check_files(out, number)
    from experiments import tables
    assert set(df.model) == set(tables()[number].models)
    for model, g in df.groupby("model"):
        assert metrics <= set(g.metric), model
    # diagnostics from the logged evaluation: a row per encoder run, none for a generator (MoCoGAN)
    assert main(["diagnose", "--table", str(number), "--results", str(out)]) == 0
    diag = json.loads((out / f"table{number}_diagnostics.json").read_text())
    assert {r["model"] for r in diag["runs"]} == set(df.model) - {"mocogan"}
    assert all(r["recon_mse"] > 0 for r in diag["runs"])


def test_table_budget_overrides_every_run(workdir, monkeypatch):
    import dataclasses

    import mlflow

    import benchmark.tables as T
    from benchmark.tracking import resolve_uri
    budget = {"speech": {"train.max_steps": 2, "model.hidden": 16}}
    spec = dataclasses.replace(T.get_table(3), models=("dsvae",), budgets={"smoke": budget})
    monkeypatch.setattr(T, "tables", lambda: {3: spec})
    out = workdir / "results"
    res = run_table(3, "smoke", seeds=1, passes=1, out=out, progress=False)
    params = mlflow.MlflowClient(resolve_uri()).get_run(res["jobs"][0]["run_id"]).data.params
    assert params["train.max_steps"] == "2" and params["model.hidden"] == "16"
    _, prov = check_files(out, 3)
    assert prov["budget"] == budget
    assert "`train.max_steps=2`" in (out / "table3.md").read_text()
    # the recipe the run logged (not the profile as it is now) is stated beside the numbers
    assert prov["recipe"]["speech"]["all"]["train.max_steps"] == "2" == prov["per_seed"][0]["recipe.train.max_steps"]
    assert "Recipe (the cells' runs' logged params" in (out / "table3.md").read_text()


def test_unknown_table_and_dataset(workdir, capsys):
    assert main(["run", "--table", "7", "--profile", "smoke"]) == 2
    assert "unknown table 7" in capsys.readouterr().err
    assert main(["run", "--table", "3", "--profile", "smoke", "--datasets", "sprites"]) == 2
    assert "table 3 is defined on speech" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_fast(workdir, capsys):
    t0 = time.time()
    assert main(["run", "--table", "2", "--profile", "smoke", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "is unreachable" in capsys.readouterr().err
    assert time.time() - t0 < 20
    assert not (workdir / "checkpoints").exists(), "nothing trained before the check"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(workdir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{workdir}/server.db",
                             "--default-artifact-root", str(workdir / "server-artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(360):  # the server takes 15-60 s to start on a busy 2-core machine
            try:
                urllib.request.urlopen(uri + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's workers live in its process group
        proc.wait(timeout=30)


def test_table_logged_to_a_real_mlflow_server(mlflow_server, workdir):
    import mlflow
    # table 3 at smoke: three small speech cells and no judge to train (the server path is what is tested)
    res = run_table(3, "smoke", seeds=1, passes=1, out=workdir / "r", tracking_uri=mlflow_server, progress=False)
    client = mlflow.MlflowClient(mlflow_server)
    parent = client.get_run(res["parent_run_id"])
    assert parent.data.tags["kind"] == "table"
    assert {"table/table3.csv", "table/table3.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id, "table")}
    # the parent carries the table itself: cells as metrics, the markdown as its description, what it ran as params
    assert parent.data.metrics["table/speech/s3vae/eer_z_f_n"] == 1
    assert parent.data.tags["mlflow.note.content"].startswith("# Table 3")
    assert parent.data.params["models"] == "fhvae,dsvae,s3vae" and parent.data.params["seeds"] == "1"
    for job in res["jobs"]:
        run = client.get_run(job["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "eval/eer_z_f" in run.data.metrics


def test_a_judge_below_its_floor_flags_the_table(tmp_path):
    from benchmark.judges import JUDGE_FLOOR, judge_warning, weak_heads
    from benchmark.tables import get_table, write_table
    assert weak_heads({"identity": 99.0, "expression": 17.0, "static_all": 10.0}) == {"expression": 17.0}
    assert judge_warning("faces", {"identity": 99.0, "expression": 97.0}) is None
    rows = [{"dataset": "faces", "model": m, "seed": s, "run_id": f"{m}{s}", "acc": 100.0, "is": 1.0,
             "h_y_given_x": 0.0, "h_y": 0.0, "judge_run_id": "j", "judge_acc_identity": 99.0,
             "judge_acc_expression": 16.7} for m in ("s3vae", "no-scc") for s in range(3)]
    prov = {"command": "python -m benchmark run --table 2", "profile": "smoke", "seeds": 3, "passes": 1,
            "wall_time_s": 1.0}
    write_table(get_table(2), pd.DataFrame(rows), tmp_path, prov)
    md = (tmp_path / "table2.md").read_text()
    assert f"WARNING: the faces judge is below its floor (expression 16.7 % on real test sequences, floor " \
           f"{JUDGE_FLOOR:g} %)" in md.splitlines()[2]
    assert json.loads((tmp_path / "table2_provenance.json").read_text())["judge_warnings"]
    rows[-1] |= {"judge_run_id": "k", "judge_acc_expression": 99.0, "judge_acc_identity": 95.0}  # another machine's
    write_table(get_table(2), pd.DataFrame(rows), tmp_path, prov)
    judges = json.loads((tmp_path / "table2_provenance.json").read_text())["judges"]["faces"]
    assert judges == {"identity": 95.0, "expression": 16.7, "judge_run_id": "j, k"}, "every judge run, weakest heads"
    for i, r in enumerate(rows):  # a table written after its cells trained in earlier sittings
        r |= {"how": "reused" if i < 4 else "trained", "wall_time_s": 300.0}
    write_table(get_table(2), pd.DataFrame(rows), tmp_path, prov)
    assert "4 of 6 cells were reused from earlier sittings; the runs' own training times add up to 0.5 h" in \
        (tmp_path / "table2.md").read_text()



def test_a_run_below_its_learning_floor_flags_the_table(tmp_path):
    """Known answer: one faces run draws the expression at 75 % on its reconstructions (floor 80): the table
    says which run, which family and by how much, at the top; the provenance lists it; MoCoGAN (no
    reconstructions, NaN) and the runs over the floors are not named."""
    from benchmark.tables import get_table, write_table
    from experiments import LEARNING_FLOORS, below_floors
    rows = [{"dataset": "faces", "model": m, "seed": s, "run_id": f"{m}{s}", "acc": 90.0, "is": 1.0,
             "h_y_given_x": 0.0, "h_y": 0.0, "recon_acc_identity": 99.0, "recon_acc_expression": 95.0}
            for m in ("s3vae", "no-scc") for s in range(3)]
    rows[4]["recon_acc_expression"] = 75.0
    rows.append({"dataset": "faces", "model": "no-mi", "seed": 0, "run_id": "m0", "acc": 90.0,
                 "recon_acc_identity": float("nan"), "recon_acc_expression": float("nan")})
    assert below_floors(rows) == [{"dataset": "faces", "model": "no-scc", "seed": 1, "run_id": "no-scc1",
                                   "family": "expression", "recon_acc": 75.0, "floor": 80.0}]
    prov = {"command": "python -m benchmark run --table 2", "profile": "smoke", "seeds": 3, "passes": 1,
            "wall_time_s": 1.0}
    write_table(get_table(2), pd.DataFrame(rows), tmp_path, prov)
    top = (tmp_path / "table2.md").read_text().splitlines()[2]
    assert top.startswith("**NOT LEARNED: 1 run(s)") and "no-scc/faces seed 1: expression 75.0 % (floor 80)" in top
    p = json.loads((tmp_path / "table2_provenance.json").read_text())
    assert p["learning_floors"]["floors"] == {"faces": LEARNING_FLOORS["faces"]} and len(p["learning_floors"]["below"]) == 1
    assert p["judge_warnings"] == []
    rows[4]["recon_acc_expression"] = 85.0
    write_table(get_table(2), pd.DataFrame(rows), tmp_path, prov)
    assert "NOT LEARNED" not in (tmp_path / "table2.md").read_text()


# ------------------------------------------------------------------ real files: --data-dir / --data-option

def test_real_data_options_resolve_as_train_does(tmp_path):
    import argparse

    import benchmark.tables as T
    from benchmark.__main__ import _config
    sprites, faces = tmp_path / "sprites", tmp_path / "mug"
    sprites.mkdir(), faces.mkdir()
    spec = T.get_table(2)
    data, params = T.real_data(spec, ["sprites", "faces"], [f"sprites={sprites}", f"faces={faces}"],
                               ["faces.image_size=64", "faces.frames=8"])
    assert data == {"sprites": {"data.data_dir": str(sprites)},
                    "faces": {"data.data_dir": str(faces), "data.options.image_size": "64",
                              "data.options.frames": "8"}}
    assert params == {"data_dir.sprites": str(sprites), "data_dir.faces": str(faces),
                      "data_option.faces.image_size": "64", "data_option.faces.frames": "8"}
    assert T.real_data(spec, ["faces"]) == ({}, {}), "no options: embedded data"
    # a cell's config is the one `train --data-dir PATH -o data.KEY=VALUE` resolves (values parsed alike)
    spec = dataclasses.replace(spec, data=data)
    for dataset, path, opts in (("faces", faces, ["data.image_size=64", "data.frames=8"]), ("sprites", sprites, [])):
        cfg = resolve_config("s3vae", dataset, "smoke", 1, spec.overrides("smoke", dataset))
        cli = _config(argparse.Namespace(model="s3vae", dataset=dataset, profile="smoke", seed=1,
                                         data_dir=str(path), override=opts))
        assert cfg.to_dict() == cli.to_dict()
        assert cfg.data.data_dir == str(path)
    faces_cfg = resolve_config("s3vae", "faces", "smoke", 1, spec.overrides("smoke", "faces"))
    assert faces_cfg.data.options == {"image_size": 64, "frames": 8}


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "speech=."], "--data-dir speech=.: 'speech' is not a dataset of this run; table 2 runs on "
                                 "faces here (--datasets chooses among faces, smmnist, sprites)"),
    (["--datasets", "sprites", "--data-option", "faces.image_size=64"],
     "'faces' is not a dataset of this run; table 2 runs on sprites here"),
    (["--data-dir", "faces"], "--data-dir 'faces': expected DATASET=PATH, e.g. sprites=/data/sprites"),
    (["--data-option", "faces.image_size"], "--data-option 'faces.image_size': expected DATASET.KEY=VALUE"),
    (["--data-option", "image_size=64"], "--data-option image_size=64: expected DATASET.KEY=VALUE, "
                                         "e.g. speech.split=core"),
    (["--data-dir", "faces=no/such/dir"], "--data-dir faces=no/such/dir: no/such/dir does not exist; expected "
                                          "the directory of the real faces files"),
], ids=["dataset-not-in-table", "dataset-not-in-run", "dir-no-equals", "option-no-equals", "option-no-dataset",
        "no-such-dir"])
def test_real_data_errors_before_any_work(workdir, capsys, argv, message):
    assert main(["run", "--table", "2", "--profile", "smoke", "--seeds", "1", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "checkpoints").exists() and not (workdir / "mlruns.db").exists(), "nothing started"


def test_a_loaders_own_error_surfaces(workdir, capsys):
    (workdir / "empty").mkdir()
    assert main(["run", "--table", "2", "--profile", "smoke", "--seeds", "1", "--datasets", "sprites",
                 "--data-dir", f"sprites={workdir / 'empty'}"]) == 2
    err = capsys.readouterr().err
    assert "sprites_X_train.npy" in err and str(workdir / "empty") in err, err
    assert not (workdir / "checkpoints").exists()


def test_real_data_cells_have_their_own_fingerprint(workdir, monkeypatch):
    import benchmark.tables as T
    real = workdir / "sprites"
    write_fake_sprites(real)
    spec = T.get_table(2)
    embedded_cfg, embedded_fp = T.cell_fingerprint(spec, "sprites", "s3vae", 0, "smoke")
    data, _ = T.real_data(spec, ["sprites"], [f"sprites={real}"], ["sprites.seed=1"])
    cfg, fp = T.cell_fingerprint(dataclasses.replace(spec, data=data), "sprites", "s3vae", 0, "smoke")
    assert (cfg.data.data_dir, cfg.data.options) == (str(real), {"seed": 1})
    assert (embedded_cfg.data.data_dir, embedded_cfg.data.options) == (None, {})
    assert fp != embedded_fp, "real and embedded cells never reuse each other's runs"
    # the helpers of --workers get the options with the rest of the command
    monkeypatch.setattr(sys, "argv", ["benchmark", "run", "--table", "2", "--workers", "3", "--data-dir",
                                      f"sprites={real}", "--data-option=sprites.seed=1"])
    assert T._worker_argv(["--queue", "Q"]) == ["run", "--table", "2", "--data-dir", f"sprites={real}",
                                                "--data-option=sprites.seed=1", "--queue", "Q", "--worker"]
    # ... and what the launcher resolved in place of its own: the queue it made (under --force a new one per
    # command: a helper making its own would train every cell again) and the profile (`auto` resolves per machine)
    monkeypatch.setattr(sys, "argv", ["benchmark", "run", "--table", "2", "--workers", "2", "--force", "--profile",
                                      "auto", "--queue-name=old"])
    assert T._worker_argv(["--queue-name", "N", "--profile", "cpu"]) == [
        "run", "--table", "2", "--force", "--queue-name", "N", "--profile", "cpu", "--worker"]
    with pytest.raises(ValueError, match="--launcher slurm: give --precision bf16 or fp32"):
        T.run_table(2, "smoke", 1, launcher="slurm", workers=2)


def write_fake_sprites(path, train=20, test=6):
    """Real-format sprites files (the Li & Mandt .npy layout) of a few rendered characters."""
    import numpy as np

    from tests.test_sprites import fake_real_sequences
    path.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        x, A, D, _, _ = fake_real_sequences(n, rng)
        for name, a in (("X", x), ("A", A), ("D", D)):
            np.save(path / f"sprites_{name}_{split}.npy", a)


@pytest.fixture
def one_thread():
    """Smoke-size cells: a second thread only waits (the table below took 4x longer on a busy 2-core machine)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_table_on_real_files_end_to_end(workdir, one_thread):
    import mlflow

    from benchmark.tracking import resolve_uri
    real = workdir / "real-sprites"
    write_fake_sprites(real)
    out = workdir / "results-real"
    assert main(["run", "--table", "2", "--profile", "smoke", "--datasets", "sprites", "--seeds", "1",
                 "--passes", "1", "--data-dir", f"sprites={real}", "--out", str(out)]) == 0
    _, prov = check_files(out, 2)
    assert prov["data"] == {"data_dir.sprites": str(real)}
    assert f"`data_dir.sprites={real}`" in (out / "table2.md").read_text()
    client = mlflow.MlflowClient(resolve_uri())
    assert client.get_run(prov["parent_run_id"]).data.params["data_dir.sprites"] == str(real)
    for job in prov["jobs"]:
        run = client.get_run(job["run_id"])
        assert run.data.params["data.data_dir"] == str(real)
        # the judge that scored it trained on the same real files
        assert client.get_run(run.data.tags["judge_run_id"]).data.params["data.data_dir"] == str(real)
    with pytest.raises(FileNotFoundError, match="no finished table run on the embedded data"):
        report_table(2, workdir / "rebuilt")  # never the real-data table into the embedded one's files
    report_table(2, workdir / "rebuilt", run_id=prov["parent_run_id"])
    assert json.loads((workdir / "rebuilt" / "table2_provenance.json").read_text())["data"] == prov["data"]
    with pytest.raises(ValueError, match="not a table 3 run"):
        report_table(3, workdir / "rebuilt", run_id=prov["parent_run_id"])


def test_a_table_goes_on_in_another_store_from_its_exported_cells(workdir, tmp_path_factory, monkeypatch, capsys):
    """Sitting 1 runs Table 3 (smoke) and exports its cells; sitting 2, on a fresh store and a machine without
    those checkpoints, imports them: every cell is reused (nothing trains), the numbers are the first sitting's,
    and `diagnose` works from the logged evaluation."""
    import shutil
    from benchmark import tracking
    from benchmark.diagnose import logged_history, regulariser_activity
    first = run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False)
    mse = {j["model"]: tracking.find_run(j["run_id"]).data.metrics["eval/recon_mse"] for j in first["jobs"]}
    activity = {j["model"]: regulariser_activity(logged_history(j["run_id"])) for j in first["jobs"]}
    activity_ids = {j["model"]: j["run_id"] for j in first["jobs"]}
    assert set(activity["s3vae"]) == {"scc_active_pct", "scc_mean", "mi_of_ceiling"}
    # one cell as if another table had trained it first (same fingerprint, its `table` tag): still exported
    tracking.get_client().set_tag(first["jobs"][0]["run_id"], "table", "1")
    assert main(["export-runs", "--table", "3", "--out", "cells.json"]) == 0
    assert "(3 runs)" in capsys.readouterr().out
    assert main(["export-runs", "--table", "3", "--out", "cells.json.gz"]) == 0  # gzipped: the same runs
    import gzip
    zipped = json.loads(gzip.decompress((workdir / "cells.json.gz").read_bytes()))["runs"]
    plain = json.loads((workdir / "cells.json").read_text())["runs"]
    assert [r["run_id"] for r in zipped] == [r["run_id"] for r in plain]
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copy(workdir / "cells.json", elsewhere)
    shutil.copy(workdir / "cells.json.gz", elsewhere)
    monkeypatch.chdir(elsewhere)
    assert main(["import-runs", "cells.json"]) == 0
    assert "imported 3 runs, skipped 0" in capsys.readouterr().out
    assert main(["import-runs", "cells.json"]) == 0
    assert "imported 0 runs, skipped 3" in capsys.readouterr().out, "importing twice adds nothing"
    assert main(["import-runs", "cells.json.gz"]) == 0
    assert "imported 0 runs, skipped 3" in capsys.readouterr().out, "the gzipped file holds the same runs"
    again = run_table(3, "smoke", seeds=1, passes=1, out=elsewhere / "results", progress=False)
    assert {j["how"] for j in again["jobs"]} == {"reused"} and not (elsewhere / "checkpoints").exists()
    assert {j["run_id"] for j in again["jobs"]} == {j["run_id"] for j in first["jobs"]}, "ids valid in every store"
    pd.testing.assert_frame_equal(pd.read_csv(elsewhere / "results" / "table3.csv"),
                                  pd.read_csv(workdir / "results" / "table3.csv"))
    assert main(["diagnose", "--table", "3"]) == 0
    diag = json.loads((elsewhere / "results" / "table3_diagnostics.json").read_text())
    assert {r["model"]: r["recon_mse"] for r in diag["runs"]} == mse and "speech" in diag["feature_eer"]
    got = {r["model"]: r for r in diag["runs"]}
    for model, want in activity.items():  # the regulariser curves travel whole: the same activity as at home
        assert {k: got[model][k] for k in want} == pytest.approx(want)
    # a file from before they travelled carried them as their last value: no activity from one point, "—"
    old = json.loads((elsewhere / "cells.json").read_text())
    for rec in old["runs"]:
        del rec["last_only"]
        rec["metrics"] = {k: v[-1:] if k.startswith("train/") else v for k, v in rec["metrics"].items()}
    third = tmp_path_factory.mktemp("third")
    (third / "cells.json").write_text(json.dumps(old))
    shutil.copytree(elsewhere / "results", third / "results")
    monkeypatch.chdir(third)
    assert main(["import-runs", "cells.json"]) == 0 and main(["diagnose", "--table", "3"]) == 0
    diag = json.loads((third / "results" / "table3_diagnostics.json").read_text())
    assert {r["model"]: r["recon_mse"] for r in diag["runs"]} == mse
    assert not any("mi_of_ceiling" in r or "scc_active_pct" in r for r in diag["runs"])
    for r in tracking.search_runs("tags.kind = 'train'"):  # as a store that older code imported them into looks
        tracking.get_client().delete_tag(r.info.run_id, "imported_last_only")
    assert main(["diagnose", "--table", "3"]) == 0
    diag = json.loads((third / "results" / "table3_diagnostics.json").read_text())
    assert not any("mi_of_ceiling" in r or "scc_active_pct" in r for r in diag["runs"])
    assert main(["export-runs", "--table", "3", "--out", "again.json"]) == 0  # passed on, never laundered
    again = {r["run_id"]: r for r in json.loads((third / "again.json").read_text())["runs"]}
    assert set(again) == {j["run_id"] for j in first["jobs"]}
    assert {"train/mi", "train/mi_ceiling", "train/scc"} <= set(again[activity_ids["s3vae"]]["last_only"])
    assert "| s3vae |" in (third / "results" / "table3_diagnostics.md").read_text()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "bad.json").write_text("{}")
    assert main(["import-runs", "bad.json"]) == 2
    assert "bad.json: expected a file written by `export-runs`" in capsys.readouterr().err
    (elsewhere / "cut.json.gz").write_bytes((elsewhere / "cells.json.gz").read_bytes()[:100])  # a truncated copy
    assert main(["import-runs", "cut.json.gz"]) == 2
    assert "cut.json.gz: not JSON or gzipped JSON" in capsys.readouterr().err


def test_fingerprint_holds_the_precision_that_runs_and_run_can_pin_it(workdir, monkeypatch):
    """`auto` is fingerprinted as what it resolves to on this machine (bf16 cells from an AVX-512 sitting are not
    reused as fp32 ones on an AVX2 machine), and `run --precision fp32` puts fp32 in every cell's config."""
    import dataclasses

    import torch

    from benchmark.api import run_fingerprint
    from benchmark.tables import cell_fingerprint, get_table
    from benchmark.trainer import resolve_precision
    cfg = resolve_config("s3vae", "sprites", "smoke", seed=0)
    here = resolve_precision("auto", torch.device("cpu"))
    fp = {p: run_fingerprint(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=p)), "d")
          for p in ("auto", "bf16", "fp32")}
    assert fp["auto"] == fp[here] and fp["bf16"] != fp["fp32"]
    spec = dataclasses.replace(get_table(3), run={"train.precision": "fp32"})
    pinned, _ = cell_fingerprint(spec, "speech", "s3vae", 0, "smoke")
    assert pinned.train.precision == "fp32"
    same = cell_fingerprint(spec, "speech", "s3vae", 0, "smoke")[1] == cell_fingerprint(
        get_table(3), "speech", "s3vae", 0, "smoke")[1]
    assert same == (here == "fp32"), "pinned fp32 is the auto cell exactly where auto resolves to fp32"


def test_stop_after_ends_a_sitting_between_cells_and_the_next_goes_on(workdir, capsys):
    """--stop-after: after the first cell (no pace known before it) no cell that would end past the limit is
    started; the sitting exits cleanly without table files, and the same command later finishes the rest."""
    first = run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False, stop_after_min=1e-4)
    assert len(first["jobs"]) == 1 and first["files"] == [] and not (workdir / "results" / "table3.csv").exists()
    assert "sitting over: 1 of 3 cells done" in capsys.readouterr().err
    rest = run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False)
    assert sorted(j["how"] for j in rest["jobs"]) == ["reused", "trained", "trained"]
    err = capsys.readouterr().err  # the ETA paces the cells this worker trained, not the reused one (~0 s)
    assert err.count("ETA") == 1 and "(1 cell(s) so far)" in err


def test_plan_shows_each_cells_state_and_the_training_left_without_running_anything(workdir, capsys):
    """`run --plan`: before any run every cell is `train` with no pace; after a sitting of one cell that cell is
    `done` (its run id), the other seed of the same model is timed at its pace (known answer: the budget in steps
    times the finished run's own s/step), an unfinished run with a checkpoint is `started` at its last step; and
    planning creates no run."""
    from benchmark import tracking
    from benchmark.tables import format_plan, plan_table
    empty = plan_table(3, "smoke", seeds=2)
    assert list(empty.state.unique()) == ["train"] and empty.minutes_left.isna().all() and len(empty) == 6
    first = run_table(3, "smoke", seeds=2, passes=1, out=workdir / "results", progress=False, stop_after_min=1e-4)
    assert len(first["jobs"]) == 1
    run_id = tracking.search_runs("attributes.status = 'FINISHED' and tags.kind = 'train'")[0].info.run_id
    client = tracking.get_client()
    (step, train_s), = [(m.step, m.value) for m in client.get_metric_history(run_id, "sys/train_time_s")]
    n_runs = len(tracking.search_runs(""))
    plan = plan_table(3, "smoke", seeds=2).set_index(["model", "seed"])
    assert plan.loc[("fhvae", 0), "state"] == "done" and plan.loc[("fhvae", 0), "run_id"] == run_id
    assert plan.loc[("fhvae", 0), "minutes_left"] == 0 and (plan.steps == step).all()
    other = plan.loc[("fhvae", 1)]
    assert other.state == "train" and other.pace_from == "1 finished run"
    assert other.minutes_left == pytest.approx(step * (train_s / step) / 60)  # budget × that run's s/step
    assert plan.loc[["dsvae", "s3vae"]].minutes_left.isna().all(), "no finished run of their config to time them"
    client.set_terminated(run_id, "KILLED")  # as a sitting killed mid-cell leaves it: unfinished, checkpointed
    again = plan_table(3, "smoke", seeds=2).set_index(["model", "seed"]).loc[("fhvae", 0)]
    assert (again.state, again.at_step, again.run_id, again.pace_from) == ("started", step, run_id, "this run so far")
    assert main(["run", "--table", "3", "--profile", "smoke", "--seeds", "2", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "cells: 0 done, 0 evaluate, 1 started, 0 extend, 5 train" in out and "5 cell(s) with no run of their config" in out
    assert len(tracking.search_runs("")) == n_runs, "planning trains, evaluates and logs nothing"
    assert format_plan(plan.reset_index(), 3).count("\n| speech |") == 6


def test_a_run_trained_under_other_learning_code_is_flagged_when_a_table_reuses_it(workdir, capsys, monkeypatch):
    """A run records the hash of the unfingerprinted code that decides what it learns (`api._learning_code`) at
    creation; when that code has changed since (here: the tag rewritten, as an older tree would have left it),
    `--plan` names the cell and the sitting that reuses it warns, instead of reusing it silently. The hash
    itself follows the listed functions' source (known answer: another function list, another hash)."""
    from benchmark import api, tracking
    from benchmark.tables import format_plan, plan_table
    run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False, stop_after_min=1e-4)
    run_id = tracking.search_runs("attributes.status = 'FINISHED' and tags.kind = 'train'")[0].info.run_id
    client = tracking.get_client()
    assert client.get_run(run_id).data.tags[api.LEARNING_CODE_TAG] == api.learning_code_hash()
    assert not plan_table(3, "smoke", seeds=1).code_changed.any()
    client.set_tag(run_id, api.LEARNING_CODE_TAG, "0123456789abcdef")
    plan = plan_table(3, "smoke", seeds=1)
    assert plan.code_changed.tolist() == [r == run_id for r in plan.run_id]
    assert f"learning code changed since 1 cell(s)' runs trained (speech/fhvae/s0 done run {run_id[:8]})" in \
        format_plan(plan, 3)
    capsys.readouterr()
    run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False, stop_after_min=1e-4)
    assert f"warning: run {run_id} trained under other learning code" in capsys.readouterr().err
    client.set_tag(run_id, api.LEARNING_CODE_TAG, "")  # a run from before the tag: unknown, not flagged
    assert api.learning_code_drift(client.get_run(run_id)) is None
    was, listed = api.learning_code_hash(), api._learning_code
    monkeypatch.setattr(api, "_learning_code", lambda: listed()[:-1])
    api.learning_code_hash.cache_clear()
    try:
        assert api.learning_code_hash() != was
    finally:
        monkeypatch.undo()
        api.learning_code_hash.cache_clear()
    assert api.learning_code_hash() == was


def test_recipe_of_splits_what_every_model_shares_from_each_models_own():
    """Known answer: sprites' four rows (two models × two seeds) share batch 32; the warm-up differs by model
    (MoCoGAN 0), so it is per model; a dataset whose runs logged no recipe is left out."""
    from benchmark.tables import recipe_of
    rows = [{"dataset": "sprites", "model": m, "seed": s, "recipe.train.batch_size": "32",
             "recipe.loss.kl_warmup": w} for m, w in (("baseline", "2000"), ("mocogan", "0")) for s in (0, 1)]
    rows.append({"dataset": "faces", "model": "s3vae", "seed": 0})
    assert recipe_of(pd.DataFrame(rows)) == {"sprites": {
        "all": {"train.batch_size": "32"},
        "per_model": {"baseline": {"loss.kl_warmup": "2000"}, "mocogan": {"loss.kl_warmup": "0"}}}}


def test_a_run_that_goes_on_from_steps_of_other_learning_code_is_tagged_mixed():
    """Known answers of the tag a resumed or extended run gets: the same code stays itself, other code gives
    "EARLIER+THIS" (flagged), mixed stays mixed, an untagged earlier run stays unknown; a new run: this code."""
    from benchmark.api import learning_code_hash, learning_code_tag
    now = learning_code_hash()
    assert learning_code_tag(None, continued=False) == now == learning_code_tag("anything", continued=False)
    assert learning_code_tag(now, continued=True) == now
    assert learning_code_tag("0123456789abcdef", continued=True) == f"0123456789abcdef+{now}"
    assert learning_code_tag(f"0123456789abcdef+{now}", continued=True) == f"0123456789abcdef+{now}"
    assert learning_code_tag(None, continued=True) is None and learning_code_tag("", continued=True) is None


def test_a_raised_budget_goes_on_from_the_finished_run_and_equals_training_from_zero(workdir, monkeypatch):
    """Known answer: a cell trained to 2 steps, then its budget raised to 5 (crossing an epoch of 3 steps): the plan
    says `extend` from the 2-step run, the sitting goes on from its checkpoint (`how == extended`, a new run
    tagged `extended_from`, its curve from step 1 copied in) and ends with the same weights as a 5-step run
    trained from step 0. Under a cosine schedule (its factor depends on the budget) nothing is extended."""
    import mlflow

    import benchmark.tables as T
    from benchmark import tracking
    from benchmark.api import train
    from benchmark.safeload import load_data

    def with_budget(steps, schedule="constant"):
        budget = {"speech": {"train.max_steps": steps, "train.epochs": 10, "train.batch_size": 128, "model.hidden": 16,
                             "train.lr_schedule": schedule}}
        spec = dataclasses.replace(T.get_table(3), models=("dsvae",), budgets={"smoke": budget})
        monkeypatch.setattr(T, "tables", lambda: {3: spec})
        return spec

    def sitting():
        return run_table(3, "smoke", seeds=1, passes=1, out=workdir / "results", progress=False)["jobs"][0]

    with_budget(2)
    short = sitting()
    spec = with_budget(5)
    plan = T.plan_table(3, "smoke", seeds=1).iloc[0]
    assert (plan.state, plan.run_id, plan.at_step, plan.steps) == ("extend", short["run_id"], 2, 5)
    longer = sitting()
    assert longer["how"] == "extended" and longer["run_id"] != short["run_id"]
    client = mlflow.MlflowClient(tracking.resolve_uri())
    run = client.get_run(longer["run_id"])
    assert run.data.tags["extended_from"] == short["run_id"] and run.data.params["train.max_steps"] == "5"
    steps = sorted(m.step for m in client.get_metric_history(longer["run_id"], "train/total"))
    assert steps == [1, 2, 3, 4, 5], "steps 1-2 copied from the short run, 3-5 trained: none twice"
    cfg, _ = T.cell_fingerprint(spec, "speech", "dsvae", 0, "smoke")
    with pytest.raises(ValueError, match="needs resume"):  # curves copied beside a run from step 0: refused
        train(cfg, extends=short["run_id"], progress=False)
    straight = train(cfg, progress=False)
    a = load_data(run.data.tags["checkpoint_dir"] + "/final.pt", "test")
    b = load_data(straight["checkpoint"], "test")
    assert a["state"]["step"] == b["state"]["step"] == 5
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), f"{k}: the extended run differs from training from step 0"
    with_budget(2, "cosine")
    assert sitting()["how"] == "trained"
    with_budget(5, "cosine")
    assert T.plan_table(3, "smoke", seeds=1).iloc[0].state == "train", "cosine: the 2-step run is no prefix"


def test_which_unfinished_runs_a_sitting_goes_on_from(workdir):
    """Interrupted, left RUNNING, or FAILED for a reason another try gets past (a tracking outage saved its
    checkpoint) -> resumed; FAILED on a TrainingError (non-finite loss) -> trained anew; reopening a failed run
    moves its old error aside."""
    from types import SimpleNamespace as NS

    from benchmark import tracking
    from benchmark.tables import resumable
    run = lambda status, error=None: NS(info=NS(status=status), data=NS(tags={"error": error} if error else {}))  # noqa: E731
    assert resumable(run("KILLED")) and resumable(run("RUNNING"))
    assert resumable(run("FAILED", "TrackingError: the tracking server at http://x stopped answering"))
    assert not resumable(run("FAILED", "TrainingError: non-finite loss at step 12: recon=nan"))
    assert not resumable(run("FINISHED"))
    with pytest.raises(OSError):
        with tracking.start_run("cell") as r:
            raise OSError("No space left on device")
    with tracking.start_run("cell", run_id=r.run_id):
        pass
    tags = tracking.get_client().get_run(r.run_id).data.tags
    assert "error" not in tags and tags["previous_error"] == "OSError: No space left on device"
