"""No code runs from a file we load: crafted pickles are refused by --resume, eval --checkpoint and the
judge cache, with an error that names the file; old checkpoints convert only with --trust."""
import json
import os

import numpy as np
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
    assert main(["migrate-checkpoint", str(old_path), "--trust"]) == 0
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
