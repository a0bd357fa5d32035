"""What the CLI commands do, as functions (tests and tables call these too)."""
from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmark import roofline, tracking, visuals
from benchmark.config import RunConfig
from benchmark.data import load_dataset
from benchmark.seeding import seed_everything
from benchmark.trainer import Trainer, channels_last, select_device
from benchmark.zoo import MODELS, build_model
from experiments import LEARNING_FLOORS, below_floors, shortfall


def run_tags(cfg: RunConfig, dataset, device) -> dict:
    return {"model": cfg.model.name, "dataset": cfg.data.name, "profile": cfg.profile, "seed": cfg.seed,
            "dataset_fingerprint": dataset.fingerprint, **tracking.git_info(), **tracking.host_info(device)}


@functools.lru_cache(maxsize=None)  # once per process: a table's plan fingerprints every cell and candidate run
def source_hash() -> str:
    """Hash of the code a result depends on (models/, metrics/, benchmark/data/), not of the git commit,
    so that a results-only commit does not invalidate finished runs."""
    import hashlib
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("models", "metrics", "benchmark/data"):
        for f in sorted((root / sub).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _learning_code() -> tuple:
    """The code outside `source_hash` that still decides what a model learns: the objective's weighting, the
    KL warm-up, the learning-rate schedule, the batch order, the seeds, the model build, the step and the loop
    around it, and what makes a resumed run exact (checkpoint loading, RNG states). Not in the fingerprint
    (adding it would retrain every finished cell); recorded per run instead (`LEARNING_CODE_TAG`) so that a
    table reusing a run trained under other code says so (`learning_code_drift`).
    Listed function by function, not whole files, so a change elsewhere there (checkpoint copies, figures) is no
    alarm; `api.train`'s own wiring is not listed (mostly tracking)."""
    from benchmark import seeding, trainer, zoo
    T = trainer.Trainer
    return (trainer.weighted_total, trainer.kl_warmup_weights, *trainer.LR_SCHEDULES.values(), trainer.Batches,
            T.__init__, T.fit, T._step, T._set_lr, T.load_checkpoint, trainer.match_param_layout,
            seeding.seed_everything, seeding.derive, seeding.rng_state, seeding.set_rng_state, zoo.build_model)


LEARNING_CODE_TAG = "learning_code"
# what to do about a cell whose run trained under other learning code (said by `learning_code_drift` and the plan)
RETRAIN_ONE_CELL = ("to train one again under this code, delete its run (`mlflow runs delete --run-id ID`) and "
                    "rerun; `--force` retrains every cell of the command")


@functools.lru_cache(maxsize=None)
def learning_code_hash() -> str:
    """Hash of `_learning_code()`'s source, as a run records it at creation (tag `learning_code`)."""
    import hashlib
    import inspect
    h = hashlib.sha256()
    for obj in _learning_code():
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


learning_code_hash()  # now, at import: the code this process runs, not the files as they may be edited later


def learning_code_tag(earlier: str | None, continued: bool) -> str | None:
    """The `learning_code` tag of a run: this tree's hash for a new run; for one that goes on from earlier steps
    (resumed, or extended from a smaller budget) with tag `earlier`: the same where that code was this one,
    "EARLIER+THIS" where it was not (mixed code, flagged from then on), none where it is unknown."""
    now = learning_code_hash()
    if not continued or earlier == now:
        return now
    if not earlier or now in earlier.split("+"):
        return earlier or None
    return f"{earlier}+{now}"


def learning_code_drift(run) -> str | None:
    """Why reusing `run` may not be what this code would train (its `learning_code` tag differs from this
    tree's), or None: the same code, or a run from before the tag (unknown, not flagged)."""
    was = run.data.tags.get(LEARNING_CODE_TAG)
    if not was or was == learning_code_hash():
        return None
    return (f"run {run.info.run_id} trained under other learning code (tag {LEARNING_CODE_TAG}={was}, this tree "
            f"{learning_code_hash()}: a function of `api._learning_code` in benchmark/trainer.py, seeding.py or "
            f"zoo.py changed since; A+B: its steps ran under both); a table takes it as it is; {RETRAIN_ONE_CELL}")


def run_fingerprint(cfg: RunConfig, dataset_fingerprint: str) -> str:
    """What makes two runs the same: config, data, code, and the precision `auto` resolves to here (a bf16 run on
    an AVX-512 machine is not an fp32 one on an AVX2 machine, though both asked for auto)."""
    from benchmark.data import fingerprint
    from benchmark.trainer import resolve_precision, select_device
    config = cfg.to_dict()
    config["train"]["precision"] = resolve_precision(cfg.train.precision, select_device(cfg.train.device))
    return fingerprint({"config": config, "dataset": dataset_fingerprint, "source": source_hash()})


def logged_params(cfg: RunConfig) -> dict[str, object]:
    """A run's MLflow params: the config, plus the data settings its loader was given (the profile's, then
    `-o data.KEY` over them) as `data.<key>`, so runs that differ only in a profile's data size compare in
    the UI and in `curves --hue data.<key>`."""
    from benchmark.profiles import get_profile
    settings = get_profile(cfg.profile).data_settings(cfg.data.name, cfg.data.options)
    return {f"data.{k}": v for k, v in settings.items()} | cfg.flat()


def _mark_continued(run, before, cfg: RunConfig) -> None:
    """A run trained on (`train --continue`, a resumed cell): settings that differ from its logged params go in the
    tag `continued_with` (and config.json is the config it goes on under); eval/ metrics from before are tagged
    stale (`tracking.EVAL_STALE_TAG`), so no table reuses an evaluation of fewer steps."""
    params = before.data.params
    changed = {k: (params[k], str(v)) for k, v in logged_params(cfg).items() if k in params and params[k] != str(v)}
    if changed:
        run.set_tags({"continued_with": "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items())})
        run.log_text(cfg.to_json(), "config.json")
    if any(k.startswith("eval/") for k in before.data.metrics):
        run.set_tags({tracking.EVAL_STALE_TAG: "the run trained on after these eval/ metrics were logged"})


def train(cfg: RunConfig, resume: str | None = None, tracking_uri: str | None = None,
          progress: bool = True, ckpt_root: str = "checkpoints", parent_run_id: str | None = None,
          run_id: str | None = None, extra_tags: dict | None = None, hooks: list | None = None,
          experiment: str = tracking.DEFAULT_EXPERIMENT, run_name: str | None = None,
          extends: str | None = None) -> dict:
    """Train one model on one dataset, tracked in MLflow. Returns run id, checkpoint, final terms, wall time.
    `run_id` continues an interrupted run (same MLflow run, `resume` its checkpoint); `extends`: the finished
    run of a smaller budget that this new run goes on from (`resume` its checkpoint, `extension_point`): its
    curves are copied in and it is tagged `extended_from`; `hooks` are called with the trainer after every
    epoch (sweeps report and prune there)."""
    from benchmark.validation import val_held_out
    if extends and not resume:
        raise ValueError(f"train: extends={extends} needs resume= that run's checkpoint (else its curves would be "
                         "copied beside a run trained again from step 0)")
    tracking.health_check(tracking.resolve_uri(tracking_uri))  # before any data or model work
    dataset = load_dataset(cfg.data.name, cfg.train.split, cfg.profile, cfg.data.data_dir, cfg.data.options)
    evaluator = None
    if cfg.train.eval_every > 0:  # learning curves: the val split and its judge, before the model is seeded
        from benchmark.validation import make_validator
        evaluator = make_validator(cfg, tracking_uri=tracking_uri, progress=progress)
        if not val_held_out(cfg.train.split):
            print(f"note: train.split={cfg.train.split} contains the val split, so the val/ curves measure the "
                  "fit to training data (in-sample); -o train.split=fit holds val out", file=sys.stderr)
    seed_everything(cfg.seed)
    model = build_model(cfg, dataset.info)
    name = run_name or f"{cfg.model.name}-{cfg.data.name}-{cfg.profile}-s{cfg.seed}"
    # identity tags at creation, atomically with the run: a worker killed right after creating it leaves a
    # run that the cell queue can still find by fingerprint and close
    fp = run_fingerprint(cfg, dataset.fingerprint)
    with tracking.start_run(name, uri=tracking_uri, parent_run_id=parent_run_id, run_id=run_id, experiment=experiment,
                            tags={"model": cfg.model.name, "kind": "train", "fingerprint": fp}) as run:
        ckpt_dir = Path(ckpt_root) / run.run_id
        trainer = Trainer(model, dataset, cfg, tracker=run, ckpt_dir=ckpt_dir, progress=progress, hooks=hooks,
                          evaluator=evaluator, on_validate=lambda t: log_pictures(t.model, dataset, run, t))
        held_out = str(val_held_out(cfg.train.split)).lower()
        run.set_tags(run_tags(cfg, dataset, trainer.device) | {"precision": trainer.precision,
                                                               "checkpoint_dir": str(ckpt_dir), "val_held_out": held_out}
                     | ({"extended_from": extends} if extends else {}) | (extra_tags or {}))
        earlier = run_id or extends  # the run whose steps this one goes on from, if any
        before = tracking.find_run(earlier, tracking_uri) if earlier else None
        earlier_code = before.data.tags.get(LEARNING_CODE_TAG) if before else None
        if code := learning_code_tag(earlier_code, continued=bool(earlier)):
            run.set_tags({LEARNING_CODE_TAG: code})
        if run_id is None:
            run.log_params(logged_params(cfg))
            run.log_text(cfg.to_json(), "config.json")
            if extends:
                tracking.copy_history(extends, run.run_id, uri=tracking_uri)
        else:  # the same run goes on: MLflow params cannot change, so say what did, and what is now out of date
            _mark_continued(run, before, cfg)
        try:
            with _sigterm_as_interrupt():
                state = trainer.fit(resume=resume)
        except KeyboardInterrupt:
            path = trainer.save_checkpoint()
            with contextlib.suppress(tracking.TrackingError):  # the local copy is safe; the mirror is a bonus
                run.log_artifact(path, "checkpoints")
            print(f"\ninterrupted at step {trainer.state.step}; go on with --continue {run.run_id} "
                  f"(or --resume {path})", file=sys.stderr)
            raise
        except tracking.TrackingError:  # the store stayed down past the metric buffer: keep the progress
            trainer.save_checkpoint()
            raise
        ckpt = trainer.save_checkpoint(ckpt_dir / "final.pt")
        run.log_artifact(ckpt, "checkpoints")
        # the last validation (at the final step) logged the images already
        log_pictures(model, dataset, run, trainer, images=evaluator is None, files=True)
        final = state.history[-1][1] if state.history else {}
        summary = {"run_id": run.run_id, "checkpoint": str(ckpt), "steps": state.step, "wall_time_s": trainer.wall_time,
                   "sequences_per_s": (state.step - trainer.start_step) * cfg.train.batch_size
                   / max(trainer.wall_time, 1e-9),
                   "final_terms": final, "precision": trainer.precision, "device": str(trainer.device),
                   "train_time_s": state.train_time_s,
                   "final_val": state.val_history[-1][1] if state.val_history else {}}
        run.log_metrics({"sys/wall_time_s": trainer.wall_time, "sys/train_time_s": state.train_time_s,
                         "sys/sequences_per_s": summary["sequences_per_s"]}, state.step)
        run.log_text(json.dumps(summary, indent=2), "summary.json")
    return summary


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A `kill` (SIGTERM) saves a checkpoint like Ctrl-C does, instead of losing the run's progress."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# figure key -> (capabilities that make it, how it is drawn); one place for every run's pictures
FIGURES = {
    "reconstruction": ({"encode"}, visuals.reconstruction_grid),
    "swap": ({"swap"}, visuals.swap_grid),
    "samples": ({"sample", "generate"}, lambda model, x, path: visuals.sample_grid(model, x.shape[1], path)),
}


def log_pictures(model, dataset, run, trainer, images: bool = True, files: bool = False) -> None:
    """Reconstruction, swap and prior-sample grids of test-time behaviour (eval mode, fp32): `images` as MLflow
    images under their key at this step (comparable across runs and steps), `files` as `figures/` artifacts."""
    was_training = model.training
    model.eval()
    x = dataset.batch(torch.arange(min(8, len(dataset))))["x"].to(trainer.device)
    cuda = [trainer.device] if trainer.device.type == "cuda" else []
    # the same prior draws at every step (samples comparable along training), and training's RNG untouched
    with tempfile.TemporaryDirectory() as d, torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        for key, (needs, draw) in FIGURES.items():
            if needs & model.capabilities:
                path = draw(model, x, Path(d) / f"{key}.png")
                if images:
                    run.log_image(path, key, trainer.state.step)
                if files:
                    run.log_artifact(path, "figures")
    model.train(was_training)


def bench(cfg: RunConfig, steps: int = 6, warmup: int = 2, dataset=None, roof: dict | None = None,
          profile_ops: int = 0) -> dict:
    """Training throughput (sequences/s at the configured batch), FLOP/s and its fraction of the device's
    GEMM roofline (`roof`, measured now when not given), peak RSS, parameters; `profile_ops` > 0 adds the
    step's top operators. `dataset`: the test split already loaded (a suite benches several models on one load)."""
    if dataset is None:
        dataset = load_dataset(cfg.data.name, "test", cfg.profile, cfg.data.data_dir, cfg.data.options)
    seed_everything(cfg.seed)
    model = build_model(cfg, dataset.info)
    cfg.train.max_steps, cfg.train.checkpoint_every = 10**9, 0
    trainer = Trainer(model, dataset, cfg, progress=False)
    roof = roof or roofline.roofline(trainer.device)
    batch = next(trainer.batches.epoch(0))
    for _ in range(warmup):
        trainer.step_fn(batch)
    with roofline.flop_counter() as fc:
        trainer._step(batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step_fn(batch)
    roofline._sync(trainer.device)
    dt = (time.perf_counter() - t0) / steps
    row = {"what": "train step", **_bench_row(cfg, dataset, model, trainer, fc.get_total_flops(), dt, roof)}
    if profile_ops:
        row["top_ops"] = roofline.top_ops(lambda: [trainer.step_fn(batch) for _ in range(steps)], trainer.device,
                                          profile_ops)
    return row


def _bench_row(cfg, dataset, model, trainer, flops: float, dt: float, roof: dict) -> dict:
    import resource
    peak = roof.get(trainer.precision) or roof["fp32"]
    return {"model": cfg.model.name, "dataset": cfg.data.name, "profile": cfg.profile, "precision": trainer.precision,
            "device": str(trainer.device), "threads": torch.get_num_threads(), "batch_size": cfg.train.batch_size,
            "image_size": dataset.info.size, "parameters": sum(p.numel() for p in model.parameters()),
            "sequences_per_s": cfg.train.batch_size / dt, "step_s": dt,
            "gflop_per_sequence": flops / cfg.train.batch_size / 1e9, "achieved_gflops": flops / dt / 1e9,
            "roofline_gflops": peak, "fraction_of_roofline": flops / dt / 1e9 / peak,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_eval(cfg: RunConfig, dataset=None, roof: dict | None = None, passes: int = 3,
               max_sequences: int | None = None, profile_ops: int = 0) -> dict:
    """The evaluation of `evaluate` (protocol sides × passes, the judge on reconstructions, speaker
    verification) timed on the test split: wall seconds, sequences/s, FLOP/s and its roofline fraction.
    Speed does not depend on what the weights are, so the model and the judge (the judge's architecture at
    the profile's settings) are untrained here: nothing is trained or read from a cache.
    `max_sequences`: None = the profile's cap, 0 = the whole split."""
    from benchmark.judges import judge_config
    from benchmark.profiles import get_profile
    from metrics.protocols import PROTOCOLS
    from models.judge import Judge
    if dataset is None:
        dataset = load_dataset(cfg.data.name, "test", cfg.profile, cfg.data.data_dir, cfg.data.options)
    seed_everything(cfg.seed)
    model = build_model(cfg, dataset.info)
    trainer = Trainer(model, dataset, cfg, progress=False)  # the device, precision and memory format of training
    model.eval()
    judge = None
    if cfg.data.name in PROTOCOLS:
        jc = judge_config(cfg.profile, cfg.data.name)
        judge = Judge(dataset.info, jc.model.width, jc.model.hidden, jc.model.feat_dim).to(trainer.device).eval()
    roof = roof or roofline.roofline(trainer.device)
    if max_sequences is None:
        max_sequences = get_profile(cfg.profile).eval.get("max_sequences")
    # the protocol's network passes (what the FLOP count covers); the probes' CPU fitting is timed by `eval`
    run = lambda: protocol_metrics(model, judge, dataset, passes, 0, max_sequences, probes=False)  # noqa: E731
    with roofline.flop_counter() as fc:
        out = run()
    t0 = time.perf_counter()
    run()
    roofline._sync(trainer.device)
    dt = time.perf_counter() - t0
    n = out.get("n_sequences", len(dataset))
    row = _bench_row(cfg, dataset, model, trainer, fc.get_total_flops(), dt, roof)
    row.update({"what": f"eval ({passes} passes)", "batch_size": n, "sequences_per_s": n / dt, "step_s": dt,
                "gflop_per_sequence": fc.get_total_flops() / n / 1e9, "eval_wall_s": dt})
    if profile_ops:
        row["top_ops"] = roofline.top_ops(run, trainer.device, profile_ops)
    return {"what": row.pop("what"), **row}


def bench_suite(models, datasets, config, steps: int = 6, warmup: int = 2, out: str | None = None,
                command: str = "", evaluation: bool = False, profile_ops: int = 0,
                max_sequences: int | None = None) -> dict:
    """`bench` (and with `evaluation`, `bench_eval`) over models × datasets (pairs whose data kind the model
    is not built for are skipped); `config(model, dataset)` -> RunConfig. The roofline is measured once,
    first, in this process. Writes `out` (.json) and its .md twin with provenance."""
    from benchmark.tables import hardware
    rows = []
    first = config(models[0], datasets[0])
    roof = roofline.roofline(select_device(first.train.device))
    print(f"roofline: {', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in roof.items() if v)}", file=sys.stderr, flush=True)
    for d in datasets:
        first = config(models[0], d)
        test = load_dataset(d, "test", first.profile, first.data.data_dir, first.data.options)
        for m in models:
            if test.info.kind not in getattr(MODELS.get(m).builder, "kinds", {test.info.kind}):
                continue
            r = bench(config(m, d), steps=steps, warmup=warmup, dataset=test, roof=roof, profile_ops=profile_ops)
            rows.append(r)
            if evaluation:
                rows.append(bench_eval(config(m, d), dataset=test, roof=roof, max_sequences=max_sequences,
                                       profile_ops=profile_ops))
            for r in rows[-1 - evaluation:]:
                print(f"bench {m}/{d} {r['what']}: {r['sequences_per_s']:.2f} seq/s, "
                      f"{100 * r['fraction_of_roofline']:.0f} % of the roofline", file=sys.stderr, flush=True)
    cols = ("model", "dataset", "what", "profile", "precision", "batch_size", "image_size", "parameters",
            "sequences_per_s", "step_s", "gflop_per_sequence", "achieved_gflops", "roofline_gflops",
            "fraction_of_roofline", "peak_rss_mib")
    md = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"] + [
        "| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |" for r in rows]
    for r in rows:
        if r.get("top_ops"):
            md += ["", roofline.ops_markdown(r["top_ops"], f"### {r['model']}/{r['dataset']}, {r['what']}: "
                                                             f"top operators by self time")]
    result = {"rows": rows, "roofline": roof, "markdown": "\n".join(md)}
    if out:
        prov = {"command": command, "steps": steps, "warmup": warmup, **tracking.git_info(), "hardware": hardware(),
                "roofline_gflops": roof, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"provenance": prov, "rows": rows}, indent=2))
        Path(out).with_suffix(".md").write_text(
            f"# Throughput (`bench`)\n\nCommand: `{command}` at commit {prov['git_commit'][:10]} "
            f"(dirty: {prov['git_dirty']}), {prov['date']}; {steps} timed steps after {warmup} warm-up steps; "
            f"an eval row is one whole evaluation (its batch_size is the sequences scored). "
            f"`fraction_of_roofline` = achieved GFLOP/s over this process's best "
            f"{'/'.join(k for k, v in roof.items() if v)} GEMM ({', '.join(f'{k} {v:.1f}' for k, v in roof.items() if v)}"
            f" GFLOP/s, `torch.mm` 2048², same threads) at the row's precision. Peak RSS is the process's so far "
            f"(monotone over the rows). Hardware: {prov['hardware']}.\n\n" + result["markdown"] + "\n")
    return result


def model_table() -> list[dict]:
    rows = []
    for name, entry in MODELS.items():
        caps = sorted(getattr(entry.builder, "capabilities", ()))
        rows.append({"name": name, "capabilities": ",".join(caps), "fixes": entry.defaults, "doc": entry.doc})
    return rows


RESUMABLE = ("final.pt", "last.pt")  # the checkpoints a run goes on from, locally and as `checkpoints/` artifacts


def local_checkpoints(run) -> list[Path]:
    """The run's RESUMABLE files present in its checkpoint_dir on this machine."""
    local = Path(run.data.tags.get("checkpoint_dir", "-"))
    return [local / n for n in RESUMABLE if (local / n).is_file()]


def resume_point(run, tracking_uri: str | None = None) -> str | None:
    """The checkpoint a run goes on from: the furthest along of final.pt / last.pt in its checkpoint_dir, else of
    their copies in its MLflow artifacts (where the store is remote they outlive this machine's disk), else None."""
    from benchmark.trainer import furthest_checkpoint
    found = local_checkpoints(run)
    if not found:
        for name in RESUMABLE:
            with contextlib.suppress(Exception):  # absent artifact: the store's error type varies by backend
                found.append(Path(tracking.download_artifact(run.info.run_id, f"checkpoints/{name}", tracking_uri)))
    return str(furthest_checkpoint(found, "--continue")) if found else None


def has_checkpoint(client, run) -> bool:
    """Whether a run has a checkpoint to go on from (`resume_point`'s places, without fetching it)."""
    if local_checkpoints(run):
        return True
    try:
        names = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "checkpoints")}
    except Exception:  # noqa: BLE001 - an unreadable artifact store: nothing to resume from here
        return False
    return bool(names & set(RESUMABLE))


