"""A table's cells (model, dataset, seed) as a shared work queue, so that any number of processes — `--workers`
on one machine, the same command on several machines, a Slurm array — train every cell exactly once.

The engine is Optuna's RDB storage, the one sweeps already use (SQLite by default, PostgreSQL across
machines): each cell is an enqueued trial; a worker claims one by moving it WAITING -> RUNNING, which the
database does atomically (Optuna's own `set_trial_state_values` returns False to the loser); a claimed cell
beats a heartbeat, and a cell whose worker died (kill -9, lost node) is failed after the grace period and
re-enqueued by `RetryHeartbeatStaleTrialCallback`, its MLflow run marked KILLED; the next claimer resumes that
run from its checkpoint (`tables.run_job`). Chosen over a home-made lock table because the heartbeat /
stale-trial / retry machinery exists, is tested upstream, and runs on the same database as the sweeps.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from benchmark import tracking


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    seed: int
    fingerprint: str  # of the run this cell trains (config + data + source): the same cell in every process

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.model}/s{self.seed}/{self.fingerprint}"


class CellQueue:
    """The cells of one table command in an Optuna study named after them (a new code or config version is a
    new study). `claim()` -> a Cell this process must run, or None; `done(cell)` after it is trained and
    evaluated; `finished()` once every cell is."""

    def __init__(self, storage_url: str, name: str, cells: list[Cell], tracking_uri: str | None = None,
                 heartbeat_s: int = 10, grace_s: int = 60, max_retry: int = 3):
        import optuna
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cells = {c.key: c for c in cells}
        self.tracking_uri, self.heartbeat_s = tracking_uri, heartbeat_s
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

        def on_dead(study, trial):
            self._close_dead_run(trial)
            retry(study, trial)
        engine = ({"connect_args": {"timeout": 120}} if storage_url.startswith("sqlite") else
                  {"pool_pre_ping": True})
        try:  # a fresh storage's schema: one process at a time here, retried against other machines
            self.storage = tracking.initialising(storage_url, "create the cell queue", lambda: RDBStorage(
                storage_url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                heartbeat_stale_trial_callback=on_dead))
        except Exception as e:  # noqa: BLE001 - bad URL, missing driver, dead server: one clear message
            raise ValueError(f"--queue {storage_url}: cannot open the cell queue's Optuna storage "
                             f"({type(e).__name__}: {e}); expected sqlite:///path.db or "
                             f"postgresql://user:pass@host/db") from None
        try:  # creating the study is atomic in the database: exactly one process creates it and enqueues
            self.study = optuna.create_study(study_name=name, storage=self.storage)
            for key in self.cells:
                self.study.enqueue_trial({}, user_attrs={"cell": key})
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=name, storage=self.storage)
            self._wait_for_enqueued()
            with tracking.store_lock(storage_url):
                self._retry_failed()

    def _wait_for_enqueued(self, timeout_s: float = 120.0) -> None:
        """Another process created the study a moment ago and may still be enqueueing."""
        t0 = time.time()
        while {t.user_attrs.get("cell") for t in self._trials()} < set(self.cells):
            if time.time() - t0 > timeout_s:
                raise ValueError(f"cell queue {self.study.study_name}: its creator enqueued only part of the cells "
                                 f"within {timeout_s:.0f} s")
            time.sleep(1.0)

    def _trials(self, states=None):
        return self.storage.get_all_trials(self.study._study_id, deepcopy=False, states=states)

    def claim_stale(self) -> None:
        """Re-queue the cells of dead workers (RetryHeartbeatStaleTrialCallback), without claiming anything."""
        from optuna.storages import fail_stale_trials
        fail_stale_trials(self.study)

    def claim(self) -> Cell | None:
        """Atomically take a waiting cell (dead workers' cells are re-enqueued first); None when none waits.
        A cell that was started before (interrupted, failed, or its worker died) is taken before the fresh ones:
        it resumes from its checkpoint, so a table goes on where it stopped rather than leaving a half-trained
        cell for last."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState
        self.claim_stale()
        trials = self._trials()
        started = {t.user_attrs.get("cell") for t in trials if t.state != TrialState.WAITING}
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        for t in sorted(waiting, key=lambda t: (t.user_attrs.get("cell") not in started, t.number)):
            try:
                won = self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)  # False: another won
            except UpdateFinishedTrialError:  # another process claimed and finished it since we listed it
                won = False
            if won:
                self._beat(t._trial_id)
                return self.cells[t.user_attrs["cell"]]
        return None

    def _beat(self, trial_id: int) -> None:
        self._trial_id, self._stop = trial_id, threading.Event()
        self.storage.record_heartbeat(trial_id)

        def loop(stop=self._stop):
            while not stop.wait(self.heartbeat_s):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a missed beat is retried at the next one
                    print(f"warning: cell heartbeat failed: {e}", file=sys.stderr)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def release(self, ok: bool, requeue: bool = False) -> None:
        """The claimed cell is finished (COMPLETE), or failed here (FAIL), and then with `requeue` (this process
        was interrupted) enqueued again for whoever comes next — who resumes its checkpoint."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState
        self._stop.set()
        self._thread.join()
        trial = self.storage.get_trial(self._trial_id)
        try:
            self.storage.set_trial_state_values(self._trial_id, TrialState.COMPLETE if ok else TrialState.FAIL,
                                                [0.0] if ok else None)
        except UpdateFinishedTrialError:  # declared dead meanwhile (a stalled heartbeat) and already re-queued
            print(f"warning: cell {trial.user_attrs['cell']} was re-queued while this worker ran it; the retry "
                  f"reuses this run", file=sys.stderr)
        if requeue:
            self.study.enqueue_trial({}, user_attrs={"cell": trial.user_attrs["cell"]})

    def _newest(self) -> dict:
        """{cell key: its newest trial}: a retried cell is what its latest trial says (trials come in creation
        order)."""
        newest = {}
        for t in self._trials():
            key = t.user_attrs.get("cell")
            if key in self.cells:
                newest[key] = t
        return newest

    def _retry_failed(self) -> None:
        """Cells that failed in an earlier command go back in the queue: rerunning the command retries them."""
        for key, t in self._newest().items():
            if t.state.name == "FAIL":
                self.study.enqueue_trial({}, user_attrs={"cell": key})

    def counts(self) -> dict[str, int]:
        """Cells done / running / queued / failed (a retried cell counts once, by its newest trial)."""
        states = [t.state.name for t in self._newest().values()]
        return {"done": states.count("COMPLETE"), "running": states.count("RUNNING"),
                "queued": states.count("WAITING"), "failed": states.count("FAIL"), "total": len(self.cells)}

    def finished(self) -> bool:
        c = self.counts()
        return c["done"] + c["failed"] == c["total"]

    def _close_dead_run(self, trial) -> None:
        """The MLflow run a dead worker left RUNNING: marked KILLED, so the next claimer resumes it."""
        cell = self.cells.get(trial.user_attrs.get("cell"))
        if cell is not None:
            tracking.close_running_runs(f"tags.fingerprint = '{cell.fingerprint}'", self.tracking_uri,
                                        "worker died (no heartbeat); the cell was re-queued")
