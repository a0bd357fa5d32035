"""`run --table N`: train what is missing, reuse what is finished, evaluate, write the table files.
`report --table N`: the same files rebuilt from MLflow alone."""
from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from benchmark import tracking
from benchmark.api import (RETRAIN_ONE_CELL, evaluate, extension_point, has_checkpoint, learning_code_drift,
                           logged_params, resume_point, run_fingerprint, train)
from benchmark.config import parse_overrides, resolve_config
from benchmark.data import load_dataset
from benchmark.profiles import get_profile
from benchmark.trainer import TrainingError, cpu_has_bf16_units, isa_caps, step_budget
from experiments import LEARNING_FLOORS, TableSpec, below_floors, floors_warning, tables

PAPER_CSV = Path(__file__).resolve().parent.parent / "experiments" / "paper_tables.csv"
PERCENT = ("acc", "acc_action", "acc_static", "acc_all_static", "acc_all", "eer_z_f", "eer_z_t")


# Extended tables: a paper table plus registered competitors the paper does not have, under their own id, so
# that `run --table 1x` writes results/table1x.* beside the paper's table1.* (whose model list stays the
# paper's) and reuses the cells the two share (same fingerprint). The paper column is the base table's.
EXTENDED = {"1x": (1, ("cdsvae",))}


def get_table(number: int | str) -> TableSpec:
    """The spec of table `number`: 1, 2, 3 (or "1"), or an extended id such as "1x"."""
    import dataclasses
    known = tables()
    key = int(number) if str(number).isdigit() else str(number)
    if key in EXTENDED:
        base, extra = EXTENDED[key]
        spec = known[base]
        return dataclasses.replace(spec, number=key, title=f"{spec.title} + {', '.join(extra)}",
                                   models=spec.models + tuple(m for m in extra if m not in spec.models))
    if key not in known:
        ids = [str(k) for k in sorted(known)] + list(EXTENDED)
        raise KeyError(f"unknown table {number}; known tables: {', '.join(ids)}")
    return known[key]


def table_jobs(spec: TableSpec, seeds: int, datasets=None, models=None) -> list[tuple[str, str, int]]:
    """(dataset, model, seed) for every cell; --datasets must be the table's, --models adds registered models."""
    from benchmark.zoo import MODELS
    allowed = spec.datasets + spec.optional_datasets
    for d in datasets or ():
        if d not in allowed:
            raise ValueError(f"--datasets {d}: table {spec.number} is defined on {', '.join(allowed)}")
    for m in models or ():
        MODELS.get(m)  # clear error for an unknown model
    ds = list(datasets or spec.datasets)
    ms = list(spec.models) + [m for m in models or () if m not in spec.models]
    return [(d, m, s) for d in ds for m in ms for s in range(seeds)]


REAL_DATA = ("data_dir.", "data_option.")  # prefixes of a table run's params naming its real files and options


def real_data(spec: TableSpec, datasets: list[str], data_dirs=None, data_options=None) -> tuple[dict, dict]:
    """`--data-dir DATASET=PATH` and `--data-option DATASET.KEY=VALUE` (each repeatable) of a table run on
    `datasets`, as (dataset -> dotted overrides, params). The overrides are the ones `train --data-dir PATH
    -o data.KEY=VALUE` resolves, so a cell's config (and the values' parsing) is the same as a lone run's;
    the params (`data_dir.sprites`, `data_option.speech.split`) record them on the table run and provenance."""
    overrides, params = {}, {}

    def add(flag, item, dataset, key, value, param):
        if dataset not in datasets:
            raise ValueError(f"{flag} {item}: {dataset!r} is not a dataset of this run; table {spec.number} runs on "
                             f"{', '.join(datasets)} here (--datasets chooses among "
                             f"{', '.join(spec.datasets + spec.optional_datasets)})")
        overrides.setdefault(dataset, {})[key] = value
        params[param] = value

    for dataset, path in parse_overrides(data_dirs, "--data-dir", "DATASET=PATH, e.g. sprites=/data/sprites").items():
        add("--data-dir", f"{dataset}={path}", dataset, "data.data_dir", path, f"{REAL_DATA[0]}{dataset}")
        if not Path(path).exists():  # before any cell: a typo should not cost a queue and a tracking run
            raise ValueError(f"--data-dir {dataset}={path}: {path} does not exist; expected the directory of "
                             f"the real {dataset} files")
    form = "DATASET.KEY=VALUE, e.g. speech.split=core"
    for name, value in parse_overrides(data_options, "--data-option", form).items():
        dataset, _, key = name.partition(".")
        if not key:
            raise ValueError(f"--data-option {name}={value}: expected {form}")
        # data.options.KEY: always the dataset's own setting (a bare data.KEY could name data.name/data_dir)
        add("--data-option", f"{name}={value}", dataset, f"data.options.{key}", value, f"{REAL_DATA[1]}{name}")
    return overrides, params


def _finished_eval(runs, metric):
    """Finished runs evaluated as they are now (not trained on since: `tracking.EVAL_STALE_TAG`)."""
    return [r for r in runs if r.info.status == "FINISHED" and f"eval/{metric}" in r.data.metrics
            and tracking.EVAL_STALE_TAG not in r.data.tags]


def cell_fingerprint(spec, dataset, model, seed, profile, loaded: dict | None = None) -> tuple:
    """(config, fingerprint) of a cell's run: what makes two processes agree that a cell is the same.
    `loaded`: a dict that keeps each training set loaded once across the cells of one call site."""
    cfg = resolve_config(model, dataset, profile, seed, overrides=spec.overrides(profile, dataset))
    return cfg, run_fingerprint(cfg, training_data(cfg, profile, loaded).fingerprint)


def training_data(cfg, profile, loaded: dict | None = None):
    """A run config's training split (from `loaded` when it holds it already)."""
    where = (cfg.data.name, cfg.train.split, cfg.data.data_dir, json.dumps(cfg.data.options, sort_keys=True))
    loaded = {} if loaded is None else loaded
    if where not in loaded:
        loaded[where] = load_dataset(cfg.data.name, cfg.train.split, profile, cfg.data.data_dir, cfg.data.options)
    return loaded[where]