def extension_point(cfg: RunConfig, dataset, tracking_uri: str | None = None) -> tuple | None:
    """(run, steps) of the finished run that a run of `cfg` on `dataset` can go on from instead of starting at
    step 0 — the same config, data and code but a smaller `train.max_steps` (known by recomputing the
    fingerprint it would have had), under a schedule that does not depend on the budget
    (`BUDGET_FREE_SCHEDULES`), with a checkpoint — the one with the most steps; None when there is none.
    Raising a budget then costs only the added steps, and the result is the one training from 0 would give."""
    import dataclasses
    from benchmark.trainer import BUDGET_FREE_SCHEDULES, step_budget
    if cfg.train.lr_schedule not in BUDGET_FREE_SCHEDULES:
        return None
    per_epoch = len(dataset) // cfg.train.batch_size
    budget = step_budget(cfg.train, per_epoch)
    same = {"kind": "train", "model": cfg.model.name, "dataset": cfg.data.name, "seed": cfg.seed,
            "profile": cfg.profile, "dataset_fingerprint": dataset.fingerprint}
    runs = tracking.search_runs(" and ".join(f"tags.{k} = '{v}'" for k, v in same.items())
                                + " and attributes.status = 'FINISHED'", tracking_uri)
    client, found = tracking.get_client(tracking_uri), []
    for run in runs:
        b = run.data.params.get("train.max_steps", "")
        if not b.isdigit() or int(b) == 0:
            continue
        shorter = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=int(b)))
        steps = step_budget(shorter.train, per_epoch)
        if (steps < budget and run_fingerprint(shorter, dataset.fingerprint) == run.data.tags.get("fingerprint")
                and has_checkpoint(client, run)):
            found.append((run, steps))
    return max(found, key=lambda f: f[1], default=None)


