"""Trainer: bit-identical resume, NaN guard, checkpoints; CLI errors; MLflow tracking."""
import json
import math
import re
import subprocess
import sys
import threading
import time

import mlflow
import pytest
import torch

from benchmark.__main__ import main
from benchmark.tracking import resolve_uri, search_runs
from benchmark.config import resolve_config
from benchmark.data import load_dataset
from benchmark.seeding import seed_everything
from benchmark.trainer import Trainer, TrainingError
from benchmark.zoo import build_model


def make_trainer(tmp_path, max_steps, name="s3vae", **loss):
    # fp32: these tests check the trainer's arithmetic to 1e-5, which bf16 autocast (`auto` on CPUs with bf16
    # units) does not keep
    cfg = resolve_config(name, "sprites", "smoke", seed=3, overrides={"train.max_steps": str(max_steps),
                                                                      "train.epochs": "5", "train.precision": "fp32"})
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    ds = load_dataset("sprites", "train", "smoke")
    seed_everything(cfg.seed)
    return Trainer(build_model(cfg, ds.info), ds, cfg, ckpt_dir=tmp_path, progress=False)


def test_resume_is_bit_identical(workdir):
    # 2N steps straight vs N steps, checkpoint, fresh process state, N more: same parameters
    n = 4  # smoke: 2 batches per epoch, so the resume point crosses an epoch boundary
    straight = make_trainer(workdir / "a", 2 * n)
    straight.fit()
    first = make_trainer(workdir / "b", n)
    first.fit()
    ckpt = first.save_checkpoint()
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    resumed = make_trainer(workdir / "c", 2 * n)
    resumed.fit(resume=ckpt)
    assert resumed.state.step == 2 * n
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"


def test_nan_loss_stops_with_step_and_term(workdir):
    tr = make_trainer(workdir, 3)
    with torch.no_grad():
        tr.model.zf_head.logvar.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite loss at step 0: .*kl_f=nan"):
        tr.fit()


def test_cosine_lr_is_a_function_of_the_step(workdir):
    import math
    tr = make_trainer(workdir, 6)
    tr.tc.lr_schedule = "cosine"
    seen, step = [], tr.step_fn
    tr.step_fn = lambda b: (seen.append(tr.optimizers[0].param_groups[0]["lr"]), step(b))[1]
    tr.fit()
    assert seen == pytest.approx([tr.tc.lr * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])
    cfg = resolve_config("s3vae", "sprites", "smoke", overrides={"train.lr_schedule": "linear"})
    ds = load_dataset("sprites", "train", "smoke")
    with pytest.raises(TrainingError, match="train.lr_schedule='linear': expected one of constant, cosine"):
        Trainer(build_model(cfg, ds.info), ds, cfg, ckpt_dir=workdir, progress=False)


def test_kl_warmup_scales_only_kl_terms_by_the_step(workdir):
    from benchmark.trainer import kl_warmup_weights
    w = {"recon": 1.0, "kl_f": 1.0, "kl_t": 2.0, "mi": 3.0}
    assert kl_warmup_weights(w, 1, 4) == {"recon": 1.0, "kl_f": 0.25, "kl_t": 0.5, "mi": 3.0}
    assert kl_warmup_weights(w, 4, 4) == w and kl_warmup_weights(w, 0, 0) == w
    # in the trainer: the objective of step s is recon + (s / warmup)·KL + the rest
    tr = make_trainer(workdir, 3)
    tr.cfg.loss.kl_warmup = 2
    seen = []
    step = tr.step_fn
    tr.step_fn = lambda b: (lambda out: (seen.append(out), out)[1])(step(b))
    tr.fit()
    rest = lambda o: sum(w * o[k] for k, w in tr.weights.items() if not k.startswith("kl_") and k in o)  # noqa: E731
    for s, o in enumerate(seen):
        kl = sum(w * o[k] for k, w in tr.weights.items() if k.startswith("kl_"))
        assert float(o["total"]) == pytest.approx(float(rest(o) + min(1, s / 2) * kl), rel=1e-5)
    with pytest.raises(TrainingError, match=r"loss.kl_warmup=-5: expected steps >= 0"):
        make_trainer(workdir, 1, kl_warmup=-5)


