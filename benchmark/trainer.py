"""One training loop for every model: device, precision, checkpoint/resume, NaN guard, progress, hooks."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from benchmark.safeload import load_data
from benchmark.seeding import derive, rng_state, set_rng_state
from models.base import calibrate_recon_sigma


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, bad checkpoint); the message says why."""


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return torch.device(name)


# ISA caps a process can run under (an AVX-512 CPU measured as if it had AVX2 only: `results/bench/must-holds.sh`
# with ISA_CAP=avx2). oneDNN's levels below AVX512_CORE_BF16, under which bf16 is emulated.
ISA_CAP_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
_ONEDNN_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def isa_caps() -> dict[str, str]:
    """The ISA caps set in this process's environment (empty when it runs at the CPU's full ISA)."""
    return {k: os.environ[k] for k in ISA_CAP_VARS if os.environ.get(k)}


def cpu_has_bf16_units() -> bool:
    """AMX or AVX-512 BF16: the CPUs on which bf16 autocast is a speed-up rather than an emulation; False when
    oneDNN is capped below AVX512_CORE_BF16 (it would then emulate bf16 too)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ONEDNN_BELOW_BF16:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA with bf16 support and on CPUs with bf16 units, else fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--precision {precision!r}: expected auto, bf16 or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16_units() else "fp32"


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC weights for the 2-D convolutions (oneDNN and cuDNN are faster with them); 3-D convs stay."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.to(memory_format=torch.channels_last)
    return model


# learning-rate factor at step s of n
LR_SCHEDULES = {"constant": lambda s, n: 1.0,
                "cosine": lambda s, n: 0.5 * (1 + math.cos(math.pi * s / max(n, 1)))}
# the schedules whose factor does not depend on the budget n: under them a run of n steps is exactly the first n
# steps of a longer run (everything else in a step is a function of the step), so a raised budget goes on from
# the shorter run's final checkpoint instead of training again from step 0 (`api.extension_point`)
BUDGET_FREE_SCHEDULES = ("constant",)


def step_budget(tc, per_epoch: int) -> int:
    """The steps a run trains: its epochs of `per_epoch` steps, cut at `max_steps` when that is set."""
    n = tc.epochs * per_epoch
    return min(n, tc.max_steps) if tc.max_steps else n


class Batches:
    """Deterministic full batches: epoch e's order is a permutation seeded by (seed, e), so a resumed
    run sees exactly the batches the uninterrupted one would have. Drops the last partial batch
    (BatchNorm and the MWS estimator want full batches)."""

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device):
        if len(dataset) < batch_size:
            raise TrainingError(f"dataset {dataset.info.name}/{dataset.split} has {len(dataset)} sequences, "
                                f"fewer than one batch of {batch_size}")
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.per_epoch = len(dataset) // batch_size

    def epoch(self, e: int, start: int = 0):
        g = torch.Generator().manual_seed(derive(self.seed, "data-order", e))
        perm = torch.randperm(len(self.dataset), generator=g)
        for i in range(start, self.per_epoch):
            batch = self.dataset.batch(perm[i * self.batch_size:(i + 1) * self.batch_size])
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list = field(default_factory=list)  # (step, terms) every log_every steps, for summaries
    val_history: list = field(default_factory=list)  # (step, val metrics) every eval_every steps
    train_time_s: float = 0.0  # training time so far, without evaluations (continues across resumes)


def weighted_total(terms: dict, weights: dict) -> torch.Tensor:
    """Σ weight·term over the weighted terms (the objective); other terms are diagnostics."""
    return sum(w * terms[k].float() for k, w in weights.items() if w != 0 and k in terms)


def kl_warmup_weights(weights: dict, step: int, warmup: int) -> dict:
    """`weights` with every KL term (named kl_*) scaled by min(1, step / warmup); a function of the step
    alone, so a resumed run follows it exactly. warmup 0: `weights` unchanged."""
    if warmup <= 0 or step >= warmup:
        return weights
    f = step / warmup
    return {k: w * f if k.startswith("kl_") else w for k, w in weights.items()}


def furthest_checkpoint(paths, what: str) -> Path:
    """The checkpoint that holds the most training steps. Not the newest file: file times change (a copy,
    migrate-checkpoint), and a finished run's final.pt sits beside the later last.pt of a continuation that was
    cut short. `what` names the option, for a refused or unreadable file's error."""
    from benchmark.safeload import load_data
    return max(map(Path, paths), key=lambda p: load_data(p, what)["state"]["step"])