def _warn_drift(run) -> None:
    """A run reused, evaluated, resumed or extended under other learning code is said out loud, not silently
    (once per sitting: `run_table` checks the cells' own runs, `run_job` the run a raised budget goes on from)."""
    if why := learning_code_drift(run):
        print(f"warning: {why}", file=sys.stderr)


def resumable(run) -> bool:
    """An unfinished run a sitting goes on from (when it has a checkpoint): interrupted (KILLED), still marked
    RUNNING (its process died), or FAILED for a reason another try can get past (a tracking outage, a full disk, a
    lost worker) — not a TrainingError (a non-finite loss or a bad setting fails the same way again)."""
    status = run.info.status
    return status in ("RUNNING", "KILLED") or (
        status == "FAILED" and not run.data.tags.get("error", "").startswith("TrainingError"))


def run_job(spec, dataset, model, seed, profile, parent_id, tracking_uri, force, passes, progress):
    """One (model, dataset, seed) cell: reuse a finished+evaluated run, evaluate a finished one,
    resume an interrupted one from its checkpoint, go on from a finished run of a smaller budget
    (`extension_point`), or train a new one."""
    loaded = {}
    cfg, fp = cell_fingerprint(spec, dataset, model, seed, profile, loaded)
    runs = tracking.search_runs(f"tags.fingerprint = '{fp}'", tracking_uri)
    done = _finished_eval(runs, spec.metrics[0])
    if done and not force:
        _mark_cell(done[0].info.run_id, spec.number, tracking_uri)
        return done[0].info.run_id, "reused"
    trained = [r for r in runs if r.info.status == "FINISHED"] if not force else []
    if trained:
        run_id, how = trained[0].info.run_id, "evaluated"
    else:
        interrupted = [(r, ckpt) for r in runs if resumable(r) and (ckpt := resume_point(r, tracking_uri))] \
            if not force else []
        shorter = None if force or interrupted else extension_point(cfg, training_data(cfg, profile, loaded),
                                                                     tracking_uri)
        go_on = resume_point(shorter[0], tracking_uri) if shorter else None  # None: unreadable now, train anew
        if interrupted:
            r, ckpt = interrupted[0]
            run_id = train(cfg, resume=ckpt, run_id=r.info.run_id, tracking_uri=tracking_uri,
                           progress=progress)["run_id"]
            how = "resumed"
        elif go_on:
            _warn_drift(shorter[0])
            run_id = train(cfg, resume=go_on, extends=shorter[0].info.run_id,
                           tracking_uri=tracking_uri, progress=progress, parent_run_id=parent_id,
                           extra_tags={"table": spec.number})["run_id"]
            how = "extended"
        else:
            run_id = train(cfg, tracking_uri=tracking_uri, progress=progress, parent_run_id=parent_id,
                           extra_tags={"table": spec.number})["run_id"]
            how = "trained"
    evaluate(run_id=run_id, tracking_uri=tracking_uri, passes=passes, seed=seed, progress=progress)
    _mark_cell(run_id, spec.number, tracking_uri)
    return run_id, how


def cell_tag(number) -> str:
    """The tag that marks a run as a cell of table `number`, whichever table trained it (tables share cells of
    the same fingerprint; the `table` tag names only the first): what `export-runs --table N` also carries."""
    return f"cell_of_table_{number}"


def _mark_cell(run_id: str, number, tracking_uri) -> None:
    tracking.get_client(tracking_uri).set_tag(run_id, cell_tag(number), "true")


def table_setup(number, profile, seeds, datasets=None, models=None, data_dirs=None, data_options=None,
                precision=None) -> tuple:
    """(spec, profile name, jobs, data params) of a table run: the spec with the real files' overrides and the
    pinned precision that every cell resolves (`spec.overrides`)."""
    import dataclasses
    spec = get_table(number)
    profile = get_profile(profile).name
    jobs = table_jobs(spec, seeds, datasets, models)
    data, data_params = real_data(spec, list(dict.fromkeys(d for d, _, _ in jobs)), data_dirs, data_options)
    spec = dataclasses.replace(spec, data=data, run={"train.precision": precision} if precision else {})
    return spec, profile, jobs, data_params


# what a training step costs depends on (beside the model and dataset tags and the precision a run resolved):
# runs that agree on these share a pace, whatever their seed, budget or loss weights
PACE_KEYS = ("model.width", "model.hidden", "model.feat_dim", "model.d_zf", "model.d_zt", "data.image_size",
             "data.frames", "data.segment", "train.batch_size", "train.compile", "train.device")


def _last_point(client, run_id: str, key: str) -> tuple[int, float] | None:
    """(step, value) of a metric's furthest logged step, or None."""
    return max(((m.step, m.value) for m in client.get_metric_history(run_id, key)), default=None)


def cell_run(runs, metric: str, client) -> tuple[str, object]:
    """(state, run) of a cell from its runs (same fingerprint), as a sitting takes them: `done` (finished and
    evaluated: reused), `evaluate` (finished), `started` (unfinished with a checkpoint: resumed), else
    ("train", None). One rule for `plan_table` and the sitting's learning-code check (`run_table`)."""
    if done := _finished_eval(runs, metric):
        return "done", done[0]
    if finished := [r for r in runs if r.info.status == "FINISHED"]:
        return "evaluate", finished[0]
    started = [r for r in runs if resumable(r) and has_checkpoint(client, r)]
    return ("started", started[0]) if started else ("train", None)


def run_pace(client, run) -> float | None:
    """Training seconds per step of a run (evaluation excluded): its final `sys/train_time_s`, else (unfinished)
    its latest `val/train_time_s`, over that step."""
    for key in ("sys/train_time_s", "val/train_time_s"):
        point = _last_point(client, run.info.run_id, key)
        if point and point[0] > 0:
            return point[1] / point[0]
    return None


