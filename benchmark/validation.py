"""Scores during training (`train.eval_every`): the learning curves of a run, as `val/...` MLflow metrics.

One function for train, tables and sweeps: on a fixed subset of the **val** split, the dataset's
protocol (Acc per side and per label family, IS, H(y|x), H(y)), the judge's accuracy on the model's
posterior-mean reconstructions (the protocol's ceiling), reconstruction MSE, the across-sequence
spread of z_f and z_{1:T}, and for speech the z_f / z_{1:T} speaker-verification EER.
"""
from __future__ import annotations

import time

import torch


class Validator:
    """`validator(model) -> {name: value}` on a fixed val subset (the same sequences at every call)."""

    def __init__(self, val, judge=None, max_sequences: int | None = 256, passes: int = 1, seed: int = 0):
        self.val, self.judge, self.max_sequences, self.passes, self.seed = val, judge, max_sequences, passes, seed

    @torch.inference_mode()
    def __call__(self, model) -> dict[str, float]:
        from benchmark.api import protocol_metrics
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        if self.judge is not None:
            self.judge.to(dev).eval()
        t0 = time.perf_counter()
        # the training run's random streams must not depend on whether (or how often) it is scored
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            out = dict(protocol_metrics(model, self.judge, self.val, self.passes, self.seed,
                                        self.max_sequences, probes=False)["metrics"])
        out["eval_time_s"] = time.perf_counter() - t0
        model.train(was_training)
        return out


def val_held_out(train_split: str) -> bool:
    """Whether the val split is unseen by a model trained on `train_split`. Every loader makes val a subset
    of train (tables train on all of train, as the paper) and fit = train minus val, so val curves are
    held-out only for `train.split=fit`; on `train` they measure the fit to (part of) the training data."""
    return train_split == "fit"


def make_validator(cfg, tracking_uri: str | None = None, progress: bool = True, passes: int | None = None,
                   max_sequences: int | None = None) -> Validator:
    """The validator of a run's config: its dataset's val split, the dataset's judge (trained now if it is
    not cached; speech has none) and the profile's val settings (`eval.val_sequences`, `eval.val_passes`)."""
    from benchmark.data import load_dataset
    from benchmark.judges import get_judge
    from benchmark.profiles import get_profile
    from metrics.protocols import PROTOCOLS
    prof = get_profile(cfg.profile).eval
    val = load_dataset(cfg.data.name, "val", cfg.profile, cfg.data.data_dir, cfg.data.options)
    judge = None
    if cfg.data.name in PROTOCOLS:
        judge, _ = get_judge(cfg.data.name, cfg.profile, cfg.data.data_dir, options=cfg.data.options,
                             tracking_uri=tracking_uri, progress=progress, device=cfg.train.device)
    return Validator(val, judge, prof.get("val_sequences", 256) if max_sequences is None else max_sequences,
                     prof.get("val_passes", 1) if passes is None else passes, seed=0)