def load_checkpoint(run_id: str | None = None, checkpoint: str | None = None, tracking_uri: str | None = None):
    """(payload, path) of a run's final checkpoint (local copy, else its MLflow artifact) or of a file."""
    if (run_id is None) == (checkpoint is None):
        raise ValueError("eval: give exactly one of --run RUN_ID or --checkpoint PATH")
    if run_id:
        run = tracking.find_run(run_id, tracking_uri)
        path = Path(run.data.tags.get("checkpoint_dir", "")) / "final.pt"
        if not path.is_file():
            try:
                path = Path(tracking.download_artifact(run_id, "checkpoints/final.pt", tracking_uri))
            except Exception as e:  # noqa: BLE001 - any store error means the same thing to the user
                raise FileNotFoundError(f"--run {run_id}: no final checkpoint locally ({path}) or as an artifact "
                                        f"({type(e).__name__}); was the run finished?") from None
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint {path}: no such file")
    from benchmark.safeload import load_data
    payload = load_data(path, "--checkpoint" if checkpoint else f"--run {run_id}:")
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"{path}: not a checkpoint written by this harness")
    return payload, path


def restore(payload: dict, split: str = "test"):
    """(config, that split of its dataset, the model with the checkpoint's weights in eval mode) of a checkpoint
    payload (`load_checkpoint`)."""
    cfg = RunConfig.from_dict(payload["config"])
    data = load_dataset(cfg.data.name, split, cfg.profile, cfg.data.data_dir, cfg.data.options)
    model = build_model(cfg, data.info)
    model.load_state_dict(payload["model"])
    return cfg, data, model.eval()