def test_continue_takes_the_checkpoint_furthest_along_not_the_newest_file(workdir):
    import os
    from benchmark.trainer import furthest_checkpoint
    last, final = workdir / "last.pt", workdir / "final.pt"
    torch.save({"state": {"step": 8703}}, last)
    torch.save({"state": {"step": 3000}}, final)
    os.utime(last, (1, 1))  # last.pt older on disk (as after migrate-checkpoint rewrote final.pt)
    assert furthest_checkpoint([final, last], "--continue") == last
    assert furthest_checkpoint([final], "--continue") == final
    (workdir / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="--continue .*bad.pt: not a readable checkpoint"):
        furthest_checkpoint([final, workdir / "bad.pt"], "--continue")


def test_continue_fetches_the_mirrored_checkpoint_when_the_local_one_is_gone(workdir, capsys):
    """Periodic checkpoints are copied to the run's artifacts (checkpoints/last.pt): `--continue` on a machine
    without the run's checkpoint_dir (a fresh machine, a wiped disk) goes on from the furthest copy there."""
    import shutil

    from benchmark import tracking
    from benchmark.api import resume_point
    from benchmark.safeload import load_data
    args = ["train", "--profile", "smoke", "-o", "train.checkpoint_every=2"]
    assert main(args + ["-o", "train.max_steps=3"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    shutil.rmtree(workdir / "checkpoints")
    assert load_data(tracking.download_artifact(run_id, "checkpoints/last.pt"), "t")["state"]["step"] == 2
    assert load_data(resume_point(tracking.find_run(run_id)), "t")["state"]["step"] == 3  # final.pt is further
    assert main(args + ["-o", "train.max_steps=5", "--continue", run_id]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 5


def test_fused_adam_is_the_reference_update(workdir):
    """The trainer's optimizer is the fused Adam kernel on CPU, and it updates as torch's reference Adam does."""
    import copy
    tr = make_trainer(workdir, 1)
    assert all(g["fused"] for o in tr.optimizers for g in o.param_groups)
    ref_model = copy.deepcopy(tr.model)
    ref = torch.optim.Adam(ref_model.parameters(), lr=tr.tc.lr, betas=(tr.tc.beta1, tr.tc.beta2), foreach=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(tr.model.parameters(), ref_model.parameters()):
            # a gradient has its parameter's strides (channels_last convs), as autograd makes it
            a.grad = torch.empty_like(a).copy_(torch.randn(a.shape, generator=gen))
            b.grad = a.grad.clone()
        tr.optimizers[0].step()
        ref.step()
    for (k, a), b in zip(tr.model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_resumed_adam_moments_take_their_parameters_layout():
    """Moments saved with NCHW strides, loaded for a channels_last parameter: the fused update is still right."""
    from benchmark.trainer import match_param_layout
    torch.manual_seed(0)
    w = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
    g = torch.randn(8, 3, 4, 4).to(memory_format=torch.channels_last)
    after = {}
    for fused in (True, False):
        p = torch.nn.Parameter(w.clone())
        opt = torch.optim.Adam([p], lr=1e-3, fused=fused, foreach=None if fused else False)
        p.grad = g.clone()
        opt.step()
        sd = opt.state_dict()
        for st in sd["state"].values():
            st["exp_avg"], st["exp_avg_sq"] = st["exp_avg"].contiguous(), st["exp_avg_sq"].contiguous()
        opt = torch.optim.Adam([p], lr=1e-3, fused=fused, foreach=None if fused else False)
        opt.load_state_dict(sd)
        match_param_layout(opt)
        assert opt.state[p]["exp_avg"].stride() == p.stride()
        p.grad = g.clone()
        opt.step()
        after[fused] = p.detach()
    torch.testing.assert_close(after[True], after[False], rtol=1e-5, atol=1e-7)


def test_density_ratio_mi_option_trains_its_classifier_and_logs_both_estimates(workdir):
    tr = make_trainer(workdir, 3, mi_estimator="density-ratio")
    before = [p.detach().clone() for p in tr.model.mi_net.parameters()]
    tr.fit()
    terms = tr.state.history[-1][1]
    assert {"mi", "mws_mi", "mi_classifier", "mi_ceiling"} <= set(terms)
    assert all(math.isfinite(v) for v in terms.values())
    assert tr.weights["mi_classifier"] == 1.0 and "mws_mi" not in tr.weights
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.model.mi_net.parameters()))
    with pytest.raises(ValueError, match="loss.mi_estimator='mine': expected one of mws, density-ratio"):
        make_trainer(workdir, 1, mi_estimator="mine")


def test_bad_resume_path(workdir):
    tr = make_trainer(workdir, 2)
    with pytest.raises(TrainingError, match="no such checkpoint"):
        tr.fit(resume=workdir / "missing.pt")
    bad = workdir / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        tr.fit(resume=bad)


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "nope", "--profile", "smoke"], "unknown model 'nope'; known models: baseline"),
    (["train", "--dataset", "mnist9", "--profile", "smoke"], "has no settings for dataset 'mnist9'"),
    (["train", "--profile", "smoke", "-o", "loss.lambda_xyz=1"], "unknown config key 'loss.lambda_xyz'"),
    (["train", "--profile", "smoke", "-o", "loss.lambda_scc=abc"], "expected a value of type float"),
    (["train", "--profile", "huge"], "unknown profile 'huge'"),
    (["train", "--profile", "smoke", "--resume", "nowhere.pt"], "--resume nowhere.pt: no such checkpoint"),
    (["train", "--profile", "smoke", "--tracking-uri", "http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 is unreachable"),
])
def test_cli_bad_input_one_line_error(workdir, capsys, argv, expected):
    t0 = time.time()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and expected in err[-1]
    assert time.time() - t0 < 60


