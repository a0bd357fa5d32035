"""Judge classifiers: trained in-harness through the common trainer on a dataset's real training
sequences, cached by a fingerprint of dataset + judge config + judge source. Never downloaded."""
from __future__ import annotations

import inspect
import json

import torch

from benchmark import tracking
from benchmark.config import RunConfig
from benchmark.data import cache_dir, fingerprint, load_dataset
from benchmark.profiles import get_profile
from benchmark.seeding import seed_everything
from benchmark.trainer import Trainer
from metrics.classification import accuracy, multi_label_accuracy
from models import base, judge as judge_module
from models.judge import Judge

JUDGE_SEED = 0


def judge_settings(profile: str, dataset: str) -> dict:
    """The profile's judge settings for a dataset (its per_dataset entry over the common ones)."""
    p = get_profile(profile)
    j = {**p.judge, **p.judge.get("per_dataset", {}).get(dataset, {})}
    j.pop("per_dataset", None)
    return j


def judge_config(profile: str, dataset: str) -> RunConfig:
    p = get_profile(profile)
    j = judge_settings(profile, dataset)
    cfg = RunConfig(seed=JUDGE_SEED, profile=p.name)
    cfg.model.name, cfg.data.name = "judge", dataset
    cfg.model.width, cfg.model.hidden = j["width"], j["hidden"]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.max_steps = j["epochs"], j["batch_size"], j.get("max_steps", 0)
    cfg.train.log_every, cfg.train.checkpoint_every = 10, 0
    return cfg


@torch.no_grad()
def judge_accuracy(judge: Judge, dataset, batch_size: int = 256) -> dict[str, float]:
    """Per-head test accuracy (%), plus all static heads right at once (`static_all`)."""
    judge.eval()
    dev = next(judge.parameters()).device
    probs, tgts = {f: [] for f in judge.families}, {f: [] for f in judge.families}
    for i in range(0, len(dataset), batch_size):
        b = {k: v.to(dev) for k, v in dataset.batch(torch.arange(i, min(i + batch_size, len(dataset)))).items()}
        for f, p in judge.probs(b["x"]).items():
            probs[f].append(p.cpu())
            tgts[f].append(judge.targets(b, f).cpu())
    probs = {f: torch.cat(v) for f, v in probs.items()}
    tgts = {f: torch.cat(v) for f, v in tgts.items()}
    out = {f: 100.0 * accuracy(probs[f], tgts[f]) for f in judge.families}
    static = list(dataset.info.static_labels)
    if len(static) > 1:
        out["static_all"] = 100.0 * multi_label_accuracy([probs[f] for f in static], [tgts[f] for f in static])
    return out


def _fingerprint(dataset, cfg, train_frames: int) -> str:
    # only the code the judge runs: unrelated edits to models/base.py keep cached judges valid
    src = "".join(inspect.getsource(o) for o in (judge_module, base.ConvFrameEncoder, base.MLPFrameEncoder,
                                                  base.scaled, base.conv_depth))
    return fingerprint({"dataset": dataset.fingerprint, "config": cfg.to_dict(), "train_frames": train_frames,
                        "source": src})


def get_judge(dataset_name: str, profile: str = "cpu", data_dir: str | None = None, force: bool = False,
              tracking_uri: str | None = None, progress: bool = True, device: str = "auto"):
    """(judge in eval mode, report) for a dataset and profile: from the cache, or trained now."""
    cfg = judge_config(profile, dataset_name)
    cfg.train.device = device
    train_frames = judge_settings(profile, dataset_name).get("train_frames", 0)
    train = load_dataset(dataset_name, "train", profile, data_dir)
    fp = _fingerprint(train, cfg, train_frames)
    path = cache_dir() / "judges" / f"{dataset_name}-{fp}.pt"
    if path.exists() and not force:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        judge = Judge(train.info, cfg.model.width, cfg.model.hidden, cfg.model.feat_dim, train_frames)
        judge.load_state_dict(payload["state"])
        return judge.eval(), payload["report"]
    seed_everything(cfg.seed)
    judge = Judge(train.info, cfg.model.width, cfg.model.hidden, cfg.model.feat_dim, train_frames)
    with tracking.start_run(f"judge-{dataset_name}-{cfg.profile}", uri=tracking_uri,
                            tags={"kind": "judge", "model": "judge", "dataset": dataset_name, "profile": cfg.profile,
                                  "judge_fingerprint": fp, "dataset_fingerprint": train.fingerprint,
                                  **tracking.git_info()}) as run:
        run.log_params(cfg.flat() | {"judge.train_frames": train_frames})
        trainer = Trainer(judge, train, cfg, tracker=run, progress=progress)
        trainer.fit()
        test = load_dataset(dataset_name, "test", profile, data_dir)
        acc = judge_accuracy(judge, test)
        report = {"dataset": dataset_name, "profile": cfg.profile, "fingerprint": fp, "run_id": run.run_id,
                  "test_accuracy": acc, "train_wall_time_s": trainer.wall_time, "steps": trainer.state.step,
                  "n_train": len(train), "n_test": len(test)}
        run.log_metrics({f"test_acc_{k}": v for k, v in acc.items()}, trainer.state.step)
        run.log_text(json.dumps(report, indent=2), "judge_report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": {k: v.cpu() for k, v in judge.state_dict().items()}, "report": report}, path)
    return judge.cpu().eval(), report
