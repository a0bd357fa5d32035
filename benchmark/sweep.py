"""Optuna sweeps (`python -m benchmark sweep`): one study in RDB storage, shared by W local worker
processes and by the same command run on other machines; one nested MLflow run per trial.

The search space, objective metric, direction, sampler and pruner are declared in
experiments/sweeps/; this module only executes them. `--trials` is the study-wide number of
finished (COMPLETE or PRUNED) trials. A worker that dies stops heart-beating: the next worker to
look marks its trial FAIL and queues a retry with the same parameters.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import tracking

DEFAULT_STORAGE = "sqlite:///optuna.db"
PAPER_LAMBDAS = {"loss.lambda_scc": 1000.0, "loss.lambda_dfp": 100.0, "loss.lambda_mi": 1.0}


try:  # heartbeats, retries and the matplotlib plots are "experimental" in Optuna's terms; say it once in docs
    from optuna.exceptions import ExperimentalWarning
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
except ImportError:  # pragma: no cover
    pass


class SweepError(RuntimeError):
    pass


@dataclass
class SweepSpec:
    """Everything a worker needs (picklable: workers are spawned processes)."""
    space: str
    dataset: str
    trials: int
    profile: str = "cpu"
    storage: str = DEFAULT_STORAGE
    study: str | None = None
    tracking_uri: str | None = None
    seed: int = 0
    overrides: dict = field(default_factory=dict)
    data_dir: str | None = None
    passes: int = 3
    heartbeat_s: int = 10      # a trial's worker writes a heartbeat this often ...
    grace_s: int = 60          # ... and is declared dead after this long without one
    max_retry: int = 2
    ckpt_root: str = "checkpoints"
    progress: bool = True
    threads: int = 0           # torch threads per worker (0: cores / workers)
    gpus: list | None = None   # one GPU per worker: worker w sees gpus[w % len(gpus)] (CUDA_VISIBLE_DEVICES)

    def __post_init__(self):
        self.study = self.study or f"{self.space}-{self.dataset}-{self.profile}"
        self.storage = absolute_sqlite(self.storage)
        self.tracking_uri = tracking.resolve_uri(self.tracking_uri)
        if self.trials < 1:
            raise ValueError(f"--trials {self.trials}: expected a positive number of trials")


def absolute_sqlite(url: str) -> str:
    """sqlite:///relative.db as an absolute path, so every worker opens the same file."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    return url


def get_space(name: str):
    from experiments.sweeps import load_spaces
    return load_spaces().get(name).builder


def make_storage(spec: SweepSpec):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    # SQLite: wait for the other writers' locks instead of failing with "database is locked"
    engine = {"connect_args": {"timeout": 120}} if spec.storage.startswith("sqlite") else {"pool_pre_ping": True}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry)
    uri = spec.tracking_uri

    def on_dead_trial(study, trial):
        _close_dead_trial_run(study, trial, uri)
        retry(study, trial)
    try:  # a fresh storage's schema: one process at a time on this machine, retried against other machines
        return tracking.initialising(spec.storage, "open the Optuna storage", lambda: RDBStorage(
            spec.storage, engine_kwargs=engine, heartbeat_interval=spec.heartbeat_s, grace_period=spec.grace_s,
            heartbeat_stale_trial_callback=on_dead_trial))
    except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, a dead server: one clear message
        raise SweepError(f"--storage {spec.storage}: cannot open the Optuna storage ({type(e).__name__}: {e}); "
                         "expected an SQLAlchemy URL such as sqlite:///optuna.db or "
                         "postgresql://user:pass@host/db") from None


def _close_dead_trial_run(study, trial, uri) -> None:
    """The MLflow run of a trial whose worker died stays RUNNING forever unless someone ends it."""
    tracking.close_running_runs(f"tags.study = '{study.study_name}' and tags.optuna_trial_id = '{trial._trial_id}'",
                                uri, "worker died (no Optuna heartbeat); trial retried", {"optuna_state": "FAIL"},
                                experiment=tracking.SWEEP_EXPERIMENT)