def test_cli_nan_loss_one_line_error(workdir, capsys):
    assert main(["train", "--profile", "smoke", "-o", "train.lr=1e30"]) == 2
    assert "non-finite loss at step" in capsys.readouterr().err.strip().splitlines()[-1]
    runs = search_runs("")
    assert runs and runs[0].info.status == "FAILED" and "non-finite" in runs[0].data.tags["error"]


def test_train_is_tracked_in_mlflow(workdir, capsys):
    assert main(["train", "--profile", "smoke", "--model", "no-mi", "--seed", "7", "-o", "loss.lambda_scc=10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    client = mlflow.MlflowClient(resolve_uri())
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    p, tags = run.data.params, run.data.tags
    assert p["loss.lambda_scc"] == "10.0" and p["loss.lambda_mi"] == "0.0" and p["seed"] == "7"
    for key in ("model", "dataset", "profile", "seed", "git_commit", "dataset_fingerprint", "device"):
        assert key in tags
    assert (tags["model"], tags["dataset"], tags["profile"]) == ("no-mi", "sprites", "smoke")
    for term in ("recon", "kl_f", "kl_t", "scc", "dfp", "mi", "total"):
        hist = client.get_metric_history(run.info.run_id, f"train/{term}")
        assert [m.step for m in hist] == [1, 2, 3, 4], term
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "checkpoints", "figures", "summary.json"} <= arts
    figs = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/reconstruction.png", "figures/swap.png", "figures/samples.png"} <= figs
    assert (workdir / summary["checkpoint"]).is_file()


def test_eval_every_logs_val_curves_at_the_expected_steps(workdir, capsys):
    """train.eval_every=3 over 7 steps scores the val split at steps 3, 6 and the last (7)."""
    assert main(["train", "--profile", "smoke", "-o", "train.max_steps=7", "-o", "train.epochs=5",
                 "-o", "train.eval_every=3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    client = mlflow.MlflowClient(resolve_uri())
    for name in ("val/acc", "val/acc_action", "val/acc_static", "val/acc_all_static", "val/acc_skin_static",
                 "val/recon_acc_action", "val/recon_acc_hair", "val/recon_mse", "val/zf_std_across",
                 "val/train_time_s"):
        hist = client.get_metric_history(summary["run_id"], name)
        assert [m.step for m in hist] == [3, 6, 7], name
    times = [m.value for m in client.get_metric_history(summary["run_id"], "val/train_time_s")]
    assert 0 < times[0] < times[1] < times[2]
    # the training terms are still logged every step, and the curve of the summary is the last val point
    assert len(client.get_metric_history(summary["run_id"], "train/recon")) == 7
    # the figures at every val step, as images MLflow compares across runs and steps
    images = {a.path for a in client.list_artifacts(summary["run_id"], "images")}
    for key in ("reconstruction", "swap", "samples"):
        assert any(p.startswith(f"images/{key}") and "+step+3+" in p for p in images), (key, sorted(images)[:6])
    assert summary["final_val"]["acc"] == client.get_metric_history(summary["run_id"], "val/acc")[-1].value


def test_eval_every_does_not_change_training(workdir, capsys):
    """Scoring draws its own random numbers: the trained weights are the same with and without it."""
    import torch
    ckpts = []
    for every in ("0", "2"):
        assert main(["train", "--profile", "smoke", "-o", f"train.eval_every={every}"]) == 0
        ckpts.append(torch.load(json.loads(capsys.readouterr().out)["checkpoint"], weights_only=False)["model"])
    assert all(torch.equal(ckpts[0][k], ckpts[1][k]) for k in ckpts[0])


def test_list_shows_models_and_capabilities(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("s3vae", "baseline", "no-scc", "no-dfp", "no-mi", "sprites", "smoke", "paper"):
        assert name in out
    assert "encode" in out


def test_sigterm_saves_a_checkpoint_and_marks_the_run_killed(workdir):
    """A killed training run keeps its progress: checkpoint + KILLED status, resumable."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "train", "--profile", "smoke", "-o", "train.epochs=100000",
                             "-o", "train.max_steps=0"], cwd=workdir, stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()  # tqdm redraws with \r, so read characters, not lines
    deadline = time.time() + 240
    # tqdm draws "0/N ... ?step/s" before the first step: wait for a bar past step 0 (a loaded CPU is slow to it)
    stepped = re.compile(r"\|\s*[1-9]\d*/\d+ \[[^]]*step/s")
    while time.time() < deadline and not stepped.search("".join(err)):
        time.sleep(0.5)
    assert stepped.search("".join(err)), "training never got past step 0"
    proc.terminate()
    proc.wait(timeout=120)
    reader.join(timeout=30)
    rest = "".join(err)
    assert proc.returncode != 0
    ckpts = list((workdir / "checkpoints").glob("*/last.pt"))
    assert len(ckpts) == 1
    run_id = ckpts[0].parent.name
    assert f"go on with --continue {run_id}" in rest
    client = mlflow.MlflowClient(resolve_uri())
    assert client.get_run(run_id).info.status == "KILLED"
    assert "checkpoints/last.pt" in [f.path for f in client.list_artifacts(run_id, "checkpoints")], "mirrored"
    assert torch.load(ckpts[0], weights_only=False)["state"]["step"] > 0


def test_cpu_profile_budgets_per_dataset():
    """The cpu profile's per-dataset budgets and nets (chosen from the val curves) reach the run config;
    a command-line override still wins."""
    from benchmark.profiles import get_profile
    prof = get_profile("cpu")
    for dataset, steps in {d: t["max_steps"] for d, t in prof.train_per_dataset.items()}.items():
        cfg = resolve_config("s3vae", dataset, "cpu")
        assert cfg.train.max_steps == steps > 0 and cfg.train.eval_every == prof.train["eval_every"] > 0
        assert cfg.model.width == (0.5 if dataset == "speech" else 0.25)
    assert resolve_config("s3vae", "sprites", "cpu").train.batch_size == 32
    assert resolve_config("s3vae", "faces", "cpu").train.batch_size == 16
    assert resolve_config("s3vae", "faces", "cpu", overrides={"train.max_steps": "5"}).train.max_steps == 5


def test_every_command_says_what_auto_chose(capsys, monkeypatch):
    """`--profile auto` resolves per machine (paper on CUDA, else cpu): the choice is said on stderr by the one
    function every command resolves its profile with, not only by train and bench."""
    import torch

    from benchmark.__main__ import get_profile_name
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile_name("auto") == "cpu" and "profile: cpu (auto)" in capsys.readouterr().err
    assert get_profile_name("smoke") == "smoke" and capsys.readouterr().err == ""


def test_a_missing_optional_extra_is_one_line(capsys, monkeypatch):
    """`faces --data-dir` without the [mug] extra (or any command missing an optional package): exit 2 and one
    line naming what to install, not a traceback."""
    import benchmark.__main__ as cli

    def needs_dlib(args):
        raise ImportError("faces --data-dir needs dlib landmarks: pip install -e '.[mug]'")
    monkeypatch.setattr(cli, "cmd_list", needs_dlib)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err == "error: faces --data-dir needs dlib landmarks: pip install -e '.[mug]'\n"
