import pytest
import torch

from benchmark.data import DatasetInfo

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One data cache per test module, so a module's smoke sets are generated once."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("BENCHMARK_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def workdir(tmp_path, monkeypatch, data_cache):
    """Run in a temp dir (mlruns.db, checkpoints) with a shared temp data cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCHMARK_CACHE", str(data_cache))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def tiny_info(kind="video", size=16, frames=5):
    dfp = {"kind": "patch", "dim": 16} if kind == "video" else {"kind": "binary", "dim": 1}
    return DatasetInfo("tiny", kind, frames, 3 if kind == "video" else 1, size, {"a": 3, "b": 2}, {"act": 4}, dfp, 100,
                       num_sequences=10)


def tiny_batch(info, n=6):
    shape = (n, info.frames, info.channels, info.size, info.size) if info.kind == "video" else (n, info.frames, info.size)
    dfp = (torch.randint(0, 16, (n, info.frames, 3)) if info.dfp["kind"] == "patch"
           else torch.randint(0, 2, (n, info.frames)))
    return {"x": torch.rand(shape), "dfp": dfp, "static": torch.stack([torch.randint(0, 3, (n,)), torch.randint(0, 2, (n,))], 1),
            "dynamic": torch.randint(0, 4, (n, 1)), "utterance": torch.arange(n) % 10,
            "segments": torch.full((n,), 3)}
