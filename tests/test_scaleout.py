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
# table 3 at smoke: three small speech cells and no judge, enough to kill a worker in one cell and see another
# finish them all (these tests run by default and stay short)
TABLE3 = ["--table", "3"]


def _start(workdir, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a --table in `extra` comes after CMD's and wins
    return subprocess.Popen(CMD + list(extra), cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _train_runs(workdir):
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns.db'}")
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return client.search_runs([exp.experiment_id], "tags.kind = 'train'") if exp else []


# slow: the PostgreSQL test below starts two commands at once on one store by default already
@pytest.mark.slow
@pytest.mark.parametrize("n, table, cells", [(2, TABLE3, 3), (3, [], 4)])
def test_processes_started_at_once_on_a_fresh_store_train_each_cell_once(workdir, n, table, cells):
    """n `run --table N` commands on one new SQLite store at once: all exit 0, each cell trained once
    (two on table 3 by default; three on table 2 with -m slow)."""
    # no worker dies here: a grace well above the heartbeat delays of n processes on 2 cores, so that no live
    # worker is declared dead (a false "dead" re-queues its cell and the cell trains twice; default grace 60 s)
    procs = [_start(workdir, ["--grace", "30", *table]) for _ in range(n)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [o[1][-2000:] for o in outs]
    finished = Counter(r.data.tags["fingerprint"] for r in _train_runs(workdir) if r.info.status == "FINISHED")
    assert len(finished) == cells and set(finished.values()) == {1}, f"{cells} cells, each trained exactly once"
    jobs = [json.loads(o[0])["parent_run_id"] for o in outs]
    assert len(set(jobs)) == n, "one parent run per process"


def test_a_killed_worker_s_cell_is_finished_by_another(workdir):
    victim = _start(workdir, TABLE3)
    t0 = time.time()
    while not any(r.info.status == "RUNNING" for r in _train_runs(workdir)):  # mid-cell: a training run is live
        assert time.time() - t0 < 300 and victim.poll() is None, "the first worker never started a cell"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = _start(workdir, TABLE3)
    out, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err[-2000:]
    runs = _train_runs(workdir)
    finished = Counter(r.data.tags["fingerprint"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == 3 and set(finished.values()) == {1}, "every cell finished exactly once"
    assert not [r for r in runs if r.info.status == "RUNNING"], "the dead worker's run was closed (KILLED)"


@pytest.mark.slow
def test_submitit_array_of_workers_writes_the_table(workdir):
    """`--launcher submitit-local --workers 2`: the Slurm path run by submitit's local executor; the launching
    process trains nothing, the two tasks split the cells, and the table is written once all are done."""
    pytest.importorskip("submitit", reason="submitit is the optional [slurm] extra")
    p = _start(workdir, ["--launcher", "submitit-local", "--workers", "2", "--precision", "fp32"])
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    finished = Counter(r.data.tags["fingerprint"] for r in _train_runs(workdir) if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}
    assert (workdir / "results" / "table2.md").is_file()
    assert {j["how"] for j in json.loads((workdir / "results" / "table2_provenance.json").read_text())["jobs"]} \
        == {"other worker"}, "the launcher trained nothing itself"
    # the tasks' runs nest under the table's run, so the UI shows every cell under it
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns.db'}")
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    workers = client.search_runs([exp.experiment_id], "tags.kind = 'table-worker'")
    assert len(workers) == 2 and {w.data.tags["mlflow.parentRunId"] for w in workers} == \
        {json.loads(out)["parent_run_id"]}


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server (the system's `postgresql` binaries) with databases mlflow and optuna."""
    import glob
    import shutil
    import tempfile
    initdb = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if not initdb:
        pytest.skip("PostgreSQL server binaries are not installed (apt install postgresql)")
    psycopg = pytest.importorskip("psycopg", reason="pip install -e '.[postgres]'")
    pg_ctl = os.path.join(os.path.dirname(initdb), "pg_ctl") if not shutil.which("pg_ctl") else shutil.which("pg_ctl")
    root = tempfile.mkdtemp(prefix="pgtest-")
    os.chmod(root, 0o777)
    data = os.path.join(root, "data")
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        os.makedirs(data)
        shutil.chown(data, "postgres")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_user + [initdb, "-D", data, "-A", "trust", "-U", "bench"], check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
                              f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="bench", dbname="postgres", autocommit=True) as con:
            for db in ("mlflow", "optuna"):
                con.execute(f"CREATE DATABASE {db}")
        yield f"postgresql://bench@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_workers_on_postgresql_and_an_mlflow_server_survive_a_kill(workdir, postgres):
    """Two workers on one table-2 smoke run, sharing a real `mlflow server` on PostgreSQL and a PostgreSQL
    cell queue; one is killed with SIGKILL mid-cell: the other finishes every cell, each exactly once."""
    from tests.test_safety import _free_port, _mlflow_server_on, _stop, _wait_healthy
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server_on(f"{postgres}/mlflow", workdir, port)
    try:
        _wait_healthy(uri)
        extra = ["--tracking-uri", uri, "--queue", f"{postgres}/optuna", *TABLE3]
        victim, survivor = _start(workdir, extra), _start(workdir, extra)
        client = mlflow.MlflowClient(uri)

        def train_runs():
            exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
            return client.search_runs([exp.experiment_id], "tags.kind = 'train'") if exp else []
        t0 = time.time()
        while not any(r.info.status == "RUNNING" for r in train_runs()):
            assert time.time() - t0 < 300, "no cell ever started"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        out, err = survivor.communicate(timeout=900)
        assert survivor.returncode == 0, [line for line in err.replace("\r", "\n").splitlines()
                                          if "error" in line.lower() or "Error" in line][-10:]
        runs = train_runs()
        finished = Counter(r.data.tags["fingerprint"] for r in runs if r.info.status == "FINISHED")
        assert len(finished) == 3 and set(finished.values()) == {1}, "every cell finished exactly once"
        assert not [r for r in runs if r.info.status == "RUNNING"], "the dead worker's run was closed"
        assert (workdir / "results" / "table3.md").is_file()
    finally:
        _stop(server)


def test_an_interrupted_cell_is_claimed_before_the_fresh_ones(tmp_path):
    """The next sitting goes on where the last one stopped: the cell it was interrupted in (re-queued, with a
    checkpoint to resume) comes before cells that never started, though it was enqueued after them."""
    from benchmark.cells import Cell, CellQueue
    cells = [Cell("faces", "s3vae", seed, f"fp{seed}") for seed in range(3)]
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    first = CellQueue(url, "t", cells, tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert first.claim() == cells[0]
    first.release(ok=True)
    assert first.claim() == cells[1]
    first.release(ok=False, requeue=True)  # interrupted (SIGTERM): back in the queue, behind cell 2
    again = CellQueue(url, "t", cells, tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert again.claim() == cells[1], "the interrupted cell first"
    again.release(ok=True)
    assert again.claim() == cells[2]
    again.release(ok=True)
    assert again.claim() is None and again.finished()