def evaluate(run_id: str | None = None, checkpoint: str | None = None, tracking_uri: str | None = None,
             passes: int = 3, seed: int = 0, device: str = "auto", progress: bool = True,
             max_sequences: int | None = None) -> dict:
    """The protocols of the run's dataset on its test split; metrics, judge accuracy, swap GIF and
    sample grid are logged to the evaluated run (a new eval run for a bare checkpoint).
    `max_sequences`: None = the run's profile's cap, 0 = the whole split, N = a fixed subset of N."""
    from benchmark.profiles import get_profile
    from benchmark.judges import get_judge
    from metrics.protocols import PROTOCOLS
    tracking.health_check(tracking.resolve_uri(tracking_uri))
    payload, path = load_checkpoint(run_id, checkpoint, tracking_uri)
    cfg, test, model = restore(payload)
    dev = select_device(device)
    model.to(dev)
    if test.info.kind == "video":  # the memory format training uses: its convs are faster (bench --eval)
        channels_last(model)
    judge = judge_report = None
    if cfg.data.name in PROTOCOLS:  # speech is scored by EER, with no judge
        judge, judge_report = get_judge(cfg.data.name, cfg.profile, cfg.data.data_dir, options=cfg.data.options,
                                        tracking_uri=tracking_uri, progress=progress, device=device)
        judge.to(dev)
    t0 = time.perf_counter()
    if max_sequences is None:
        max_sequences = get_profile(cfg.profile).eval.get("max_sequences")
    result = {"dataset": cfg.data.name, "model": cfg.model.name, "profile": cfg.profile, "checkpoint": str(path),
              "judge": judge_report, "passes": passes, "seed": seed, "max_sequences": max_sequences}
    # with, for encoders, the judge on the model's own reconstructions: did it learn? (the protocol's ceiling)
    result.update(protocol_metrics(model, judge, test, passes, seed, max_sequences))
    result["eval_wall_time_s"] = time.perf_counter() - t0
    trained_in = None if run_id else payload.get("run_id")  # a bare checkpoint names the run that wrote it
    if trained_in:
        try:
            run_id = tracking.find_run(trained_in, tracking_uri).info.run_id
        except tracking.TrackingError:  # written in another store or machine: results go to an eval run here
            print(f"note: {path} was written by run {trained_in}, which is not in {tracking.resolve_uri(tracking_uri)};"
                  " the results go to a new eval run", file=sys.stderr)
    ctx = (tracking.open_run(run_id, tracking_uri) if run_id else None)
    if ctx is None:
        tags = run_tags(cfg, test, dev) | {"kind": "eval", "checkpoint": str(path)} | (
            {"trained_in_run": trained_in} if trained_in else {})
        with tracking.start_run(f"eval-{cfg.model.name}-{cfg.data.name}", uri=tracking_uri, tags=tags) as ctx:
            _log_eval(ctx, model, test, result, judge_report)
    else:
        _log_eval(ctx, model, test, result, judge_report)
    result["run_id"] = ctx.run_id
    return result