class _ValReport:
    """Trainer hook: after every epoch, the val scores of `train.eval_every` (the same Validator, the same
    `val/...` names) -> the objective metric to trial.report, prune."""

    def __init__(self, trial, validator, metric: str):
        self.trial, self.validator, self.metric = trial, validator, metric
        self.values: list[float] = []
        self.run_id = None

    def __call__(self, trainer) -> None:
        import optuna
        self.run_id = trainer.tracker.run_id
        metrics = trainer.validate(self.validator)
        if self.metric not in metrics:
            raise SweepError(f"objective metric {self.metric!r} not produced on {self.validator.val.info.name}/val; "
                             f"it gives {sorted(metrics)}")
        value, epoch = float(metrics[self.metric]), trainer.state.epoch
        self.values.append(value)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: val {self.metric} {value:.3f} below the pruner's threshold")


def study_overrides(data_dir: str | None, fixed: dict, overrides: dict, params: dict | None = None) -> dict:
    """A study's overrides of its profile, in precedence order: its real files, the space's fixed settings, the
    command's -o, a trial's parameters. One place, so trials, their scorer, the judge and the rerun agree."""
    return {**({"data.data_dir": data_dir} if data_dir else {}), **fixed, **overrides, **(params or {})}


def study_config(spec: SweepSpec, space, params: dict | None = None):
    from benchmark.config import resolve_config
    return resolve_config(space.model, spec.dataset, spec.profile, spec.seed,
                          study_overrides(spec.data_dir, space.fixed, spec.overrides, params))


class Objective:
    def __init__(self, spec: SweepSpec, space, parent_run_id: str):
        from benchmark.validation import make_validator
        self.spec, self.space, self.parent = spec, space, parent_run_id
        cfg = study_config(spec, space)  # the val split of the trials' own data (real files, -o data.*)
        # the objective is scored on the whole val split with the sweep's passes
        self.validator = make_validator(cfg, spec.tracking_uri, spec.progress, passes=spec.passes, max_sequences=0)

    def __call__(self, trial) -> float:
        import optuna

        from benchmark.api import train
        s = self.spec
        params = self.space.suggest(trial)
        # the hook scores every epoch on the whole val split; a second, step-wise curve would duplicate it
        cfg = study_config(s, self.space, {**params, "train.eval_every": 0})
        hook = _ValReport(trial, self.validator, self.space.metric)
        tags = {"kind": "trial", "study": s.study, "optuna_trial": trial.number, "optuna_trial_id": trial._trial_id,
                "space": self.space.name}
        client = tracking.get_client(s.tracking_uri)
        try:
            summary = train(cfg, tracking_uri=s.tracking_uri, progress=s.progress, ckpt_root=s.ckpt_root,
                            parent_run_id=self.parent, extra_tags=tags, hooks=[hook],
                            experiment=tracking.SWEEP_EXPERIMENT, run_name=trial_run_name(trial.number, params))
        except optuna.TrialPruned:
            if hook.run_id:  # stopped on purpose: a finished run, labelled as pruned
                client.set_tag(hook.run_id, "optuna_state", "PRUNED")
                client.set_terminated(hook.run_id, "FINISHED")
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            if hook.run_id:
                client.set_tag(hook.run_id, "optuna_state", "FAIL")
            raise
        trial.set_user_attr("mlflow_run_id", summary["run_id"])
        trial.set_user_attr("wall_time_s", summary["wall_time_s"])
        client.set_tag(summary["run_id"], "optuna_state", "COMPLETE")
        return hook.values[-1]


def trial_run_name(number: int, params: dict) -> str:
    """`trial-7 λ=(1000, 100, 1)`: what a trial tried, readable in the MLflow runs table."""
    if params and all(k.split(".")[-1].startswith("lambda_") for k in params):
        return f"trial-{number} λ=(" + ", ".join(f"{v:.4g}" for v in params.values()) + ")"
    return f"trial-{number} " + " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else
                                         f"{k.split('.')[-1]}={v}" for k, v in params.items())


