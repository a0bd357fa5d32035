"""Judge caching and the eval command end to end at smoke size."""
import json

import mlflow
import pytest
import torch

from benchmark.__main__ import main
from benchmark.tracking import resolve_uri
from benchmark.judges import get_judge


def test_judge_is_trained_once_then_cached(workdir, monkeypatch):
    # force: other tests may have cached this judge already, with its run in their own MLflow store
    judge, report = get_judge("sprites", "smoke", progress=False, force=True)
    assert set(report["test_accuracy"]) == {"skin", "top", "pants", "hair", "action", "static_all"}
    assert all(0 <= v <= 100 for v in report["test_accuracy"].values())
    client = mlflow.MlflowClient(resolve_uri())
    run = client.get_run(report["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "s3vae-benchmark-judges"
    assert "loss.lambda_scc" not in run.data.params and "model.width" in run.data.params, "only a judge's params"
    assert run.data.tags["kind"] == "judge" and "judge/test_acc_action" in run.data.metrics
    import benchmark.judges as J
    monkeypatch.setattr(J, "Trainer", None)  # a cache hit must not train
    judge2, report2 = get_judge("sprites", "smoke", progress=False)
    assert report2 == report
    for a, b in zip(judge.state_dict().values(), judge2.state_dict().values()):
        assert (a.cpu() == b).all()


def test_judge_fingerprint_ignores_loss_settings():
    """The judge reads no loss settings and is the same on any device: a loss default/option change or another
    --device keeps cached judges; its own settings do not."""
    from benchmark.data import load_dataset
    from benchmark.judges import _fingerprint, judge_config, judge_settings
    train = load_dataset("sprites", "train", "smoke")
    cfg, settings = judge_config("smoke", "sprites"), judge_settings("smoke", "sprites")
    fp = _fingerprint(train, cfg, settings)
    cfg.loss.recon, cfg.loss.lambda_mi, cfg.loss.kl_warmup = "bce", 7.0, 500
    assert _fingerprint(train, cfg, settings) == fp
    cfg.train.device = "cuda:1"  # nor the device it is asked on
    assert _fingerprint(train, cfg, settings) == fp
    cfg.model.width *= 2
    assert _fingerprint(train, cfg, settings) != fp


def test_eval_logs_metrics_and_pictures_to_the_run(workdir, capsys):
    assert main(["train", "--profile", "smoke"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["eval", "--run", run_id, "--passes", "2"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["run_id"] == run_id
    for k in ("acc", "acc_action", "acc_static", "acc_all_static", "acc_skin_static", "acc_all", "is",
              "h_y_given_x", "h_y", "label_kl", "recon_acc_action", "recon_acc_skin", "recon_mse", "zf_std_across"):
        assert k in out["metrics"], k
    assert 1.0 <= out["metrics"]["is"] <= 9.0 + 1e-6 and 0 <= out["metrics"]["h_y"] <= 2.1973
    client = mlflow.MlflowClient(resolve_uri())
    run = client.get_run(run_id)
    assert run.data.metrics["eval/acc"] == pytest.approx(out["metrics"]["acc"])
    assert "eval/judge_acc_action" in run.data.metrics and "judge_fingerprint" in run.data.tags
    assert run.data.metrics["eval/recon_acc_hair"] == pytest.approx(out["metrics"]["recon_acc_hair"])
    # 4 smoke steps have not learned to draw: the families under their floors are a tag (an MLflow column) and a warning
    from experiments import LEARNING_FLOORS
    short = [f"{f} {out['metrics'][f'recon_acc_{f}']:.1f} %" for f, floor in LEARNING_FLOORS["sprites"].items()
             if out["metrics"][f"recon_acc_{f}"] < floor]
    assert short and run.data.tags["below_learning_floor"] == ", ".join(short)
    assert "warning: not learned (sprites): the judge reads the model's test reconstructions below the learning floor" in cap.err
    arts = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"eval/swap.gif", "eval/samples.png", "eval/protocols.json"} <= arts
    assert main(["eval", "--run", run_id, "--passes", "1", "--max-sequences", "4"]) == 0
    assert client.get_run(run_id).data.tags["eval_sequences"] == "4", "a fixed subset of 4 test sequences"
    capsys.readouterr()
    # the run's checkpoint taken to another store: a new eval run there, tagged like a training run
    ckpt = str(workdir / "checkpoints" / run_id / "final.pt")
    other = f"sqlite:///{workdir / 'other.db'}"
    assert main(["eval", "--checkpoint", ckpt, "--passes", "1", "--max-sequences", "4", "--tracking-uri", other]) == 0
    cap = capsys.readouterr()
    moved = mlflow.MlflowClient(other).get_run(json.loads(cap.out)["run_id"])
    assert "which is not in" in cap.err and moved.info.run_id != run_id
    assert {k: moved.data.tags[k] for k in ("kind", "model", "dataset", "trained_in_run")} == {
        "kind": "eval", "model": "s3vae", "dataset": "sprites", "trained_in_run": run_id}
    assert "eval/acc" in moved.data.metrics
    # what the diagnostic scripts load: the run's test split, its weights in eval mode, its judge
    from benchmark.api import load_checkpoint
    from benchmark.diagnose import restore_run
    cfg, test, model, judge = restore_run(run_id, "sprites")
    saved = load_checkpoint(run_id)[0]["model"]
    assert cfg.model.name == "s3vae" and test.split == "test" and not model.training and judge is not None
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="trained on 'sprites'; this diagnostic reads speech runs only"):
        restore_run(run_id, "speech", judge=False)


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


def test_judge_reads_static_labels_frame_by_frame():
    from models.judge import Judge
    from tests.conftest import tiny_info
    info = tiny_info()
    judge = Judge(info, width=0.125, hidden=8, feat_dim=8).eval()
    x = torch.rand(3, info.frames, 3, 16, 16)
    full, frames = judge(x), [judge(x[:, t:t + 1]) for t in range(info.frames)]
    for f in info.static_labels:  # known answer: the mean of the per-frame logits
        torch.testing.assert_close(full[f], torch.stack([p[f] for p in frames]).mean(0))
    assert full["act"].shape == (3, 4)


def test_pair_head_known_answer():
    from models.judge import PairHead
    head = PairHead(2, 3)
    r, s = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, 0.7, -0.3])
    with torch.no_grad():
        head.lin.weight.zero_()
        head.lin.bias.copy_(torch.cat([r, s]))
    logits = head(torch.zeros(1, 2))[0]
    # pairs in order (0,0) (0,1) (0,2) (1,1) (1,2) (2,2): two of a kind score s, two kinds r_a + r_b
    torch.testing.assert_close(logits, torch.stack([s[0], r[0] + r[1], r[0] + r[2], s[1], r[1] + r[2], s[2]]))
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    assert [int(head.index(torch.tensor(a), torch.tensor(b))) for a, b in pairs] == list(range(6))
    p = torch.softmax(logits, -1)
    lo, hi = (m[0].exp() for m in head.marginals(logits[None]))
    torch.testing.assert_close(lo, torch.stack([p[0] + p[1] + p[2], p[3] + p[4], p[5]]))
    torch.testing.assert_close(hi, torch.stack([p[0], p[1] + p[3], p[2] + p[4] + p[5]]))


def test_judge_scores_sorted_pairs_jointly():
    import dataclasses
    from models.judge import Judge
    from tests.conftest import tiny_info
    info = dataclasses.replace(tiny_info(), static_labels={"d1": 4, "d2": 4}, dynamic_labels={},
                               sorted_pairs=(("d1", "d2"),))
    judge = Judge(info, width=0.125, hidden=8, feat_dim=8).eval()
    x = torch.rand(3, info.frames, 3, 16, 16)
    out = judge(x)
    feats = judge._features(x)
    lo, hi = judge.pair_heads[0].marginals(judge.pair_heads[0](feats).mean(1))  # mean of per-frame pair logits
    torch.testing.assert_close(out["d1"], lo)
    torch.testing.assert_close(out["d2"], hi)
    torch.testing.assert_close(out["d1"].exp().sum(-1), torch.ones(3))
    assert set(judge.loss_weights()) == {"ce_d1_d2"} and set(judge.heads) == set()
    batch = {"x": x, "static": torch.tensor([[0, 0], [1, 3], [2, 3]]), "dynamic": torch.zeros(3, 0, dtype=torch.long)}
    opt = torch.optim.Adam(judge.parameters(), 1e-2)
    judge.train()
    first = judge.loss_terms(batch)["ce_d1_d2"]
    for _ in range(30):
        opt.zero_grad()
        judge.loss_terms(batch)["ce_d1_d2"].backward()
        opt.step()
    assert judge.loss_terms(batch)["ce_d1_d2"] < 0.5 * first, "the pair loss is learnable"
    with pytest.raises(ValueError, match="sorted pair \\(d1, act\\)"):
        Judge(dataclasses.replace(info, dynamic_labels={"act": 4}, sorted_pairs=(("d1", "act"),)))
    with pytest.raises(ValueError, match="same classes"):
        Judge(dataclasses.replace(info, static_labels={"d1": 4, "d2": 5}))


def test_judge_train_set_windows_and_extras(workdir):
    import dataclasses
    from benchmark.data import SequenceDataset, load_dataset
    from benchmark.judges import judge_train_set
    from benchmark.profiles import PROFILES
    from tests.conftest import tiny_batch, tiny_info
    info = dataclasses.replace(tiny_info(), dynamic_labels={})
    b = tiny_batch(info, 4)
    ds = SequenceDataset(info, "train", {"x": b["x"], "static": b["static"],
                                         "dynamic": torch.zeros(4, 0, dtype=torch.long)}, "k")
    w = judge_train_set(ds, {"train_frames": 2}, {}, None)
    assert w.tensors["x"].shape == (8, 2, 3, 16, 16), "5 frames: two windows of 2, the tail dropped"
    assert torch.equal(w.tensors["x"][3], b["x"][1, 2:4]) and torch.equal(w.tensors["static"][3], b["static"][1])
    assert judge_train_set(ds, {}, {}, None) is ds
    with pytest.raises(ValueError, match="extra_sequences=5 needs train_frames"):
        judge_train_set(ds, {"extra_sequences": 5}, {}, None)
    with pytest.raises(ValueError, match="tiny has no extra-sequence builder.*smmnist"):
        judge_train_set(ds, {"train_frames": 2, "extra_sequences": 5}, {}, None)
    dyn = SequenceDataset(tiny_info(), "train", {k: b[k] for k in ("x", "static", "dynamic")}, "k")
    with pytest.raises(ValueError, match="train_frames=2 .*act need whole sequences"):
        judge_train_set(dyn, {"train_frames": 2}, {}, None)
    # smmnist at smoke size: the train split's windows, then the extra windows
    train = load_dataset("smmnist", "train", "smoke")
    both = judge_train_set(train, {"train_frames": 3, "extra_sequences": 7}, PROFILES["smoke"].data_for("smmnist"), None)
    assert len(both) == 5 * len(train) + 7 and both.tensors["x"].shape[1:] == (3, 1, 32, 32)
    assert torch.equal(both.tensors["x"][:5].flatten(0, 1), train.tensors["x"][0])


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
    # the first rows (smmnist 10 %, sprites action 50 %) are below their learning floors: named at the top
    assert md.splitlines()[2].startswith("**NOT LEARNED: 3 run(s)")
    assert "s3vae/sprites seed 0: action 50.0 % (floor 95)" in md.splitlines()[2]


def test_regulariser_activity_known_answer_and_models_without_the_term():
    from benchmark.diagnose import diagnostics_markdown, regulariser_activity
    a = regulariser_activity({"train/scc": [0.0, 0.0, 0.3, 0.0, 0.1], "train/mi": [10.0, 20.0],
                              "train/mi_ceiling": [20.0, 20.0]})
    assert a == pytest.approx({"scc_active_pct": 40.0, "scc_mean": 0.08, "mi_of_ceiling": 0.75})
    assert regulariser_activity({"train/scc": [], "train/mi": [], "train/mi_ceiling": []}) == {}, "MoCoGAN logs no SCC"
    rows = [{"dataset": "sprites", "model": "mocogan", "seed": 0, "run_id": "r", "recon_mse": 1.0},
            {"dataset": "sprites", "model": "s3vae", "seed": 0, "run_id": "q", "recon_mse": 2.0, **a}]
    md = "\n".join(diagnostics_markdown(1, {"runs": rows, "command": "c", "git_commit": "abc"}))
    assert "| model | recon_mse | scc_active_pct | scc_mean | mi_of_ceiling |" in md
    assert "| mocogan | 1 ± 0 | — | — | — |" in md and "| s3vae | 2 ± 0 | 40 ± 0 | 0.08 ± 0 | 0.75 ± 0 |" in md
    assert "only those give z_f a gradient" in md
    rows.append({"dataset": "sprites", "model": "s3vae", "seed": 1, "run_id": "p", "recon_mse": 4.0})  # imported, no curve
    md = "\n".join(diagnostics_markdown(1, {"runs": rows, "command": "c", "git_commit": "abc"}))
    assert "| s3vae | 3 ± 1.4 | 40 ± 0 (n = 1) | 0.08 ± 0 (n = 1) | 0.75 ± 0 (n = 1) |" in md, "a mean of fewer seeds says so"


def test_gaussian_blur_known_answers():
    """σ = 0 is the identity; a point's blur is the normalised separable Gaussian (torchvision's, away from the
    edges); each sequence gets its own σ; mass is kept where the frame's border is empty."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur
    from benchmark.judges import gaussian_blur
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 2, 1, 21, 21)
    x[:, :, :, 6:15, 6:15] = torch.rand(3, 2, 1, 9, 9, generator=g)
    sig = torch.tensor([0.0, 0.8, 1.3])
    y = gaussian_blur(x, sig)
    assert torch.equal(y[0], x[0])
    for i in (1, 2):  # each sequence's own σ, on the kernel width the batch's largest σ sets (2·⌈3·1.3⌉ + 1 = 9)
        ref = tv_blur(x[i].flatten(0, 1), [9, 9], [float(sig[i])] * 2).view_as(x[i])
        assert torch.allclose(y[i], ref, atol=1e-6)
        assert torch.allclose(y[i].sum((-1, -2)), x[i].sum((-1, -2)), rtol=1e-5)
    point = torch.zeros(2, 1, 1, 21, 21)
    point[..., 10, 10] = 1.0
    p = gaussian_blur(point, torch.tensor([0.8, 1.3]))
    d2 = (torch.arange(21.0) - 10) ** 2
    var = (p[:, 0, 0].sum(-1) * d2).sum(-1)  # the blurred point's variance along one axis: σ² (the tails are cut)
    assert torch.allclose(var, torch.tensor([0.8 ** 2, 1.3 ** 2]), rtol=0.02)


def test_blurred_training_set_and_its_judge_fingerprint():
    """The judge trains on blurred reads of its data (seeded), only where the profile asks; the setting is in
    the cache key only when set, so judges trained without blur keep theirs."""
    from benchmark.data import load_dataset
    from benchmark.judges import BlurredTraining, _fingerprint, judge_config, judge_settings
    train = load_dataset("smmnist", "train", "smoke")
    cfg, settings = judge_config("smoke", "smmnist"), judge_settings("smoke", "smmnist")
    assert "blur_sigma_max" not in settings
    fp = _fingerprint(train, cfg, settings)
    assert _fingerprint(train, cfg, {**settings, "blur_sigma_max": 0}) == fp
    assert _fingerprint(train, cfg, {**settings, "blur_sigma_max": 1.5}) != fp
    a, b = BlurredTraining(train, 1.5, seed=0), BlurredTraining(train, 1.5, seed=0)
    idx = torch.arange(4)
    xa, xb, sharp = a.batch(idx)["x"], b.batch(idx)["x"], train.batch(idx)["x"]
    assert torch.equal(xa, xb) and not torch.equal(xa, sharp) and xa.shape == sharp.shape
    assert not torch.equal(a.batch(idx)["x"], xa), "a new σ on every read"
    assert torch.equal(a.batch(idx)["static"], train.batch(idx)["static"]) and len(a) == len(train)


def test_judge_trains_on_blurred_reads_where_the_profile_asks(workdir, monkeypatch, capsys):
    """The profile's blur_sigma_max reaches the judge's training (every batch blurred, the setting logged), and
    `judge --blur` prints its accuracy per σ (σ = 0: its test accuracy)."""
    import benchmark.judges as J
    from benchmark.profiles import PROFILES
    monkeypatch.setitem(PROFILES["smoke"].judge["per_dataset"], "smmnist",
                        {**PROFILES["smoke"].judge["per_dataset"]["smmnist"], "blur_sigma_max": 1.0})
    reads = []
    batch = J.BlurredTraining.batch
    monkeypatch.setattr(J.BlurredTraining, "batch", lambda self, idx: reads.append(len(idx)) or batch(self, idx))
    assert main(["judge", "--dataset", "smmnist", "--profile", "smoke", "--force", "--blur", "0.5,1.5"]) == 0
    assert reads, "the judge trained on blurred reads"
    out = capsys.readouterr().out
    report = json.loads(out[:out.index("\n}\n") + 2])
    run = mlflow.MlflowClient(resolve_uri()).get_run(report["run_id"])
    assert run.data.params["judge.blur_sigma_max"] == "1.0"
    rows = [line for line in out.splitlines() if line.startswith("| 0 |") or line.startswith("| 1.5 |")]
    assert len(rows) == 2 and f"{report['test_accuracy']['digit1']:.1f}" in rows[0]
    with pytest.raises(SystemExit):
        main(["judge", "--dataset", "smmnist", "--profile", "smoke", "--blur", "1,soft"])
    assert "expected comma-separated blur σ in pixels" in capsys.readouterr().err
    monkeypatch.setitem(PROFILES["smoke"].judge["per_dataset"], "smmnist",
                        {**PROFILES["smoke"].judge["per_dataset"]["smmnist"], "blur_sigma_max": -1})
    with pytest.raises(ValueError, match="blur_sigma_max=-1, expected a finite σ > 0"):
        J.get_judge("smmnist", "smoke", progress=False, force=True)
    with pytest.raises(ValueError, match="speech is audio"):
        J.blur_robustness(None, type("D", (), {"info": type("I", (), {"kind": "audio", "name": "speech"})})(), [1])