def protocol_subset(n: int, max_sequences: int | None) -> torch.Tensor:
    """Indices of the sequences the fix/resample protocol scores: all of them, or a fixed random subset
    (seed 0, sorted) so that every model and training seed is judged on the same sequences."""
    if not max_sequences or max_sequences >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_sequences].sort().values


def protocol_batches(dataset, max_sequences: int | None, device, batch_size: int = 256) -> list[dict]:
    """The scored subset (`protocol_subset`) in batches on `device`; every scorer reads these same batches."""
    idx = protocol_subset(len(dataset), max_sequences)
    return [{k: v.to(device) for k, v in dataset.batch(idx[i:i + batch_size]).items()}
            for i in range(0, len(idx), batch_size)]


# the judge's probabilities on real sequences, per (judge, split, subset): the same at every evaluation
# of every model on that split, so a table or a training run's val curve computes them once
_REAL_PROBS: dict[tuple, list[dict]] = {}


def real_probs(judge, dataset, batches: list[dict], max_sequences: int | None) -> list[dict]:
    fp = getattr(judge, "fingerprint", None)  # a judge without one (untrained, in a test) is not cached
    key = (fp, dataset.fingerprint, dataset.split, len(dataset), max_sequences, len(batches),
           str(batches[0]["x"].device))
    if fp is not None and key in _REAL_PROBS:
        return _REAL_PROBS[key]
    with torch.inference_mode():
        probs = [judge.probs(b["x"]) for b in batches]
    if fp is not None:
        if len(_REAL_PROBS) >= 16:  # a sweep or table touches a few splits; never grow without bound
            _REAL_PROBS.pop(next(iter(_REAL_PROBS)))
        _REAL_PROBS[key] = probs
    return probs