def _counts(study) -> dict[str, int]:
    from collections import Counter
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def pin_gpu(spec: SweepSpec, worker: int) -> str | None:
    """This worker's GPU (`--gpus`), made its only visible device; before CUDA is first used in the process."""
    if not spec.gpus:
        return None
    gpu = str(spec.gpus[worker % len(spec.gpus)])
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def work(spec: SweepSpec, worker: int = 0) -> None:
    """One worker: run trials until the study holds `spec.trials` finished ones."""
    import optuna
    from optuna.storages import fail_stale_trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pin_gpu(spec, worker)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    space = get_space(spec.space)
    # distinct sampler streams per worker and machine, or parallel workers would propose the same points
    seed = spec.seed * 1000 + worker + zlib.crc32(socket.gethostname().encode()) % 997
    study = optuna.load_study(study_name=spec.study, storage=make_storage(spec), sampler=space.sampler(seed),
                              pruner=space.pruner())
    objective = Objective(spec, space, study.user_attrs["mlflow_parent_run_id"])
    while True:
        fail_stale_trials(study)
        n = _counts(study)
        done = n["COMPLETE"] + n["PRUNED"]
        if done >= spec.trials:
            return
        if n["FAIL"] > spec.trials * (spec.max_retry + 1):
            raise SweepError(f"study {spec.study}: {n['FAIL']} failed trials; see their 'error' user attributes "
                             "and MLflow runs")
        if n["WAITING"] or done + n["RUNNING"] < spec.trials:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        else:  # the remaining trials are running elsewhere; wait in case one of them dies
            time.sleep(min(spec.heartbeat_s, 5))


def _parent_run(study, spec: SweepSpec) -> str:
    """The study's parent MLflow run: created once, found again by every later worker or machine."""
    rid = study.user_attrs.get("mlflow_parent_run_id")
    if rid:
        try:
            tracking.find_run(rid, spec.tracking_uri)
            return rid
        except Exception:  # noqa: BLE001 - the study moved to another tracking store: make a new parent
            pass
    with tracking.start_run(f"sweep-{spec.study}", uri=spec.tracking_uri, experiment=tracking.SWEEP_EXPERIMENT,
                            tags={"kind": "sweep", "study": spec.study, "space": spec.space, "dataset": spec.dataset,
                                  "profile": spec.profile, "storage": spec.storage, **tracking.git_info()}) as run:
        run.log_params({"space": spec.space, "dataset": spec.dataset, "profile": spec.profile,
                        "trials": spec.trials, "seed": spec.seed})
        rid = run.run_id
    study.set_user_attr("mlflow_parent_run_id", rid)
    return rid


def open_study(spec: SweepSpec):
    """Create the study, or join it after checking it sweeps the same thing."""
    import optuna
    space = get_space(spec.space)
    if spec.dataset not in space.datasets:
        raise ValueError(f"--dataset {spec.dataset}: space {spec.space!r} is scored by the {space.metric!r} of a "
                         f"protocol; it supports {', '.join(space.datasets)}")
    study = optuna.create_study(study_name=spec.study, storage=make_storage(spec), direction=space.direction,
                                load_if_exists=True)
    if study.metric_names is None:  # optuna-dashboard then names the objective instead of "Objective 0"
        study.set_metric_names([f"val_{space.metric}"])
    want = {"space": spec.space, "dataset": spec.dataset, "profile": spec.profile, "model": space.model,
            "overrides": json.dumps(spec.overrides, sort_keys=True), "seed": spec.seed,
            "data_dir": spec.data_dir or ""}
    for k, v in want.items():
        have = study.user_attrs.get(k)
        if have is None:
            study.set_user_attr(k, v)
        elif have != v:
            raise ValueError(f"--study {spec.study}: the study in {spec.storage} has {k}={have!r}, this command "
                             f"{k}={v!r}; use another --study name")
    return study


def run_sweep(spec: SweepSpec, workers: int = 1, out: str | Path = "results/sweeps") -> dict:
    """Create or join the study, run `workers` local processes until it has `spec.trials` finished
    trials, then write its report. Returns the report summary."""
    from benchmark.judges import get_judge
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")
    tracking.health_check(spec.tracking_uri)
    t0 = time.perf_counter()
    study = open_study(spec)
    parent = _parent_run(study, spec)
    # the judge is trained once here, so that workers load it from the cache instead of racing to train it
    cfg = study_config(spec, get_space(spec.space))
    get_judge(spec.dataset, spec.profile, cfg.data.data_dir, options=cfg.data.options, tracking_uri=spec.tracking_uri,
              progress=spec.progress)
    if not spec.threads:
        spec.threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"[sweep] study {spec.study} in {spec.storage}: {workers} worker(s) until {spec.trials} finished trials; "
          f"MLflow parent run {parent}", file=sys.stderr)
    if workers == 1:
        work(spec, 0)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=work, args=(spec, w), name=f"sweep-worker-{w}") for w in range(workers)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        bad = [p.name for p in procs if p.exitcode]
        if bad:
            raise SweepError(f"study {spec.study}: worker(s) {', '.join(bad)} exited with an error; rerun the "
                             "same command to continue the study")
    summary = report_study(spec.study, spec.storage, out, spec.tracking_uri)
    summary["command_wall_time_s"] = time.perf_counter() - t0
    return summary


