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
    assert main(["eval", "--run", run_id, "--passes", "1", "--max-sequences", "4"]) == 0
    assert client.get_run(run_id).data.tags["eval_sequences"] == "4", "a fixed subset of 4 test sequences"


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


def test_judge_reads_static_labels_frame_by_frame_and_trains_on_windows():
    import dataclasses
    from models.judge import Judge
    from tests.conftest import tiny_info
    info = tiny_info()
    judge = Judge(info, width=0.125, hidden=8, feat_dim=8).eval()
    x = torch.rand(3, info.frames, 3, 16, 16)
    full, frames = judge(x), [judge(x[:, t:t + 1]) for t in range(info.frames)]
    for f in info.static_labels:  # known answer: the mean of the per-frame logits
        torch.testing.assert_close(full[f], torch.stack([p[f] for p in frames]).mean(0))
    assert full["act"].shape == (3, 4)
    with pytest.raises(ValueError, match="train_frames=2 on tiny.*act"):
        Judge(info, train_frames=2)
    static_only = dataclasses.replace(info, dynamic_labels={})
    judge = Judge(static_only, width=0.125, hidden=8, feat_dim=8, train_frames=2)
    seen = []
    judge.frame_enc.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    batch = {"x": x, "static": torch.zeros(3, 2, dtype=torch.long)}
    judge.train().loss_terms(batch)
    judge.eval().loss_terms(batch)
    assert seen == [3 * 2, 3 * info.frames], "a window of 2 frames in training, every frame otherwise"


def test_protocol_subset_is_fixed_and_shared():
    from benchmark.api import protocol_subset
    a = protocol_subset(2664, 256)
    assert len(a) == 256 and len(set(a.tolist())) == 256 and (a.diff() > 0).all() and a.max() < 2664
    assert torch.equal(a, protocol_subset(2664, 256)), "the same sequences for every model and seed"
    assert a.min() > 0 or a.max() > 256, "a random subset, not the first rows"
    assert torch.equal(protocol_subset(100, 256), torch.arange(100))
    assert torch.equal(protocol_subset(100, None), torch.arange(100))


def test_diagnostics_markdown_one_table_per_dataset():
    from benchmark.diagnose import diagnostics_markdown
    rows = [{"dataset": "smmnist", "model": "s3vae", "seed": s, "run_id": "r", "recon_mse": 1.0 + s,
             "recon_acc_digit1": 10.0} for s in range(2)]
    rows += [{"dataset": "sprites", "model": "s3vae", "seed": 0, "run_id": "r", "recon_mse": 3.0, "recon_acc_action": 50.0}]
    md = "\n".join(diagnostics_markdown(1, {"runs": rows, "command": "c", "git_commit": "abc",
                                            "feature_eer": {"speech": 28.15}}))
    assert "## smmnist" in md and "## sprites" in md
    assert "| s3vae | 1.5 ± 0.71 | 10 ± 0 |" in md, "mean ± sample std over the seeds"
    assert "| model | recon_mse | recon_acc_action |" in md
    assert "28.15 %" in md
