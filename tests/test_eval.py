"""Judge caching and the eval command end to end at smoke size."""
import json

import mlflow
import pytest
import torch

from benchmark.__main__ import main
from benchmark.tracking import resolve_uri
from benchmark.judges import get_judge


def test_judge_is_trained_once_then_cached(workdir, monkeypatch):
    judge, report = get_judge("sprites", "smoke", progress=False)
    assert set(report["test_accuracy"]) == {"skin", "top", "pants", "hair", "action", "static_all"}
    assert all(0 <= v <= 100 for v in report["test_accuracy"].values())
    run = mlflow.MlflowClient(resolve_uri()).get_run(report["run_id"])
    assert run.data.tags["kind"] == "judge" and "test_acc_action" in run.data.metrics
    import benchmark.judges as J
    monkeypatch.setattr(J, "Trainer", None)  # a cache hit must not train
    judge2, report2 = get_judge("sprites", "smoke", progress=False)
    assert report2 == report
    for a, b in zip(judge.state_dict().values(), judge2.state_dict().values()):
        assert (a.cpu() == b).all()


def test_eval_logs_metrics_and_pictures_to_the_run(workdir, capsys):
    assert main(["train", "--profile", "smoke"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["eval", "--run", run_id, "--passes", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == run_id
    for k in ("acc", "acc_action", "acc_static", "is", "h_y_given_x", "h_y", "label_kl"):
        assert k in out["metrics"]
    assert 1.0 <= out["metrics"]["is"] <= 9.0 + 1e-6 and 0 <= out["metrics"]["h_y"] <= 2.1973
    client = mlflow.MlflowClient(resolve_uri())
    run = client.get_run(run_id)
    assert run.data.metrics["eval/acc"] == pytest.approx(out["metrics"]["acc"])
    assert "eval/judge_acc_action" in run.data.metrics and "judge_fingerprint" in run.data.tags
    arts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/swap.gif", "eval/samples.png", "eval/protocols.json"} <= arts


def test_eval_bad_input(workdir, capsys):
    assert main(["eval", "--checkpoint", "missing.pt"]) == 2
    assert "--checkpoint missing.pt: no such file" in capsys.readouterr().err
    assert main(["eval", "--run", "0123456789abcdef"]) == 2
    assert "no such run" in capsys.readouterr().err


def test_reconstruction_report_known_answer():
    """A model that reconstructs perfectly scores its judge's real accuracy on reconstructions, MSE 0."""
    from types import SimpleNamespace

    from benchmark.data import SequenceDataset
    from benchmark.diagnose import reconstruction_report
    from models.judge import Judge
    from tests.conftest import tiny_batch, tiny_info

    class Perfect(torch.nn.Module):
        capabilities = frozenset({"encode"})

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, x, sample=False):
            return SimpleNamespace(zf_mean=x, zt_mean=x[:, :, :1].clone() * 0)

        def decode(self, zf, zt):
            return zf

    info = tiny_info()
    b = tiny_batch(info, 12)
    ds = SequenceDataset(info, "test", {k: b[k] for k in ("x", "static", "dynamic", "dfp")}, "k")
    judge = Judge(info, width=0.125, hidden=8, feat_dim=8).eval()
    r = reconstruction_report(Perfect(), judge, ds)
    assert r["recon_mse"] == 0.0 and r["zt_std_across"] == 0.0 and r["zf_std_across"] > 0
    for f in judge.families:
        assert r[f"recon_acc_{f}"] == r[f"real_acc_{f}"]