@torch.inference_mode()
def protocol_metrics(model, judge, dataset, passes: int = 3, seed: int = 0, max_sequences: int | None = None,
                     probes: bool = True) -> dict:
    """{"metrics": ..., "passes": ...}: the fix/resample protocol of the dataset (when it has one; on at most
    `max_sequences` of the split), the judge on the posterior reconstructions of the same sequences
    (encoders only; `diagnose.reconstruction_report`), linear probes of every label family from z_f and
    z_{1:T} (encoders on `PROBED` datasets; `metrics.probes.probe_report`) and speaker verification (when items
    carry utterance ids; every utterance), on the model's device. The posterior and the judge's pass over the
    real sequences are computed once and shared by every side, pass and report. `probes=False`: without the
    probes (learning curves: ~1 s of probe fitting per validation, and faces' val split is too small for them)."""
    from benchmark.diagnose import reconstruction_report
    from metrics.probes import probe_report
    from metrics.protocols import PROBED, PROTOCOLS, fix_resample_protocol, speaker_verification
    dev = next(model.parameters()).device
    out: dict = {"metrics": {}}
    encodes = "encode" in model.capabilities
    batches = posteriors = real = None
    if dataset.info.name in PROTOCOLS or encodes:
        batches = protocol_batches(dataset, max_sequences, dev)
        posteriors = [model.encode(b["x"], sample=False) for b in batches] if encodes else None
        real = real_probs(judge.to(dev), dataset, batches, max_sequences) if judge is not None else None
    if dataset.info.name in PROTOCOLS:
        out["n_sequences"] = sum(len(b["x"]) for b in batches)
        out.update(fix_resample_protocol(model, judge, batches, PROTOCOLS[dataset.info.name], passes, seed,
                                         real=real, posteriors=posteriors))
    if encodes:
        out["metrics"].update(reconstruction_report(model, judge, dataset, max_sequences, batches, posteriors, real))
    if probes and encodes and dataset.info.name in PROBED:  # factor x latent probe accuracies and leakage, same sequences
        info = dataset.info
        out["metrics"].update(probe_report(posteriors, batches, info.static_labels, info.dynamic_labels))
    if encodes and "utterance" in dataset.tensors:
        t = dataset.tensors
        out["metrics"].update(speaker_verification(model, t["x"].to(dev), t["utterance"], t["static"][:, 0]))
    return out


