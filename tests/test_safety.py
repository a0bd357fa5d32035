"""No code runs from a file we load: crafted pickles are refused by --resume, eval --checkpoint and the
judge cache, with an error that names the file; old checkpoints convert only with --trust."""
import json
import os

import numpy as np
import pytest
import torch

from benchmark import tracking

from benchmark.__main__ import main


class Payload:
    """Unpickling this object runs a shell command (writes the marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(path, marker):
    torch.save({"model": {}, "config": {"model": {"name": "s3vae"}}, "x": Payload(marker)}, path)
    return path


def test_crafted_pickle_does_not_run_from_resume_or_eval(workdir, capsys):
    marker = workdir / "pwned"
    evil = _evil(workdir / "evil.pt", marker)
    assert main(["train", "--profile", "smoke", "--resume", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and str(evil) in err and "refused" in err
    assert main(["eval", "--checkpoint", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and str(evil) in err and "refused" in err
    assert not marker.exists(), "the payload ran"


def test_crafted_judge_cache_does_not_run(workdir, capsys):
    from benchmark.data import cache_dir, load_dataset
    from benchmark.judges import _fingerprint, get_judge, judge_config, judge_settings
    get_judge("sprites", "smoke", progress=False)
    train = load_dataset("sprites", "train", "smoke")
    fp = _fingerprint(train, judge_config("smoke", "sprites"), judge_settings("smoke", "sprites"))
    path = cache_dir() / "judges" / f"sprites-{fp}.pt"
    assert path.is_file()
    marker = workdir / "pwned-judge"
    torch.save({"state": {}, "report": Payload(marker)}, path)
    try:
        get_judge("sprites", "smoke", progress=False)
        raise AssertionError("a crafted judge cache was accepted")
    except ValueError as e:
        assert "judge cache" in str(e) and str(path) in str(e)
    finally:
        path.unlink()  # the next get_judge retrains it
    assert not marker.exists(), "the payload ran"


def test_checkpoints_are_data_only_and_old_ones_convert_with_trust(workdir, capsys):
    from benchmark.safeload import load_data
    assert main(["train", "--profile", "smoke"]) == 0
    ckpt = json.loads(capsys.readouterr().out)["checkpoint"]
    payload = load_data(ckpt, "test")  # weights_only=True: everything we save is tensors and plain values
    assert isinstance(payload["rng"]["numpy"][1], torch.Tensor)
    # an old-format checkpoint (numpy state as an ndarray) is refused, then converted only with --trust
    old = payload | {"rng": payload["rng"] | {"numpy": np.random.get_state()}}
    old_path = workdir / "old.pt"
    torch.save(old, old_path)
    assert main(["eval", "--checkpoint", str(old_path)]) == 2
    assert "migrate-checkpoint" in capsys.readouterr().err
    assert main(["migrate-checkpoint", str(old_path)]) == 2
    assert "--trust" in capsys.readouterr().err
    os.utime(old_path, ns=(1_000_000_000, 1_000_000_000))
    assert main(["migrate-checkpoint", str(old_path), "--trust"]) == 0
    assert old_path.stat().st_mtime_ns == 1_000_000_000, "converting keeps the file's time"
    converted = load_data(old_path, "test")
    assert np.array_equal(np.asarray(converted["rng"]["numpy"][1]), np.random.get_state()[1].astype(np.int64))


def test_resumed_rng_state_round_trips():
    from benchmark.seeding import rng_state, seed_everything, set_rng_state
    seed_everything(3)
    state = rng_state()
    a = (np.random.rand(3), torch.rand(3))
    set_rng_state(state)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch, capsys):
    from benchmark.data import cached_arrays
    monkeypatch.setenv("BENCHMARK_CACHE", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        return {"x": np.arange(1000, dtype=np.float32), "y": np.ones((4, 5))}

    first = cached_arrays("probe", "k", build)
    assert len(builds) == 1 and np.array_equal(cached_arrays("probe", "k", build)["x"], first["x"])
    assert len(builds) == 1, "an intact cache is reused"
    path = tmp_path / "probe-k.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert np.array_equal(cached_arrays("probe", "k", build)["x"], first["x"]) and len(builds) == 2
    assert "damaged" in capsys.readouterr().err
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size, one byte altered
    path.write_bytes(bytes(data))
    assert np.array_equal(cached_arrays("probe", "k", build)["x"], first["x"]) and len(builds) == 3


def test_truncated_judge_cache_is_retrained(workdir, capsys):
    from benchmark.data import cache_dir
    from benchmark.judges import get_judge
    _, report = get_judge("sprites", "smoke", progress=False)
    path = cache_dir() / "judges" / f"sprites-{report['fingerprint']}.pt"
    path.write_bytes(path.read_bytes()[:100])
    judge, again = get_judge("sprites", "smoke", progress=False)
    assert "retraining the judge" in capsys.readouterr().err
    assert again["fingerprint"] == report["fingerprint"] and again["run_id"] != report["run_id"]


def test_processes_starting_at_once_on_a_fresh_store_all_work(tmp_path):
    """Three processes open one new SQLite MLflow store and Optuna storage at the same moment: all exit 0
    (unserialised, two of them run MLflow's schema migration at once and one dies)."""
    import subprocess
    import sys
    uri, storage = f"sqlite:///{tmp_path / 'fresh.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    code = ("import sys, time; from benchmark import tracking; from benchmark.sweep import SweepSpec, make_storage\n"
            "t = float(sys.argv[1]); time.sleep(max(0, t - time.time()))\n"
            f"make_storage(SweepSpec('lambdas', 'sprites', 1, storage={storage!r}, tracking_uri={uri!r}))\n"
            f"with tracking.start_run('p', uri={uri!r}) as r: r.log_metrics({{'m': 1.0}}, 0)\n")
    import time
    start = time.time() + 8  # every process imports mlflow first, then all open the store together
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    import mlflow
    runs = mlflow.MlflowClient(uri).search_runs([tracking.experiment_id(mlflow.MlflowClient(uri), uri,
                                                                        tracking.DEFAULT_EXPERIMENT)])
    assert len(runs) == 3


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server_on(backend, tmp_path, port):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", backend,
                             "--default-artifact-root", str(tmp_path / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _mlflow_server(tmp_path, port):
    return _mlflow_server_on(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, port)


def _wait_healthy(uri, timeout=120):
    import time
    t0 = time.time()
    while True:
        try:
            tracking.health_check(uri, timeout=2)
            return
        except tracking.TrackingError:
            assert time.time() - t0 < timeout, "mlflow server did not come up"
            time.sleep(0.5)


def _stop(proc):
    import signal
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_tracking_server_killed_and_restarted_mid_training_leaves_no_gap(workdir):
    """A real `mlflow server` is killed while a run trains and started again: training goes on and the
    run's loss curve in MLflow has every logged step."""
    import threading
    import time
    from benchmark.api import train
    from benchmark.config import resolve_config
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(workdir, port)
    _wait_healthy(uri)
    cfg = resolve_config("s3vae", "sprites", "smoke", overrides={"train.max_steps": "240", "train.log_every": "1",
                                                                 "train.epochs": "1000"})
    outage = {}

    def kill_then_restart():
        nonlocal server
        client = tracking.get_client(uri)
        while True:  # once the first metrics are in, take the server away for ~8 s
            runs = tracking.search_runs("tags.kind = 'train'", uri)
            if runs and client.get_metric_history(runs[0].info.run_id, "train/total"):
                break
            time.sleep(0.5)
        _stop(server)
        outage["down"] = time.time()
        time.sleep(8)
        server = _mlflow_server(workdir, port)
        outage["up"] = time.time()
    t = threading.Thread(target=kill_then_restart, daemon=True)
    t.start()
    try:
        summary = train(cfg, tracking_uri=uri, progress=False)
        t.join(timeout=120)
        _wait_healthy(uri)
        steps = [m.step for m in tracking.get_client(uri).get_metric_history(summary["run_id"], "train/total")]
        assert "down" in outage, "the server was never killed during the run"
        assert sorted(steps) == list(range(1, 241)), "every logged step reached the store"
        assert tracking.find_run(summary["run_id"], uri).info.status == "FINISHED"
    finally:
        _stop(server)