# ------------------------------------------------------------------------------------------ report
def _trained_config(run_id: str | None, tracking_uri: str | None):
    """The config a trial's MLflow run logged (`config.json`), or None where it has none to read."""
    from benchmark.config import RunConfig
    if not run_id:
        return None
    try:
        return RunConfig.from_dict(json.loads(Path(tracking.download_artifact(run_id, "config.json",
                                                                                tracking_uri)).read_text()))
    except Exception:  # noqa: BLE001 - a store without the run or its artifact: the config as resolved today
        return None


def report_study(study_name: str, storage: str = DEFAULT_STORAGE, out: str | Path = "results/sweeps",
                 tracking_uri: str | None = None) -> dict:
    """Optimisation history, parameter importances, λ-vs-metric figure, trial table, best config;
    as files under out/<study>/ and as artifacts of the study's parent MLflow run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import pandas as pd
    import seaborn as sns
    from optuna.trial import TrialState

    from benchmark.config import resolve_config
    storage = absolute_sqlite(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ValueError(f"--study {study_name}: no such study in {storage}; it holds {names or 'none'}") from None
    attrs = study.user_attrs
    space = get_space(attrs["space"])
    metric = space.metric
    out = Path(out) / study_name
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    rows = []
    for t in trials:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value if t.value is not None else last,
                     "epochs_reported": len(t.intermediate_values), **t.params,
                     "wall_time_s": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else None,
                     "mlflow_run_id": t.user_attrs.get("mlflow_run_id"), "error": t.user_attrs.get("error"),
                     "retry_of": optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)})
    df = pd.DataFrame(rows)
    df.to_csv(out / "trials.csv", index=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    files = [out / "trials.csv"]
    summary = {"study": study_name, "storage": storage, **attrs, "metric": f"{metric} (val split)",
               "direction": space.direction, "states": df["state"].value_counts().to_dict() if len(df) else {},
               "paper_lambdas": PAPER_LAMBDAS, "git": tracking.git_info()}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if starts and ends:
        summary["study_wall_time_s"] = (max(ends) - min(starts)).total_seconds()
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}
        # what the trial's config was resolved from (`Objective.__call__`): the space's fixed settings too
        overrides = study_overrides(attrs.get("data_dir"), space.fixed, json.loads(attrs.get("overrides", "{}")),
                                    {**best.params, "train.eval_every": 0})
        cfg = resolve_config(attrs["model"], attrs["dataset"], attrs["profile"], attrs.get("seed", 0), overrides)
        trained = _trained_config(best.user_attrs.get("mlflow_run_id"), tracking_uri)
        if trained is not None and trained.to_dict() != cfg.to_dict():
            # the profile (or a default) changed since the trial ran: keep what it trained, say the rerun differs
            summary["rerun_differs"] = ("the profile or a default changed since this trial trained: "
                                        "best_config.json is the config it trained under, the rerun command "
                                        "trains under today's")
            cfg = trained
        (out / "best_config.json").write_text(cfg.to_json())
        summary["rerun"] = (f"python -m benchmark train --model {attrs['model']} --dataset {attrs['dataset']} "
                            f"--profile {attrs['profile']} --seed {attrs.get('seed', 0)} "
                            + " ".join(f"-o {k}={v:.6g}" if isinstance(v, float) else f"-o {k}={v}" for k, v in overrides.items()))
        files.append(out / "best_config.json")
        fig = optuna.visualization.matplotlib.plot_optimization_history(study).get_figure()
        fig.savefig(out / "history.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(out / "history.png")
        if len(complete) >= 3:
            try:
                imp = optuna.importance.get_param_importances(study)
                summary["importances"] = imp
                fig = optuna.visualization.matplotlib.plot_param_importances(study).get_figure()
                fig.savefig(out / "importances.png", dpi=120, bbox_inches="tight")
                plt.close(fig)
                files.append(out / "importances.png")
            except (RuntimeError, ValueError) as e:  # e.g. every trial has the same value
                summary["importances"] = f"not computable: {e}"
    scored = df[df["value"].notna() & df["state"].isin(["COMPLETE", "PRUNED"])] if len(df) else df
    if len(scored):
        params = list(space.params)
        fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), sharey=True)
        for ax, p in zip(axes, params):
            sns.scatterplot(data=scored, x=p, y="value", hue="state", style="state", ax=ax, s=60,
                            hue_order=["COMPLETE", "PRUNED"], style_order=["COMPLETE", "PRUNED"])
            ax.set_xscale("log" if space.params[p].log else "linear")
            ax.axvline(PAPER_LAMBDAS.get(p, float("nan")), color="grey", ls="--", lw=1, label="paper")
            ax.set_xlabel(p)
            ax.set_ylabel(f"val {metric}")
        fig.suptitle(f"{study_name}: val {metric} per trial (pruned: last reported epoch); dashed = paper")
        fig.tight_layout()
        fig.savefig(out / "lambdas.png", dpi=120)
        plt.close(fig)
        files.append(out / "lambdas.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    files.append(out / "summary.json")
    _write_md(out / "summary.md", summary, df)
    files.append(out / "summary.md")
    parent = attrs.get("mlflow_parent_run_id")
    if parent:
        try:
            run = tracking.open_run(parent, tracking_uri)
            for f in files:
                run.log_artifact(f, "sweep")
            if "best" in summary:
                run.log_metrics({f"best_{metric}": summary["best"]["value"]}, 0)
                run.set_tags({f"best.{k}": f"{v:.6g}" for k, v in summary["best"]["params"].items()})
                _log_best_params(run, summary["best"])
            run.flush()
            tracking.get_client(tracking_uri).set_terminated(parent, "FINISHED")
        except Exception as e:  # noqa: BLE001 - the files are written; say why MLflow did not get them
            print(f"warning: sweep report not logged to MLflow run {parent}: {e}", file=sys.stderr)
    summary["files"] = [str(f) for f in files]
    return summary


def _log_best_params(run, best: dict) -> None:
    """The best trial's values as the parent's params (filterable and comparable in MLflow). Params cannot change:
    when a continued study finds a better trial, the `best.*` tags carry the new values and this says so."""
    try:
        run.log_params({f"best.{k}": f"{v:.6g}" for k, v in best["params"].items()} | {"best.trial": best["number"]})
    except Exception:  # noqa: BLE001 - MLflow refuses to overwrite a param
        print(f"note: the best trial is now {best['number']}; the parent run's best.* params keep the earlier best, "
              "its best.* tags the new one", file=sys.stderr)


def _write_md(path: Path, summary: dict, df) -> None:
    lines = [f"# Sweep `{summary['study']}`", "",
             f"space `{summary.get('space')}`, dataset `{summary.get('dataset')}`, profile `{summary.get('profile')}`, "
             f"objective: {summary['metric']} ({summary['direction']}); trials by state: {summary['states']}", ""]
    if "study_wall_time_s" in summary:
        lines.append(f"Study wall time: {summary['study_wall_time_s'] / 60:.1f} min.")
    if "best" in summary:
        b = summary["best"]
        lines += ["", f"Best: trial {b['number']}, {summary['metric']} = {b['value']:.2f}, "
                      + ", ".join(f"{k} = {v:.4g}" for k, v in b["params"].items())
                  + " (paper: " + ", ".join(f"{k} = {v:g}" for k, v in summary["paper_lambdas"].items()) + ")",
                  "", f"Rerun: `{summary['rerun']}`" + (f" ({summary['rerun_differs']})"
                                                        if summary.get("rerun_differs") else "")]
    if len(df):
        lines += ["", "| trial | state | value | " + " | ".join(c for c in df.columns if c.startswith("loss.")) + " |",
                  "|---" * (3 + sum(c.startswith("loss.") for c in df.columns)) + "|"]
        for _, r in df.sort_values("value", ascending=False, na_position="last").iterrows():
            vals = " | ".join(f"{r[c]:.4g}" for c in df.columns if c.startswith("loss."))
            value = "" if r["value"] is None or r["value"] != r["value"] else f"{r['value']:.2f}"
            lines.append(f"| {r['number']} | {r['state']} | {value} | {vals} |")
    path.write_text("\n".join(lines) + "\n")
