"""Table cells from a shared queue: processes started at once on one store train each cell once; a worker
killed with SIGKILL mid-cell loses nothing — its cell goes back to the queue and another worker finishes it."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import mlflow
import pytest

from benchmark.tracking import DEFAULT_EXPERIMENT

CMD = [sys.executable, "-m", "benchmark", "run", "--table", "2", "--profile", "smoke", "--seeds", "1",
       "--heartbeat", "1", "--grace", "4"]


def _start(workdir, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(CMD + list(extra), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _train_runs(workdir):
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns.db'}")
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.kind = 'train'") if exp else []


@pytest.mark.slow
def test_two_processes_at_once_train_each_cell_once(workdir):
    procs = [_start(workdir) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    finished = Counter(r.data.tags["fingerprint"] for r in _train_runs(workdir) if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}, "4 cells, each trained exactly once"
    jobs = [json.loads(o[0])["parent_run_id"] for o in outs]
    assert len(set(jobs)) == 2, "one parent run per process"


@pytest.mark.slow
def test_a_killed_worker_s_cell_is_finished_by_another(workdir):
    victim = _start(workdir)
    t0 = time.time()
    while not any(r.info.status == "RUNNING" for r in _train_runs(workdir)):  # mid-cell: a training run is live
        assert time.time() - t0 < 300 and victim.poll() is None, "the first worker never started a cell"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = _start(workdir)
    out, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err[-2000:]
    runs = _train_runs(workdir)
    finished = Counter(r.data.tags["fingerprint"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}, "every cell finished exactly once"
    assert not [r for r in runs if r.info.status == "RUNNING"], "the dead worker's run was closed (KILLED)"


@pytest.mark.slow
def test_submitit_array_of_workers_writes_the_table(workdir):
    """`--launcher submitit-local --workers 2`: the Slurm path run by submitit's local executor; the launching
    process trains nothing, the two tasks split the cells, and the table is written once all are done."""
    pytest.importorskip("submitit", reason="submitit is the optional [slurm] extra")
    p = _start(workdir, ["--launcher", "submitit-local", "--workers", "2"])
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    finished = Counter(r.data.tags["fingerprint"] for r in _train_runs(workdir) if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}
    assert (workdir / "results" / "table2.md").is_file()
    assert {j["how"] for j in json.loads((workdir / "results" / "table2_provenance.json").read_text())["jobs"]} \
        == {"other worker"}, "the launcher trained nothing itself"
