"""Optuna sweeps: shared SQLite study across worker processes, dead workers, crashed trials, report."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from benchmark import tracking
from benchmark.__main__ import main
from benchmark.sweep import SweepSpec, report_study, run_sweep
from benchmark.trainer import TrainingError

ROOT = Path(__file__).resolve().parent.parent
FAST = {"train.max_steps": "0", "train.epochs": "2"}  # two epochs: two reports per trial


def trial_runs(study):
    return {r.data.tags["optuna_trial"]: r for r in tracking.search_runs(f"tags.study = '{study}'",
                                                                                    experiment=tracking.SWEEP_EXPERIMENT)
            if r.data.tags.get("kind") == "trial"}


def test_two_workers_share_one_study(workdir, monkeypatch):
    spec = SweepSpec("lambdas", "faces", trials=4, profile="smoke", overrides=FAST, progress=False)
    summary = run_sweep(spec, workers=2, out="sweeps")
    study = optuna.load_study(study_name=spec.study, storage=spec.storage)
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert all(s in ("COMPLETE", "PRUNED", "FAIL") for s in states), states
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 4  # the study-wide total, not per worker
    runs = trial_runs(spec.study)
    parent = study.user_attrs["mlflow_parent_run_id"]
    for t in trials:
        run = runs[str(t.number)]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["loss.lambda_scc"] == str(t.params["loss.lambda_scc"])  # same dotted name
        assert run.info.status == "FINISHED"
        assert "val/acc" in run.data.metrics
        assert run.info.run_name.startswith(f"trial-{t.number} λ=(")
    assert len({t.params["loss.lambda_scc"] for t in trials}) == len(trials)  # the workers did not duplicate
    assert study.metric_names == ["val_acc"]
    best = MlflowClient(spec.tracking_uri).get_run(parent).data.params
    assert best["best.trial"] == str(summary["best"]["number"])
    assert float(best["best.loss.lambda_scc"]) == pytest.approx(summary["best"]["params"]["loss.lambda_scc"], rel=1e-5)
    assert summary["best"]["params"].keys() == {"loss.lambda_scc", "loss.lambda_dfp", "loss.lambda_mi"}
    for f in ("trials.csv", "lambdas.png", "history.png", "best_config.json", "summary.md"):
        assert (workdir / "sweeps" / spec.study / f).is_file(), f
    assert MlflowClient(spec.tracking_uri).get_run(parent).info.status == "FINISHED"
    assert "rerun_differs" not in summary
    # the profile changes after the study (a later commit): best_config.json stays what the best trial trained
    from benchmark.config import RunConfig
    from benchmark.profiles import PROFILES
    monkeypatch.setitem(PROFILES["smoke"].train, "lr", 0.5)
    again = report_study(spec.study, spec.storage, workdir / "again", spec.tracking_uri)
    assert "trains under today's" in again["rerun_differs"]
    trained = RunConfig.from_dict(json.loads((workdir / "again" / spec.study / "best_config.json").read_text()))
    assert trained.train.lr != 0.5


def test_crashed_trial_is_recorded_and_the_sweep_goes_on(workdir, monkeypatch):
    import benchmark.api
    real, calls = benchmark.api.train, []

    def flaky(cfg, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise TrainingError("non-finite loss at step 3: recon=nan")
        return real(cfg, **kw)
    monkeypatch.setattr(benchmark.api, "train", flaky)
    spec = SweepSpec("lambdas", "faces", trials=2, profile="smoke", progress=False)
    run_sweep(spec, workers=1, out="sweeps")
    trials = optuna.load_study(study_name=spec.study, storage=spec.storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "non-finite loss" in trials[0].user_attrs["error"]


def test_killed_worker_trial_is_failed_and_retried(workdir):
    cmd = [sys.executable, "-m", "benchmark", "sweep", "--space", "lambdas", "--dataset", "faces", "--profile", "smoke",
           "--trials", "2", "--heartbeat", "1", "--grace", "3", "-o", "train.max_steps=0", "-o", "train.epochs=4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    storage = "sqlite:///" + str(workdir / "optuna.db")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    try:
        deadline = time.time() + 240
        while killed is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                study = optuna.load_study(study_name="lambdas-faces-smoke", storage=storage)
            except Exception:  # noqa: BLE001 - not created yet
                continue
            running = [t for t in study.get_trials() if t.state.name == "RUNNING" and t.intermediate_values]
            if running:  # mid-trial: at least one epoch reported
                killed = running[0].number
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed is not None, "the sweep never had a running trial to kill"
    time.sleep(4)  # past the grace period: the restarted worker sees the trial as dead
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = optuna.load_study(study_name="lambdas-faces-smoke", storage=storage).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state.name == "FAIL"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 2
    assert not [t for t in trials if t.state.name == "RUNNING"]
    retries = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert retries and retries[0].params == by_number[killed].params
    killed_run = trial_runs("lambdas-faces-smoke")[str(killed)]
    assert killed_run.info.status == "KILLED"


def test_sweep_errors_name_the_option(workdir, capsys):
    assert main(["sweep", "--space", "nope", "--dataset", "faces", "--trials", "1", "--profile", "smoke"]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
    assert main(["sweep", "--space", "lambdas", "--dataset", "speech", "--trials", "1", "--profile", "smoke"]) == 2
    assert "--dataset speech" in capsys.readouterr().err
    assert main(["report", "--study", "missing"]) == 2
    assert "no such study" in capsys.readouterr().err


def test_joining_a_study_with_other_settings_is_refused(workdir):
    spec = SweepSpec("lambdas", "faces", trials=1, profile="smoke", study="s", progress=False)
    from benchmark.sweep import open_study
    open_study(spec)
    other = SweepSpec("lambdas", "sprites", trials=1, profile="smoke", study="s", progress=False)
    with pytest.raises(ValueError, match="has dataset='faces'"):
        open_study(other)
    real = SweepSpec("lambdas", "faces", trials=1, profile="smoke", study="s", progress=False, data_dir="/data/MUG")
    with pytest.raises(ValueError, match="has data_dir=''"):
        open_study(real)
    assert report_study("s", spec.storage, "out")["states"] == {}


def test_a_study_s_real_files_and_overrides_reach_trials_scorer_and_rerun():
    """Known answer: the real files and -o data.* of a study are in the trials' config and the val scorer's alike
    (before, trials trained on the embedded data and were scored on the real val split); precedence: real files,
    the space's fixed settings, -o, a trial's parameters."""
    from benchmark.sweep import get_space, study_config, study_overrides
    assert study_overrides("/d", {"a": 1, "b": 1}, {"b": 2, "c": 2}, {"c": 3}) == \
        {"data.data_dir": "/d", "a": 1, "b": 2, "c": 3}
    spec = SweepSpec("lambdas", "faces", trials=1, profile="smoke", data_dir="/data/MUG",
                     overrides={"data.frames": 8})
    space = get_space("lambdas")
    scorer, trial = study_config(spec, space), study_config(spec, space, {"loss.lambda_scc": 7.0})
    for cfg in (scorer, trial):
        assert (cfg.data.data_dir, cfg.data.options) == ("/data/MUG", {"frames": 8})
    assert trial.loss.lambda_scc == 7.0


@pytest.mark.parametrize("name", ["faces", "smmnist", "sprites", "speech"])
def test_fit_split_is_train_without_val(workdir, name):
    """Sweep trials train on `fit` so that their val score is on sequences they never saw."""
    import torch

    from benchmark.data import load_dataset
    rows = {s: {bytes(v.numpy().tobytes()) for v in load_dataset(name, s, "smoke").tensors["x"]}
            for s in ("train", "val", "fit")}
    assert rows["val"] and rows["fit"]
    assert rows["fit"] | rows["val"] == rows["train"] and not rows["fit"] & rows["val"]
    assert torch.is_tensor(load_dataset(name, "fit", "smoke").tensors["x"])


def test_sweep_workers_pin_one_gpu_each(monkeypatch):
    from benchmark.sweep import SweepSpec, pin_gpu
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    spec = SweepSpec("lambdas", "faces", trials=1, profile="smoke", gpus=["2", "5"])
    assert [pin_gpu(spec, w) for w in range(3)] == ["2", "5", "2"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    assert pin_gpu(SweepSpec("lambdas", "faces", trials=1, profile="smoke"), 0) is None


def test_trial_run_names_say_what_the_trial_tried():
    from benchmark.sweep import trial_run_name
    assert trial_run_name(7, {"loss.lambda_scc": 1000.0, "loss.lambda_dfp": 100.0, "loss.lambda_mi": 1.0}) \
        == "trial-7 λ=(1000, 100, 1)"
    assert trial_run_name(3, {"train.lr": 0.00123456, "train.batch_size": 32}) == "trial-3 lr=0.001235 batch_size=32"
