"""MLflow, and only here: runs, params, per-step metrics, tags, artifacts, run lookup."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

DEFAULT_URI = "sqlite:///mlruns.db"
DEFAULT_EXPERIMENT = "s3vae-benchmark"
# on a run that trained on after its eval/ metrics were logged (`train --continue`): they describe fewer steps, so a
# table evaluates the run again instead of reusing them; a new evaluation removes it
EVAL_STALE_TAG = "eval_stale"
SWEEP_EXPERIMENT = "s3vae-benchmark-sweeps"
JUDGE_EXPERIMENT = "s3vae-benchmark-judges"
# one experiment per purpose, each with the description MLflow shows above its runs
EXPERIMENTS = {
    DEFAULT_EXPERIMENT: "Tables and single runs. Each `run --table N` is a parent run (kind=table) carrying the "
                        "table itself (per model/dataset/metric mean, std and n as metrics, the markdown as its "
                        "description, the figure as an image) with its cells' train runs nested under it; "
                        "`train` and `eval` runs of their own are top-level. Metric prefixes: train/ (loss terms), "
                        "val/ (learning curves), eval/ (test protocol), sys/ (time and speed), table/ (a table's "
                        "cells). Tag below_learning_floor: the label families the judge reads on the run's own test "
                        "reconstructions below their learning floor (\"no\" when none): such a run has not learned.",
    SWEEP_EXPERIMENT: "Optuna sweeps (`sweep --space ...`). One parent run per study (kind=sweep) with the best "
                      "trial's parameters as params; trials nested under it, named `trial-N` with their values.",
    JUDGE_EXPERIMENT: "Judge classifiers, one per dataset, profile and train split: their training curves "
                      "(train/ce_*) and test accuracy per label family (judge/test_acc_*). A judge below the "
                      "accuracy floor makes every number it scores meaningless (tag judge_below_floor).",
}
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


class TrackingError(RuntimeError):
    pass


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI, with a relative SQLite path made absolute: MLflow caches one store per URI
    string per process, so `sqlite:///mlruns.db` would keep pointing at the first directory's file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def health_check(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a dead http(s) server (MLflow's own client retries for ~4 minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(f"tracking server {uri} answered HTTP {r.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"tracking server {uri} is unreachable ({reason}); start it, fix --tracking-uri / "
                            f"MLFLOW_TRACKING_URI, or use the embedded store {DEFAULT_URI}") from None


def git_info() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD") or "unknown"
        dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "unknown", "unknown"
    return {"git_commit": sha, "git_dirty": dirty}


def host_info(device) -> dict[str, str]:
    import torch
    dev = str(device)
    if getattr(device, "type", "") == "cuda":
        dev += f" ({torch.cuda.get_device_name(device)})"
    return {"host": socket.gethostname(), "device": dev, "cpu": platform.processor() or platform.machine(),
            "threads": str(torch.get_num_threads()), "torch": torch.__version__}


class Tracker:
    """One MLflow run. Metrics are buffered and written in batches (a sqlite write per step is slow).

    A tracking server that goes away mid-run does not stop training: a flush that finds it unreachable
    (a 3-second health check, not MLflow's minutes of retries) keeps the metrics and tries again at the next
    flush, so a server restarted during the run receives every metric, without a gap. The buffer is bounded
    (`max_buffer` metrics); past it, or when the run ends with the server still down after `final_wait_s`,
    a TrackingError says so (the trainer has saved its checkpoint; `train --continue RUN_ID` resumes)."""

    def __init__(self, run, client, flush_every: int = 200, uri: str | None = None, max_buffer: int = 2_000_000,
                 final_wait_s: float = 300.0):
        self.run, self.client, self.flush_every = run, client, flush_every
        self.uri, self.max_buffer, self.final_wait_s = uri or "", max_buffer, final_wait_s
        self._buffer, self._down_since = [], None

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def delete_tag(self, key: str) -> None:
        if key in self.client.get_run(self.run_id).data.tags:
            self.client.delete_tag(self.run_id, key)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time
        ts = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def _reachable(self) -> bool:
        if not self.uri.startswith(("http://", "https://")):
            return True
        try:
            health_check(self.uri, timeout=3.0)
            return True
        except TrackingError:
            return False

    def flush(self, final: bool = False) -> None:
        """Write the buffered metrics; an unreachable server keeps them for the next flush (see the class)."""
        import sys
        import time
        deadline = time.time() + (self.final_wait_s if final else 0.0)
        while self._buffer:
            try:
                if not self._reachable():  # once per attempt, not per chunk: one round trip per flush
                    raise TrackingError("unreachable")
                while self._buffer:
                    chunk = self._buffer[:1000]
                    self.client.log_batch(self.run_id, metrics=chunk)
                    del self._buffer[:len(chunk)]
            except Exception as e:  # noqa: BLE001 - a store outage, whatever the client raises for it
                if self._down_since is None:
                    self._down_since = time.time()
                    print(f"\nwarning: tracking store {self.uri or '?'} unreachable ({str(e)[:120]}); "
                          f"training goes on, metrics are kept and written when it is back", file=sys.stderr)
                if len(self._buffer) > self.max_buffer or (final and time.time() > deadline):
                    raise TrackingError(f"tracking store {self.uri} unreachable for "
                                        f"{time.time() - self._down_since:.0f} s with {len(self._buffer)} metrics "
                                        f"unwritten; the checkpoint is saved: start the store and resume with "
                                        f"`python -m benchmark train --continue {self.run_id}`") from None
                if not final:
                    return
                time.sleep(5.0)
        if self._down_since is not None:
            print(f"tracking store back after {time.time() - self._down_since:.0f} s: buffered metrics written",
                  file=sys.stderr)
            self._down_since = None

    def _await_store(self) -> None:
        """Before a write that cannot be buffered (params, tags, artifacts): wait up to `final_wait_s` for an
        unreachable server to come back, then fail with the resume command."""
        import time
        t0 = time.time()
        while not self._reachable():
            if time.time() - t0 > self.final_wait_s:
                raise TrackingError(f"tracking store {self.uri} unreachable for {self.final_wait_s:.0f} s; the "
                                    f"checkpoint is saved: start the store and resume with `python -m benchmark "
                                    f"train --continue {self.run_id}`")
            time.sleep(2.0)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param
        self._await_store()
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict) -> None:
        self._await_store()
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self._await_store()
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._await_store()
        self.client.log_text(self.run_id, text, name)

    def log_image(self, path, key: str, step: int) -> None:
        """An image under `key` at `step`: MLflow shows it in the run's chart view with a step slider and sets the
        same key side by side across runs in Compare (plain artifacts cannot be compared)."""
        from PIL import Image
        self._await_store()
        with Image.open(path) as im:
            self.client.log_image(self.run_id, im.convert("RGB"), key=key, step=step)


@contextmanager
def store_lock(uri: str):
    """Held while a store may be initialised: processes on one machine sharing a store take turns (two at
    once both run the schema migration, and one dies). SQLite: a lock file beside the database; a database
    server: one in the temp directory per URL (other machines are covered by `initialising`'s retries);
    a no-op for an http(s) tracking server, which migrates its own database once."""
    if uri.startswith(("http://", "https://")):
        yield
        return
    import fcntl
    import hashlib
    import tempfile
    if uri.startswith("sqlite:///"):
        lock = Path(uri[len("sqlite:///"):] + ".lock")
    else:
        lock = Path(tempfile.gettempdir()) / f"benchmark-store-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def initialising(uri: str, what: str, fn, attempts: int = 5):
    """fn() while the store may be initialised: serialised by `store_lock` on one machine, retried where a
    database is shared by machines (another process may be mid-migration or win a unique-name race)."""
    import time
    for attempt in range(attempts):
        try:
            with store_lock(uri):
                return fn()
        except Exception as e:  # noqa: BLE001 - migration / unique-name races surface as several types
            if attempt == attempts - 1:
                raise TrackingError(f"tracking store {uri}: cannot {what} ({type(e).__name__}: {str(e)[:300]})") \
                    from None
            time.sleep(0.5 * (attempt + 1))


def get_client(uri: str | None = None):
    """An MlflowClient on the store; creating one creates a fresh store's schema, so it is made through
    `initialising` (several table or sweep workers start at once on a new store)."""
    from mlflow.tracking import MlflowClient
    uri = resolve_uri(uri)
    return initialising(uri, "open the store", lambda: MlflowClient(uri))


def experiment_id(client, uri: str, name: str) -> str:
    """The experiment's id, created on first use (safely when several processes start at once), marked as model
    training and described (also an experiment made by an older version, on first use)."""
    def get_or_create():
        if name in EXPERIMENTS:  # all of them, in one order: a fresh store has the same ids everywhere (README URLs)
            for other in EXPERIMENTS:
                if client.get_experiment_by_name(other) is None:
                    _described(client, client.create_experiment(other), other, {})
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        return _described(client, exp_id, name, dict(exp.tags) if exp else {})
    return initialising(uri, f"open or create experiment {name!r}", get_or_create)


def _described(client, exp_id: str, name: str, tags: dict) -> str:
    wanted = {_EXPERIMENT_KIND[0]: _EXPERIMENT_KIND[1]}
    if name in EXPERIMENTS:
        wanted["mlflow.note.content"] = EXPERIMENTS[name]
    for k, v in wanted.items():
        if tags.get(k) != v:
            client.set_experiment_tag(exp_id, k, v)
    return exp_id


@contextmanager
def start_run(run_name: str, tags: dict | None = None, uri: str | None = None,
              experiment: str = DEFAULT_EXPERIMENT, parent_run_id: str | None = None, run_id: str | None = None):
    """A tracked run (or `run_id` reopened to continue it); ends FINISHED on success, FAILED
    (with the error as a tag) on an exception, KILLED on Ctrl-C."""
    uri = resolve_uri(uri)
    health_check(uri)
    client = get_client(uri)
    exp_id = experiment_id(client, uri, experiment)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if run_id:
        client.update_run(run_id, status="RUNNING")
        run = client.get_run(run_id)
        if "error" in run.data.tags:  # a failed run taken up again: its old error no longer describes it
            client.set_tag(run_id, "previous_error", run.data.tags["error"])
            client.delete_tag(run_id, "error")
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    else:
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
    tracker = Tracker(run, client, uri=uri)
    try:
        yield tracker
    except BaseException as e:
        try:
            tracker.flush()
        except TrackingError:
            pass  # the original error is the one to report
        client.set_tag(tracker.run_id, "error", f"{type(e).__name__}: {e}"[:5000])
        client.set_terminated(tracker.run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    tracker.flush(final=True)
    client.set_terminated(tracker.run_id, "FINISHED")


def open_run(run_id: str, uri: str | None = None) -> Tracker:
    """A Tracker on an existing run (evaluation results are logged to the run they evaluate)."""
    return Tracker(find_run(run_id, uri), get_client(uri), uri=resolve_uri(uri))


def close_running_runs(filter_string: str, uri: str | None, reason: str, extra_tags: dict | None = None,
                       experiment: str = DEFAULT_EXPERIMENT) -> None:
    """Mark KILLED the RUNNING runs matching `filter_string` whose process died (a dead sweep trial or table
    cell): otherwise they stay RUNNING forever. A tracking hiccup is a warning, never a stopped retry."""
    import sys
    try:
        client = get_client(uri)
        for run in search_runs(filter_string, uri, experiment):
            if run.info.status == "RUNNING":
                for k, v in {**(extra_tags or {}), "error": reason}.items():
                    client.set_tag(run.info.run_id, k, v)
                client.set_terminated(run.info.run_id, "KILLED")
    except Exception as e:  # noqa: BLE001
        print(f"warning: could not close the dead runs matching {filter_string!r}: {e}", file=sys.stderr)


def copy_history(src_run_id: str, dst_run_id: str, prefixes: tuple = ("train/", "val/"),
                 uri: str | None = None) -> int:
    """Log every step of run `src`'s metrics under `prefixes` into run `dst` (a run that goes on from another
    one: its curves then start at step 0); returns how many points."""
    client = get_client(uri)
    keys = [k for k in client.get_run(src_run_id).data.metrics if k.startswith(prefixes)]
    points = [m for k in keys for m in client.get_metric_history(src_run_id, k)]
    for i in range(0, len(points), 1000):  # MLflow's log_batch limit
        client.log_batch(dst_run_id, metrics=points[i:i + 1000])
    return len(points)


def download_artifact(run_id: str, path: str, uri: str | None = None) -> str:
    return get_client(uri).download_artifacts(run_id, path)


IMPORTED_ID_TAG = "imported_run_id"  # `import-runs` gives a run a new id here and keeps its exported id in this tag


def stable_id(run) -> str:
    """The id a run has in every store: its exported id where it was imported (what provenance records)."""
    return run.data.tags.get(IMPORTED_ID_TAG) or run.info.run_id


def find_run(run_id: str, uri: str | None = None):
    """The run of that id, or the run imported under it (table provenance records `stable_id`s, so a table
    written in one store is diagnosed, plotted and ranked in another that imported its cells)."""
    import re

    from mlflow.exceptions import MlflowException
    uri = resolve_uri(uri)
    health_check(uri)
    client = get_client(uri)
    try:
        return client.get_run(run_id)
    except MlflowException:
        pass
    found = search_runs(f"tags.{IMPORTED_ID_TAG} = '{run_id}'", uri, tuple(EXPERIMENTS)) \
        if re.fullmatch(r"[0-9a-f]{32}", run_id) else []
    if found:
        return found[0]
    raise TrackingError(f"--run {run_id}: no such run in {uri}") from None


def complete_table_runs(number, uri: str | None = None) -> list:
    """Table N's parent runs that wrote the table (newest first): finished, and not a `--stop-after` sitting that
    ended before its last cell (it finishes too, but has no jobs.json: the next sitting writes the table)."""
    health_check(resolve_uri(uri))  # `report` / `curves` start here: a dead server fails in seconds, not minutes
    return [r for r in search_runs(f"tags.kind = 'table' and tags.table = '{number}'", uri)
            if r.info.status == "FINISHED" and "stopped" not in r.data.tags]


def search_runs(filter_string: str, uri: str | None = None, experiment: str | tuple = DEFAULT_EXPERIMENT) -> list:
    """Runs of the experiment(s) matching an MLflow filter, newest first."""
    client = get_client(uri)
    names = (experiment,) if isinstance(experiment, str) else tuple(experiment)
    ids = [e.experiment_id for e in map(client.get_experiment_by_name, names) if e is not None]
    if not ids:
        return []
    return client.search_runs(ids, filter_string, order_by=["attributes.start_time DESC"], max_results=1000)