def match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's strides. The fused CPU Adam
    reads them as raw memory in the parameter's layout: moments saved from an NCHW model and loaded into a
    channels_last one would be updated wrongly, silently (measured: 1.7e-3 off after one step)."""
    for p, state in opt.state.items():
        for k, v in state.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def check_finite(terms: dict, total: torch.Tensor, step: int) -> None:
    if torch.isfinite(total):
        return
    bad = [f"{k}={v.item():.4g}" for k, v in terms.items() if not torch.isfinite(v)]
    raise TrainingError(f"non-finite loss at step {step}: "
                        f"{', '.join(bad) if bad else f'total={total.item()} (overflow of a large weighted term)'}; "
                        f"try a lower loss weight or learning rate, or --precision fp32")


class Trainer:
    def __init__(self, model, dataset, cfg, tracker=None, ckpt_dir: str | Path = "checkpoints",
                 hooks: list[Callable] | None = None, progress: bool = True, evaluator: Callable | None = None,
                 on_validate: Callable | None = None):
        """`hooks(trainer)` run after every epoch; `evaluator(model) -> {name: value}` every
        `train.eval_every` steps and at the end, logged as `val/<name>` (the learning curves);
        `on_validate(trainer)` right after each of those (figures at that step)."""
        self.on_validate = on_validate
        self.cfg, self.tc = cfg, cfg.train
        self.device = select_device(self.tc.device)
        self.precision = resolve_precision(self.tc.precision, self.device)
        # a fixed sample of the train split (the first 1,024 sequences) is plenty for a std per channel
        calibrate_recon_sigma(model, dataset.tensors["x"][:1024], dataset.info.kind, cfg.loss.recon_sigma_init)
        self.model = model.to(self.device)
        if dataset.info.kind == "video":
            channels_last(self.model)
        self.optimizers = self.model.configure_optimizers(self.tc)
        if cfg.loss.kl_warmup < 0:
            raise TrainingError(f"loss.kl_warmup={cfg.loss.kl_warmup}: expected steps >= 0 (0: no warm-up)")
        if self.tc.lr_schedule not in LR_SCHEDULES:
            raise TrainingError(f"train.lr_schedule={self.tc.lr_schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
        self.base_lrs = [[g["lr"] for g in o.param_groups] for o in self.optimizers]
        self.step_fn = torch.compile(self._step) if self.tc.compile else self._step
        self.batches = Batches(dataset, self.tc.batch_size, cfg.seed, self.device)
        self.weights = self.model.loss_weights()
        self.tracker, self.hooks, self.progress, self.evaluator = tracker, hooks or [], progress, evaluator
        self.ckpt_dir = Path(ckpt_dir)
        self.state = TrainState()
        self.start_step = 0

    @property
    def total_steps(self) -> int:
        return step_budget(self.tc, self.batches.per_epoch)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step(self, batch):
        """Default step: forward, Σ weight·term, backward, clip, update. Models with their own
        update rule (adversarial ones) provide train_step(batch, optimizers, weights, autocast)."""
        weights = kl_warmup_weights(self.weights, self.state.step, self.cfg.loss.kl_warmup)
        if "adversarial" in self.model.capabilities:
            terms = self.model.train_step(batch, self.optimizers, weights, self.autocast)
            total = weighted_total(terms, weights)
            check_finite(terms, total, self.state.step)
            return {**terms, "total": total}
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with self.autocast():
            terms = self.model.loss_terms(batch)
        total = weighted_total(terms, weights)
        check_finite(terms, total, self.state.step)
        total.backward()
        if self.tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        for opt in self.optimizers:
            opt.step()
        out = {k: v.detach() for k, v in terms.items()}
        out["total"] = total.detach()
        return out

    def _set_lr(self):
        """The schedule is a function of the step alone, so a resumed run follows it exactly."""
        f = LR_SCHEDULES[self.tc.lr_schedule](self.state.step, self.total_steps)
        for opt, lrs in zip(self.optimizers, self.base_lrs):
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr * f

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, path: Path | None = None) -> Path:
        path = Path(path or self.ckpt_dir / "last.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in self.optimizers],
                   "rng": rng_state(), "state": self.state.__dict__, "config": self.cfg.to_dict(),
                   "dataset_fingerprint": self.batches.dataset.fingerprint,
                   "run_id": self.tracker.run_id if self.tracker else None}
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: a crash mid-save never destroys the previous checkpoint
        return path

    def checkpoint(self) -> Path:
        """last.pt, and its copy as the run's artifact checkpoints/last.pt: with a remote artifact store the run
        survives the loss of this machine's disk (`train --continue` and a table's cells fetch it back)."""
        path = self.save_checkpoint()
        if self.tracker:
            self.tracker.log_artifact(path, "checkpoints")
        return path

    def load_checkpoint(self, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"--resume {path}: no such checkpoint file")
        try:
            payload = load_data(path, "--resume", map_location=self.device)
        except ValueError as e:  # unreadable, or refused because it could run code: the message says which
            raise TrainingError(str(e)) from None
        if not isinstance(payload, dict) or "model" not in payload:
            raise TrainingError(f"--resume {path}: not a checkpoint written by this harness")
        saved = payload["config"]
        for key in ("model", "data"):
            if saved[key]["name"] != getattr(self.cfg, key).name:
                raise TrainingError(f"--resume {path}: checkpoint is for {key} {saved[key]['name']!r}, "
                                    f"this run is {getattr(self.cfg, key).name!r}")
        self.model.load_state_dict(payload["model"])
        for opt, sd in zip(self.optimizers, payload["optimizers"]):
            opt.load_state_dict(sd)
            match_param_layout(opt)
        set_rng_state(payload["rng"])
        self.state = TrainState(**payload["state"])

    # ---- loop ------------------------------------------------------------------------------
    def fit(self, resume: str | Path | None = None) -> TrainState:
        if resume:
            self.load_checkpoint(resume)
        self.start_step = self.state.step  # this process's share of the steps (its sequences/s)
        self.model.train()
        st, tc = self.state, self.tc
        bar = tqdm(total=self.total_steps, initial=st.step, disable=not self.progress, unit="step",
                   desc=f"{self.cfg.model.name}/{self.cfg.data.name}", dynamic_ncols=True)
        t0 = tick = time.perf_counter()
        while st.step < self.total_steps:
            for batch in self.batches.epoch(st.epoch, st.batch_in_epoch):
                self._set_lr()
                terms = self.step_fn(batch)
                st.step += 1
                st.batch_in_epoch += 1
                if st.step % tc.log_every == 0 or st.step == self.total_steps:
                    vals = {k: float(v) for k, v in terms.items()}
                    st.history.append((st.step, vals))
                    if self.tracker:
                        self.tracker.log_metrics({f"train/{k}": v for k, v in vals.items()}, st.step)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in vals.items()}, refresh=False)
                bar.update(1)
                now = time.perf_counter()
                st.train_time_s, tick = st.train_time_s + now - tick, now
                if self.evaluator and tc.eval_every and (st.step % tc.eval_every == 0 or st.step == self.total_steps):
                    self.validate()
                    tick = time.perf_counter()  # evaluation is not training time
                if tc.checkpoint_every and st.step % tc.checkpoint_every == 0:
                    self.checkpoint()
                if st.step >= self.total_steps:
                    break
            if st.batch_in_epoch >= self.batches.per_epoch:
                st.epoch += 1
                st.batch_in_epoch = 0
                self._run_hooks()
            elif st.step >= self.total_steps:  # max_steps ended training mid-epoch: hooks see the end too
                self._run_hooks()
            tick = time.perf_counter()  # hooks (sweeps score there) are not training time
        bar.close()
        self.wall_time = time.perf_counter() - t0
        return st

    def _run_hooks(self):
        for hook in self.hooks:
            hook(self)

    def validate(self, evaluator: Callable | None = None) -> dict[str, float]:
        """Score the model now (`evaluator`, default the trainer's) and log it as `val/...` at this step, with
        the training time so far (evaluations excluded): curves against steps and against time."""
        st = self.state
        vals = {**(evaluator or self.evaluator)(self.model), "train_time_s": st.train_time_s}
        st.val_history.append((st.step, vals))
        if self.tracker:
            self.tracker.log_metrics({f"val/{k}": v for k, v in vals.items()}, st.step)
            self.tracker.flush()
        if self.on_validate:
            self.on_validate(self)
        if self.progress:
            shown = {k: v for k, v in vals.items() if k in ("acc", "recon_mse", "eer_z_f", "eer_z_t")
                     or k.startswith("recon_acc_")}
            tqdm.write(f"[val step {st.step}] " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()), file=sys.stderr)
        return vals