def _log_eval(run, model, test, result, judge_report) -> None:
    step = 0
    metrics = result.get("metrics", {})
    run.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step)
    run.delete_tag(tracking.EVAL_STALE_TAG)  # these eval/ metrics are of the weights as they are now
    if test.info.name in LEARNING_FLOORS and any(k.startswith("recon_acc_") for k in metrics):
        # visible in the MLflow UI as a column: a run whose decoder cannot draw a factor has no protocol result
        short = below_floors([{"dataset": test.info.name, "model": None, **metrics}])
        run.set_tags({"below_learning_floor": ", ".join(shortfall(s, floor=False) for s in short) or "no"})
        if short:
            print(f"warning: not learned ({test.info.name}): the judge reads the model's test reconstructions below "
                  f"the learning floor: {', '.join(map(shortfall, short))}", file=sys.stderr)
    if "n_sequences" in result:
        run.set_tags({"eval_sequences": result["n_sequences"]})
    if judge_report:
        from benchmark.judges import judge_warning, weak_heads
        run.log_metrics({f"eval/judge_acc_{k}": v for k, v in judge_report["test_accuracy"].items()}, step)
        run.set_tags({"judge_fingerprint": judge_report["fingerprint"], "judge_run_id": judge_report["run_id"],
                      "judge_below_floor": ",".join(weak_heads(judge_report["test_accuracy"])) or "no"})
        warning = judge_warning(test.info.name, judge_report["test_accuracy"])
        if warning:
            print(warning, file=sys.stderr)
    run.flush()
    run.log_text(json.dumps(result, indent=2, default=str), "eval/protocols.json")
    dev = next(model.parameters()).device
    x = test.batch(torch.arange(min(8, len(test))))["x"].to(dev)
    with tempfile.TemporaryDirectory() as d:
        if {"sample", "generate"} & model.capabilities:
            run.log_artifact(visuals.sample_grid(model, x.shape[1], Path(d) / "samples.png"), "eval")
        if "swap" in model.capabilities and model.info.kind == "video":
            run.log_artifact(visuals.swap_gif(model, x, Path(d) / "swap.gif"), "eval")