def plan_table(number, profile: str = "cpu", seeds: int = 3, datasets=None, models=None,
               tracking_uri: str | None = None, data_dirs=None, data_options=None,
               precision: str | None = None) -> pd.DataFrame:
    """What `run --table N` with the same options would do now, without doing it: per cell, its state in the
    store (`done`: finished and evaluated, reused; `evaluate`: finished, not evaluated; `started`: unfinished
    with a checkpoint — interrupted, resumed by the next sitting, or running in another worker;
    `extend`: a finished run of a smaller budget to go on from, `extension_point`; `train`: new), its step
    budget, and the training minutes left at the pace (median s/step) of the store's finished runs of the same
    model, dataset, precision and `PACE_KEYS` (a started cell without them: its own pace so far). A cell with
    no pace has no estimate (NaN); evaluation time is not included."""
    spec, profile, jobs, _ = table_setup(number, profile, seeds, datasets, models, data_dirs, data_options,
                                         precision)
    uri = tracking.resolve_uri(tracking_uri)
    tracking.health_check(uri)
    client = tracking.get_client(uri)
    from benchmark.trainer import resolve_precision, select_device
    loaded, paces, rows = {}, {}, []
    for dataset, model, seed in jobs:
        cfg, fp = cell_fingerprint(spec, dataset, model, seed, profile, loaded)
        steps = step_budget(cfg.train, len(training_data(cfg, profile, loaded)) // cfg.train.batch_size)
        state, run = cell_run(tracking.search_runs(f"tags.fingerprint = '{fp}'", uri), spec.metrics[0], client)
        at = 0
        if state in ("done", "evaluate"):
            at = steps
        elif state == "started":
            at = (_last_point(client, run.info.run_id, "train/total") or (0, 0))[0]
        elif shorter := extension_point(cfg, training_data(cfg, profile, loaded), uri):
            (run, at), state = shorter, "extend"
        wanted = {k: str(v) for k, v in logged_params(cfg).items() if k in PACE_KEYS}
        key = (dataset, model, resolve_precision(cfg.train.precision, select_device(cfg.train.device)),
               tuple(sorted(wanted.items())))
        if key not in paces:
            same = tracking.search_runs(f"tags.dataset = '{dataset}' and tags.model = '{model}' and tags.precision = "
                                        f"'{key[2]}' and attributes.status = 'FINISHED'", uri)
            same = [r for r in same if all(r.data.params.get(k) == v for k, v in wanted.items())]
            measured = [p for p in (run_pace(client, r) for r in same) if p]
            paces[key] = (float(pd.Series(measured).median()) if measured else float("nan"), len(measured))
        pace, n = paces[key]
        source = f"{n} finished run{'s' * (n > 1)}" if n else ""
        if state == "started" and not n and (own := run_pace(client, run)):
            pace, source = own, "this run so far"
        rows.append({"dataset": dataset, "model": model, "seed": seed, "state": state,
                     "run_id": run.info.run_id if run else "", "steps": steps, "at_step": at,
                     "code_changed": bool(run and learning_code_drift(run)),
                     "s_per_step": pace, "pace_from": source, "minutes_left": max(steps - at, 0) * pace / 60})
    return pd.DataFrame(rows)


def format_plan(plan: pd.DataFrame, number) -> str:
    """The plan as markdown: a row per cell, then the cells per state and the training hours left."""
    lines = [f"# run --table {number}: {len(plan)} cells", "",
             "| dataset | model | seed | state | run | step / budget | s/step (runs) | min left |", "|---" * 8 + "|"]
    for r in plan.itertuples():
        pace = f"{r.s_per_step:.3f} ({r.pace_from})" if r.pace_from else "— (no finished run)"
        left = f"{r.minutes_left:.0f}" if pd.notna(r.minutes_left) else "?"
        lines.append(f"| {r.dataset} | {r.model} | {r.seed} | {r.state} | {r.run_id[:8]} | {r.at_step:,} / "
                     f"{r.steps:,} | {pace} | {left} |")
    states = plan.state.value_counts()
    todo = plan[plan.state.isin(["train", "started", "extend"])]
    unknown = int(todo.minutes_left.isna().sum())
    lines += ["", "cells: " + ", ".join(f"{states.get(s, 0)} {s}" for s in ("done", "evaluate", "started", "extend",
                                                                                 "train")),
              f"training left: {todo.minutes_left.sum() / 60:.1f} h at the store's measured paces"
              + (f", plus {unknown} cell(s) with no run of their config to time them" if unknown else "")
              + " (evaluation not included)"]
    if plan.code_changed.any():
        changed = plan[plan.code_changed]
        lines.append(f"learning code changed since {len(changed)} cell(s)' runs trained ("
                     + ", ".join(f"{r.dataset}/{r.model}/s{r.seed} {r.state} run {r.run_id[:8]}"
                                 for r in changed.itertuples())
                     + "): a function of `api._learning_code` differs from theirs. A done / evaluate cell is taken "
                     f"as it is, a started / extend one goes on from those steps under this code; {RETRAIN_ONE_CELL}")
    return "\n".join(lines)


def _progress(spec, parent, c: dict, cell=None) -> dict:
    """The queue's counts `c`, printed and set as the table parent run's tags (the MLflow view of progress)."""
    what = f"{cell.model} on {cell.dataset}, seed {cell.seed}: " if cell else ""
    print(f"[table {spec.number}] {what}cells done {c['done']}, running {c['running']}, queued {c['queued']} of "
          f"{c['total']}", file=sys.stderr, flush=True)
    parent.set_tags({"cells_done": c["done"], "cells_running": c["running"], "cells_queued": c["queued"]})
    return c


def work_cells(spec, queue, profile, parent, tracking_uri, force, passes, progress, poll_s: float = 5.0,
               stop_after_s: float | None = None) -> dict:
    """Claim and run cells until every cell of the queue is finished (by this or any other process);
    returns {cell key: how} for the cells this process ran. A cell that fails here is marked failed and the
    error raised; Ctrl-C / SIGTERM puts the cell back in the queue (its checkpoint is resumed).
    `stop_after_s`: claim no cell that would not end within that many seconds of the start at the pace of the
    cells this process trained so far (a sitting of fixed length ends between cells, none half-trained)."""
    mine, t0, waited, spent = {}, time.perf_counter(), False, []
    while True:
        if stop_after_s is not None and spent and \
                time.perf_counter() - t0 + sum(spent) / len(spent) > stop_after_s:
            print(f"[table {spec.number}] stopping: another cell (~{sum(spent) / len(spent) / 60:.0f} min) would end "
                  f"past --stop-after {stop_after_s / 60:.0f} min", file=sys.stderr, flush=True)
            return mine
        cell = queue.claim()
        if cell is None:
            if queue.finished():
                return mine
            if not waited:
                print(f"[table {spec.number}] waiting for {queue.counts()['running']} cell(s) that other workers "
                      f"are running", file=sys.stderr, flush=True)
            waited = True
            time.sleep(poll_s)
            continue
        waited = False
        c = _progress(spec, parent, queue.counts(), cell)
        if spent:  # cells this worker trained or evaluated; reused ones take no time and would hide the pace
            print(f"[table {spec.number}] ETA {sum(spent) / len(spent) * (c['queued'] + 1) / 60:.0f} min for the "
                  f"queue at this worker's pace ({len(spent)} cell(s) so far)", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            _, how = run_job(spec, cell.dataset, cell.model, cell.seed, profile, parent.run_id, tracking_uri,
                             force, passes, progress)
        except (KeyboardInterrupt, SystemExit):
            queue.release(ok=False, requeue=True)
            raise
        except BaseException:
            queue.release(ok=False)
            raise
        queue.release(ok=True)
        mine[cell.key] = how
        if how != "reused":
            spent.append(time.perf_counter() - started)


def _worker_argv(stores: list[str]) -> list[str]:
    """This command's arguments for a helper: without the launch options, with what this process resolved
    (`stores`: --tracking-uri X --queue Y --queue-name Z --profile P, so a helper started elsewhere opens the same
    stores and queue — under --force too, whose queue is new per command — and does not resolve `auto` on its own
    machine) and --worker."""
    drop = ("--workers", "--launcher", "--tracking-uri", "--queue", "--queue-name", "--profile", "--parent-run")
    args, out, skip = list(sys.argv[1:]), [], 0
    for a in args:
        if skip:
            skip -= 1
        elif a in drop:
            skip = 1
        elif not a.startswith(tuple(d + "=" for d in drop)):
            out.append(a)
    return out + stores + ["--worker"]


class _Processes:
    """Helpers as local processes: on CUDA each sees one GPU, on CPU the cores are split between all."""
    remote = False

    def __init__(self, n: int, gpus: list[str] | None, total: int, stores: list[str]):
        import os
        import subprocess
        threads = max(1, (os.cpu_count() or 1) // total)
        self.procs = []
        for w in range(1, n + 1):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
            self.procs.append(subprocess.Popen([sys.executable, "-m", "benchmark", *_worker_argv(stores)], env=env))

    def wait(self) -> list[int]:
        return [p.wait() for p in self.procs]


def _worker_main(argv: list[str]) -> int:
    """A helper's body where submitit runs it (a Slurm task, or a local process in tests)."""
    from benchmark.__main__ import main
    rc = main(argv)
    if rc:
        raise RuntimeError(f"table worker exited with {rc}")
    return rc


class _Submitit:
    """Helpers as one submitit array job (`slurm`: one task per worker, one GPU each; `local`: processes
    on this machine, how the tests run it). The launching process only waits and writes the table."""
    remote = True

    def __init__(self, n: int, gpus: list[str] | None, total: int, stores: list[str], cluster: str):
        try:
            import submitit
        except ImportError:
            raise ValueError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None
        ex = submitit.AutoExecutor(folder="submitit_logs/%j", cluster=cluster)
        if cluster == "slurm":
            ex.update_parameters(slurm_array_parallelism=n, gpus_per_node=1 if gpus else 0, timeout_min=24 * 60)
        self.jobs = ex.map_array(_worker_main, [_worker_argv(stores)] * n)
        print(f"[table] submitted {n} {cluster} worker(s): {', '.join(j.job_id for j in self.jobs)} "
              f"(logs in submitit_logs/)", file=sys.stderr, flush=True)

    def wait(self) -> list[int]:
        codes = []
        for j in self.jobs:
            try:
                j.result()
                codes.append(0)
            except Exception as e:  # noqa: BLE001 - a failed task: its cells go back to the queue
                print(f"warning: worker {j.job_id} failed: {str(e)[:300]}", file=sys.stderr)
                codes.append(1)
        return codes


# `--launcher`: how the helpers of `--workers N` run
LAUNCHERS = {"processes": _Processes,
             "slurm": lambda *a: _Submitit(*a, cluster="slurm"),
             "submitit-local": lambda *a: _Submitit(*a, cluster="local")}


def _watch(spec, queue, parent, poll_s: float = 10.0) -> None:
    """The launching process of remote workers: show the queue's progress until every cell is finished."""
    last = None
    while not queue.finished():
        queue.claim_stale()
        c = queue.counts()
        if c != last:
            last = _progress(spec, parent, c)
        time.sleep(poll_s)


def run_table(number: int, profile: str = "cpu", seeds: int = 3, datasets=None, models=None, out="results",
              tracking_uri: str | None = None, force: bool = False, passes: int = 3, progress: bool = True,
              queue_url: str | None = None, workers: int = 1, gpus: list[str] | None = None,
              worker_only: bool = False, heartbeat_s: int = 10, grace_s: int = 60,
              launcher: str = "processes", data_dirs: list[str] | None = None,
              data_options: list[str] | None = None, precision: str | None = None,
              stop_after_min: float | None = None, queue_name: str | None = None,
              parent_run_id: str | None = None) -> dict:
    """Train what is missing (cells claimed from a shared queue, so several processes or machines on one
    store split the work), reuse what is finished, evaluate, write the table files. `workers` > 1 starts
    that many processes here in all; `worker_only`: run cells and write no table (a helper of another).
    `data_dirs` / `data_options`: the real files of some datasets (see `real_data`); `precision`: every run's
    (default the profile's `auto`; pin fp32 for a table whose sittings run on different CPUs). `stop_after_min`:
    a sitting of that length (`work_cells`); the table files are written once every cell is done. `queue_name`:
    the launching process's queue (a helper's; its own otherwise); `parent_run_id`: the launcher's table run,
    under which a helper's run nests."""
    import hashlib
    import os
    from benchmark.cells import Cell, CellQueue
    from benchmark.sweep import DEFAULT_STORAGE, absolute_sqlite
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if launcher != "processes" and not worker_only and precision in (None, "auto"):
        # `auto` resolves on each machine (bf16 on a GPU node, maybe fp32 here), and the cells' fingerprints with it
        raise ValueError(f"--launcher {launcher}: give --precision bf16 or fp32; `auto` would resolve on each node, "
                         "and a launching machine without the workers' GPU would fingerprint every cell differently")
    if gpus and workers > 1 and launcher == "processes" and not worker_only:
        # before anything asks CUDA for its devices (resolving `auto` precision does): later it has no effect
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    spec, profile, jobs, data_params = table_setup(number, profile, seeds, datasets, models, data_dirs, data_options,
                                                   precision)
    tracking.health_check(tracking.resolve_uri(tracking_uri))
    loaded = {}  # each dataset loaded once for all its cells' fingerprints
    cells = [Cell(d, m, s, cell_fingerprint(spec, d, m, s, profile, loaded)[1]) for d, m, s in jobs]
    del loaded
    if not force and not worker_only:  # the runs this sitting would reuse, evaluate or resume, before any work
        client = tracking.get_client(tracking.resolve_uri(tracking_uri))
        for cell in cells:
            _, run = cell_run(tracking.search_runs(f"tags.fingerprint = '{cell.fingerprint}'", tracking_uri),
                              spec.metrics[0], client)
            if run:
                _warn_drift(run)
    # one queue per set of cells: new code or config is a new queue; --force a fresh one (retrain everything)
    digest = hashlib.sha256("\n".join(c.key for c in cells).encode()).hexdigest()[:12]
    name = queue_name or f"table{number}-{profile}-{digest}" + (f"-force-{time.time_ns()}" if force else "")
    queue_url = absolute_sqlite(queue_url or DEFAULT_STORAGE)
    queue = CellQueue(queue_url, name, cells, tracking.resolve_uri(tracking_uri), heartbeat_s=heartbeat_s,
                      grace_s=grace_s)
    helpers = None
    t0, started_ms = time.perf_counter(), int(time.time() * 1000)
    git = tracking.git_info()  # now: writing the table's own files later makes the tree look dirty
    command = " ".join(["python -m benchmark"] + sys.argv[1:])
    with tracking.start_run(f"table{number}-{profile}" + ("-worker" if worker_only else ""), uri=tracking_uri,
                            tags={"kind": "table-worker" if worker_only else "table", "table": number,
                                  "profile": profile, "command": command, "cell_queue": name, **git},
                            parent_run_id=parent_run_id) as parent:
        if (workers > 1 or launcher != "processes") and not worker_only:
            # a remote launcher runs every worker there (this process waits); local processes add to this one.
            # Each helper's runs nest under this table's run (--parent-run), so the UI shows every cell under it
            stores = ["--tracking-uri", tracking.resolve_uri(tracking_uri), "--queue", queue_url, "--queue-name",
                      name, "--profile", profile, "--parent-run", parent.run_id]
            helpers = LAUNCHERS[launcher](workers if launcher != "processes" else workers - 1, gpus, workers, stores)
            if not helpers.remote:
                import torch
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
        # what the table is, as params: filterable, and shown beside its metrics in Compare
        parent.log_params({"table": number, "profile": profile, "seeds": seeds, "passes": passes,
                           "datasets": ",".join(dict.fromkeys(c.dataset for c in cells)),
                           "models": ",".join(dict.fromkeys(c.model for c in cells)), "cells": len(cells),
                           "precision": precision or "auto",
                           **{f"budget.{d}": json.dumps(o, sort_keys=True)
                              for d, o in spec.budgets.get(profile, {}).items()}, **data_params})
        codes = []
        try:
            if helpers is not None and helpers.remote:
                mine = {}
                _watch(spec, queue, parent)
            else:
                mine = work_cells(spec, queue, profile, parent, tracking_uri, force, passes, progress,
                                  stop_after_s=None if stop_after_min is None else 60 * stop_after_min)
        finally:
            if helpers is not None:
                codes = helpers.wait()
        c = _progress(spec, parent, queue.counts())
        stopped = stop_after_min is not None and not (c["failed"] or any(codes) or queue.finished())
        if stopped:
            parent.set_tags({"stopped": f"--stop-after {stop_after_min:g} min"})
            print(f"[table {number}] sitting over: {c['done']} of {c['total']} cells done; the same command goes on "
                  f"(`export-runs --table {number}` carries the finished cells to another machine)", file=sys.stderr)
        if worker_only or stopped:
            return {"files": [], "wall_time_s": time.perf_counter() - t0, "parent_run_id": parent.run_id,
                    "jobs": mine}
        if c["failed"] or any(codes) or not queue.finished():
            raise TrainingError(f"table {number}: {c['failed']} cell(s) failed, {sum(map(bool, codes))} worker "
                                f"process(es) exited with an error, {c['total'] - c['done']} of {c['total']} cells "
                                f"unfinished (see the workers' output and their MLflow runs); rerun the same command "
                                f"to retry them")
        done = []
        for cell in cells:  # every cell is finished now: each one's run, and how this process got it
            run = _finished_eval(tracking.search_runs(f"tags.fingerprint = '{cell.fingerprint}'", tracking_uri),
                                 spec.metrics[0])
            if not run:
                raise TrainingError(f"table {number}: cell {cell.key} is marked done but has no finished, evaluated "
                                   f"run in {tracking.resolve_uri(tracking_uri)}")
            earlier = (run[0].info.end_time or 0) < started_ms  # finished before this command: reused
            done.append({"dataset": cell.dataset, "model": cell.model, "seed": cell.seed,
                         "run_id": tracking.stable_id(run[0]),  # an imported cell: the id it has everywhere
                         "how": mine.get(cell.key, "reused" if earlier else "other worker")})
        parent.log_text(json.dumps(done, indent=2), "jobs.json")
        wall = time.perf_counter() - t0
        parent.set_tags({"seeds": seeds, "passes": passes})
        parent.log_metrics({"sys/wall_time_s": wall}, 0)
        files = write_table(spec, collect(done, tracking_uri), out, provenance={
            "command": command, "profile": profile, "seeds": seeds,
            "passes": passes, "wall_time_s": wall, "parent_run_id": parent.run_id, "jobs": done,
            "budget": spec.budgets.get(profile, {}), "data": data_params, **git})
        for f in files:
            parent.log_artifact(f, "table")
        log_table_to_run(parent, spec, out)
    return {"files": [str(f) for f in files], "wall_time_s": wall, "parent_run_id": parent.run_id, "jobs": done}


MAX_NOTE = 7000  # MLflow keeps tag values up to 8,000 characters


def log_table_to_run(run, spec: TableSpec, out) -> None:
    """The table on its parent run, where the MLflow UI shows it: every cell's mean, std and n as metrics
    `table/<dataset>/<model>/<metric>_{mean,std,n}` (sortable and comparable across table runs), the markdown as
    the run's description, and the figure as an image."""
    stem = Path(out) / f"table{spec.number}"
    long = pd.read_csv(f"{stem}.csv")
    run.log_metrics({f"table/{r.dataset}/{r.model}/{r.metric}_{stat}": float(getattr(r, stat))
                     for r in long.itertuples() for stat in ("mean", "std", "n") if pd.notna(getattr(r, stat))}, 0)
    md = Path(f"{stem}.md").read_text()
    if len(md) > MAX_NOTE:
        md = md[:MAX_NOTE] + f"\n\n… (cut; the whole table is the artifact table/table{spec.number}.md)"
    run.set_tags({"mlflow.note.content": md})
    if Path(f"{stem}.png").is_file():
        run.log_image(f"{stem}.png", f"table{spec.number}", 0)
    run.flush()


# the settings of a run's recipe (its logged params) that a table states beside its numbers: what the profile and
# the table's budget chose per dataset, so that two tables (or two commits of one profile) that trained differently
# say so (`recipe_of`, the leaderboard's budget note)
RECIPE_KEYS = ("train.max_steps", "train.epochs", "train.batch_size", "train.lr", "train.lr_schedule",
               "train.grad_clip", "train.precision", "loss.recon", "loss.recon_sigma_init", "loss.kl_warmup",
               "loss.mi_estimator", "loss.mi_reduce")


def collect(jobs: list[dict], tracking_uri=None) -> pd.DataFrame:
    """Per-seed eval metrics, judge accuracies and recipe (`RECIPE_KEYS` as `recipe.<key>`) of the jobs' runs,
    read from MLflow."""
    rows = []
    for j in jobs:
        run = tracking.find_run(j["run_id"], tracking_uri)
        m = run.data.metrics
        row = {**j, **{k[5:]: v for k, v in m.items() if k.startswith("eval/")},
               "wall_time_s": m.get("sys/wall_time_s", m.get("wall_time_s")), "git_commit": run.data.tags.get("git_commit"),
               "judge_run_id": run.data.tags.get("judge_run_id"),
               **{f"recipe.{k}": v for k in RECIPE_KEYS if (v := run.data.params.get(k)) is not None}}
        rows.append(row)
    return pd.DataFrame(rows)


def recipe_of(per_seed: pd.DataFrame) -> dict:
    """Per dataset, the recipe settings every model's runs share ("all") and each model's own where they differ
    ("per_model"), from the per-seed `recipe.<key>` columns (`collect`; a model's first seed stands for its
    seeds, which share a config); {} where the runs logged none."""
    cols = [c for c in per_seed.columns if c.startswith("recipe.")]
    out = {}
    for d, g in per_seed.groupby("dataset", sort=False):
        per_model = {}
        for m, gm in g.groupby("model", sort=False):
            first = gm.iloc[0]
            per_model[m] = {c[len("recipe."):]: str(first[c]) for c in cols if pd.notna(first[c])}
        if not any(per_model.values()):
            continue
        settings = list(per_model.values())
        common = {k: v for k, v in settings[0].items() if all(s.get(k) == v for s in settings)}
        out[d] = {"all": common, "per_model": {m: {k: v for k, v in s.items() if k not in common}
                                               for m, s in per_model.items() if set(s) - set(common)}}
    return out


def aggregate(spec: TableSpec, per_seed: pd.DataFrame) -> pd.DataFrame:
    """Long form: table, dataset, model, metric, mean, std (over training seeds), n."""
    out = []
    for (d, m), g in per_seed.groupby(["dataset", "model"], sort=False):
        for metric in spec.metrics + spec.extra_metrics:
            if metric in g and g[metric].notna().any():
                v = g[metric].dropna().to_numpy(float)
                out.append({"table": spec.number, "dataset": d, "model": m, "metric": metric, "mean": v.mean(),
                            "std": v.std(ddof=1) if len(v) > 1 else 0.0, "n": len(v)})
    return pd.DataFrame(out)


def paper_values(number: int | str) -> pd.DataFrame:
    """The paper's values of table `number` (an extended table: its base table's)."""
    number = EXTENDED[number][0] if number in EXTENDED else int(number)
    p = pd.read_csv(PAPER_CSV)
    return p[p.table == number]


def _fmt(metric, v):
    return f"{v:.2f}" if metric in PERCENT else f"{v:.3f}"


def write_table(spec: TableSpec, per_seed: pd.DataFrame, out, provenance: dict) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"table{spec.number}"
    long = aggregate(spec, per_seed)
    long.to_csv(f"{stem}.csv", index=False)
    paper = paper_values(spec.number)
    pv = {(r.dataset, r.model, r.metric): r.value for r in paper.itertuples()}
    md = [f"# Table {spec.number}: {spec.title}", "",
          f"Ours: mean ± std over n = {provenance['seeds']} training seeds (each the mean of {provenance['passes']} "
          f"sampling passes), profile `{provenance['profile']}`; (paper) the seed's value. Provenance: "
          f"`table{spec.number}_provenance.json` (command, git commit, MLflow run ids).", ""]
    if provenance.get("budget"):
        md += [f"Budget of this table at profile `{provenance['profile']}` (overrides of every run, per dataset): "
               + "; ".join(f"{d}: " + ", ".join(f"`{k}={v}`" for k, v in o.items())
                           for d, o in provenance["budget"].items()) + ".", ""]
    recipe = recipe_of(per_seed)
    if recipe:
        md += ["Recipe (the cells' runs' logged params; per model where models differ): " + "; ".join(
            f"{d}: " + ", ".join(f"`{k}={v}`" for k, v in r["all"].items())
            + "".join(f" ({m}: " + ", ".join(f"`{k}={v}`" for k, v in o.items()) + ")"
                      for m, o in r["per_model"].items()) for d, r in recipe.items()) + ".", ""]
    if provenance.get("data"):
        md += ["Real data (the other datasets: embedded): " + ", ".join(f"`{k}={v}`" for k, v in
                                                                     provenance["data"].items()) + ".", ""]
    tex = [r"\begin{tabular}{l" + "r" * len(spec.metrics) + "}", r"\toprule"]
    for d, g in long.groupby("dataset", sort=False):
        md += [f"## {d}", "", "| model | " + " | ".join(spec.metrics + spec.extra_metrics) + " |",
               "|---" * (1 + len(spec.metrics + spec.extra_metrics)) + "|"]
        tex += [rf"\multicolumn{{{1 + len(spec.metrics)}}}{{l}}{{\textbf{{{d}}}}} \\",
                "model & " + " & ".join(m.replace("_", r"\_") for m in spec.metrics) + r" \\", r"\midrule"]
        for model, gm in g.groupby("model", sort=False):
            vals = {r.metric: r for r in gm.itertuples()}
            cells, tcells = [], []
            for metric in spec.metrics + spec.extra_metrics:
                r = vals.get(metric)
                cell = "–" if r is None else f"{_fmt(metric, r.mean)} ± {_fmt(metric, r.std)}"
                if (d, model, metric) in pv:
                    cell += f" ({_fmt(metric, pv[(d, model, metric)])})"
                cells.append(cell)
                if metric in spec.metrics:
                    tcells.append("--" if r is None else f"{_fmt(metric, r.mean)} $\\pm$ {_fmt(metric, r.std)}")
            md.append(f"| {model} | " + " | ".join(cells) + " |")
            tex.append(f"{model} & " + " & ".join(tcells) + r" \\")
        md.append("")
        tex.append(r"\midrule")
    tex[-1] = r"\bottomrule"
    tex.append(r"\end{tabular}")
    judges = {}
    if "judge_run_id" in per_seed:
        for d, g in per_seed[per_seed.judge_run_id.notna()].groupby("dataset"):
            acc_cols = [c for c in g.columns if c.startswith("judge_acc_")]
            # cells whose machines each trained the judge (same fingerprint, another run): every run named, and
            # each head at its weakest, so a floor warning cannot hide behind the first run's
            judges[d] = {c[len("judge_acc_"):]: float(g[c].min()) for c in acc_cols if g[c].notna().any()}
            judges[d]["judge_run_id"] = ", ".join(dict.fromkeys(g["judge_run_id"]))
    from benchmark.judges import judge_warning
    judge_warnings = [w for d, acc in judges.items() if (w := judge_warning(d, acc))]
    short = below_floors(per_seed.to_dict("records"))  # runs whose decoder cannot draw a factor
    warnings = judge_warnings + ([floors_warning(short)] if short else [])
    if warnings:  # at the top, where a reader starts
        md[2:2] = [f"**{w}.**" for w in warnings] + [""]
    md += ["## Judges (test accuracy, %)", ""] + [f"- {d}: " + ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in acc.items()) for d, acc in judges.items()]
    md += ["", f"Wall time: {provenance['wall_time_s'] / 60:.1f} min. Command: `{provenance['command']}`."]
    if "how" in per_seed and "wall_time_s" in per_seed and (per_seed.how == "reused").any():
        # the command's wall time leaves out what earlier sittings trained: say so, with the runs' own times
        md[-1] += (f" {int((per_seed.how == 'reused').sum())} of {len(per_seed)} cells were reused from earlier "
                   f"sittings; the runs' own training times add up to {per_seed.wall_time_s.sum() / 3600:.1f} h "
                   f"(`wall_time_s` per seed in the provenance: a run's last sitting only, so an extended or resumed "
                   f"run counts the steps that sitting added).")
    Path(f"{stem}.md").write_text("\n".join(md) + "\n")
    Path(f"{stem}.tex").write_text("\n".join(tex) + "\n")
    floors = {d: LEARNING_FLOORS[d] for d in dict.fromkeys(per_seed["dataset"]) if d in LEARNING_FLOORS}
    prov = {**provenance, **({"recipe": recipe} if recipe else {}), "judges": judges,
            "judge_warnings": judge_warnings, **({"learning_floors": {"floors": floors, "below": short}} if floors else {}),
            "hardware": hardware(),
            "packages": {p: _version(p) for p in ("torch", "torchvision", "torchaudio", "mlflow", "optuna", "numpy",
                                                  "scikit-learn", "opencv-python-headless")},
            "per_seed": json.loads(per_seed.to_json(orient="records"))}
    Path(f"{stem}_provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    # the figure's title gets each warning's first clause (the floor warning's run list is in the markdown)
    fig = plot_table(spec, long, paper, Path(f"{stem}.png"), [w.split(" — ")[0] for w in warnings],
                     f"profile {provenance['profile']}, n = {provenance['seeds']} training seeds × "
                     f"{provenance['passes']} sampling passes; bars: mean, whiskers: ± std over seeds")
    return [Path(f"{stem}.csv"), Path(f"{stem}.md"), Path(f"{stem}.tex"), Path(f"{stem}_provenance.json"), fig]


def _version(pkg):
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def hardware() -> dict:
    import torch
    flags = []
    try:
        flags = [f for f in Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
                 if f.startswith(("avx", "amx", "fma"))]
    except (OSError, IndexError):
        pass
    return {"machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_flags": flags, "bf16_units": cpu_has_bf16_units(), "cpu_model": _cpu_model(),
            # the vector ISA ATen dispatches to, and any cap on it (an AVX-512 CPU measured as AVX2)
            "aten_capability": torch.backends.cpu.get_cpu_capability(), "isa_caps": isa_caps()}


def _cpu_model() -> str | None:
    try:
        return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), None)
    except OSError:
        return None


def plot_table(spec: TableSpec, long: pd.DataFrame, paper: pd.DataFrame, path: Path,
               warnings: list[str] | None = None, subtitle: str = "") -> Path:
    """Ours (mean ± std over seeds) beside the paper, one panel per metric and dataset, each titled with the
    metric's name and which way is better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from benchmark.directions import direction, name
    # beside the paper's metrics, ours that summarise a side (not the per-family accuracies)
    shown = list(spec.metrics) + [m for m in spec.extra_metrics if not m.startswith("acc")]
    ours = long[long.metric.isin(shown)].assign(source="ours", value=lambda f: f["mean"])
    theirs = paper[paper.metric.isin(spec.metrics)].assign(source="paper", std=0.0)
    df = pd.concat([ours[["dataset", "model", "metric", "value", "std", "source"]],
                    theirs[theirs.dataset.isin(ours.dataset.unique())][["dataset", "model", "metric", "value", "std",
                                                                        "source"]]], ignore_index=True)
    g = sns.catplot(df, x="model", y="value", hue="source", col="metric", row="dataset", kind="bar",
                    sharey=False, height=2.6, aspect=1.3, palette=["#4c72b0", "#c0c0c0"], order=list(
                        dict.fromkeys(ours.model)))
    for (d, metric), ax in g.axes_dict.items():
        sub = ours[(ours.dataset == d) & (ours.metric == metric)]
        for i, r in enumerate(sub.itertuples()):
            ax.errorbar(i - 0.2, r.value, yerr=r.std, color="black", capsize=2, lw=1)
        ax.tick_params(axis="x", rotation=30)
        ax.set_title(f"{d}: {name(metric)}\n({direction(metric)} is better)", fontsize=9)
        ax.set_ylabel(name(metric))
        ax.set_xlabel("")
    title = f"Table {spec.number}: ours vs paper" + (f"\n{subtitle}" if subtitle else "")
    if warnings:
        title += "\n" + "\n".join(warnings)
    rows = len(g.axes)  # the title's lines sit above the panels' own two-line titles
    g.figure.suptitle(title, y=1.0 + (0.06 + 0.05 * title.count("\n")) / rows, fontsize=10,
                      color="firebrick" if warnings else "black")
    g.figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(g.figure)
    return path


def _real_data(run) -> dict:
    return {k: v for k, v in run.data.params.items() if k.startswith(REAL_DATA)}


def report_table(number: int, out="results", tracking_uri=None, run_id: str | None = None) -> list[Path]:
    """Rebuild the table files from MLflow alone: a finished table run's jobs and their metrics. `run_id`: that
    table run; default the newest finished one on the embedded data (a real-data table, see `run --data-dir`,
    is rebuilt only by its run id, so that it never overwrites the committed embedded-data files by accident)."""
    spec = get_table(number)
    where = tracking.resolve_uri(tracking_uri)
    if run_id:
        parent = tracking.find_run(run_id, tracking_uri)
        if (parent.data.tags.get("kind"), parent.data.tags.get("table")) != ("table", str(spec.number)):
            raise ValueError(f"report --table {number} --run {run_id}: that run is not a table {number} run "
                             f"(kind={parent.data.tags.get('kind')!r}, table={parent.data.tags.get('table')!r})")
    else:
        parents = [r for r in tracking.complete_table_runs(number, tracking_uri) if not _real_data(r)]
        if not parents:
            raise FileNotFoundError(f"report --table {number}: no finished table run on the embedded data in {where}; "
                                    f"run `python -m benchmark run --table {number}` first (a real-data table: "
                                    f"`report --table {number} --run PARENT_RUN_ID`)")
        parent = parents[0]
    jobs = json.loads(Path(tracking.download_artifact(parent.info.run_id, "jobs.json", tracking_uri)).read_text())
    seeds = len({j["seed"] for j in jobs})
    # the command that ran the table (tables run before it was tagged: the report command itself)
    prov = {"command": parent.data.tags.get("command", f"python -m benchmark report --table {number}"),
            "rebuilt_by": f"python -m benchmark report --table {number}", "profile": parent.data.tags.get("profile"),
            "seeds": seeds, "passes": int(parent.data.tags.get("passes", 0)),
            "wall_time_s": parent.data.metrics.get("sys/wall_time_s", parent.data.metrics.get("wall_time_s", float("nan"))), "parent_run_id": parent.info.run_id,
            "jobs": jobs, "rebuilt_from_mlflow": True, "budget": spec.budgets.get(parent.data.tags.get("profile"), {}),
            "data": _real_data(parent),
            **{k: parent.data.tags.get(k, "unknown") for k in ("git_commit", "git_dirty")}}
    return write_table(spec, collect(jobs, tracking_uri), out, prov)
