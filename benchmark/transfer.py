"""Finished runs as a small JSON file and back: a table whose cells ran in several sittings on machines that do not
share an MLflow store (each sitting exports its finished cells; the next imports them and reuses them by
fingerprint, as if they had run there). What travels: tags (the fingerprint among them), params, the final value
of every metric, the full history of the `val/` and `sys/` metrics (the learning curves) and of the regulariser
terms `diagnose` reads, and the run's config text. Not the checkpoints: an imported run can be reported, diagnosed
from its logged evaluation and plotted, not trained further."""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from benchmark import tracking

FORMAT = "s3vae-benchmark-runs/1"
GZIP_MAGIC = b"\x1f\x8b"
HISTORY_PREFIXES = ("val/", "sys/")  # whole curves; other metrics (train/ every log_every steps): the last value
SOURCE_TAG = tracking.IMPORTED_ID_TAG  # the run's id in the store it was first exported from
LAST_ONLY_TAG = "imported_last_only"  # the imported train/ series that came as their last value only


def export_runs(filter_string: str | list[str], out: str | Path, uri: str | None = None) -> tuple[Path, int]:
    """Every FINISHED training run matching the MLflow filter (or any of a list of them), into `out` (JSON).
    Returns (path, count)."""
    uri = tracking.resolve_uri(uri)
    tracking.health_check(uri)
    client = tracking.get_client(uri)
    filters = [filter_string] if isinstance(filter_string, str) else list(filter_string)
    found = {r.info.run_id: r for f in filters for r in tracking.search_runs(f, uri)}  # a run matching two: once
    runs = [r for r in found.values() if r.info.status == "FINISHED" and r.data.tags.get("kind") == "train"]
    filter_string = " | ".join(filters)
    if not runs:
        raise FileNotFoundError(f"export-runs {filter_string!r}: no finished training run matches in {uri}")
    records = [_record(client, r) for r in runs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, "exported_from": uri, "filter": filter_string,
                       "exported_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                       **tracking.git_info(), "runs": records}, indent=1)
    # a table's learning curves reach megabytes: `.json.gz` keeps a committed export small (import reads either)
    if out.name.endswith(".gz"):
        out.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        out.write_text(text)
    return out, len(records)


def _whole(key: str) -> bool:
    from benchmark.diagnose import REGULARISER_KEYS
    return key.startswith(HISTORY_PREFIXES) or key in REGULARISER_KEYS


def _record(client, run) -> dict:
    metrics = {}
    for key, last in run.data.metrics.items():
        if _whole(key):
            metrics[key] = [[m.step, m.timestamp, m.value] for m in client.get_metric_history(run.info.run_id, key)]
        else:
            metrics[key] = [[0, run.info.end_time or 0, last]]
    try:
        config = Path(client.download_artifacts(run.info.run_id, "config.json")).read_text()
    except Exception:  # noqa: BLE001 - older runs have none; the params hold the same settings
        config = None
    # a run imported here with some series as their last value only passes that on (imported by code older than
    # the tag: every train/ series came that way)
    last_only = {k for k in metrics if k.startswith("train/") and not _whole(k)}
    tags = run.data.tags
    if SOURCE_TAG in tags and LAST_ONLY_TAG not in tags:
        last_only |= {k for k in metrics if k.startswith("train/")}
    last_only |= set(tags.get(LAST_ONLY_TAG, "").split(",")) - {""}
    return {"run_id": tracking.stable_id(run), "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "end_time": run.info.end_time,
            "tags": dict(run.data.tags), "params": dict(run.data.params), "metrics": metrics, "config": config,
            "last_only": sorted(last_only)}


def import_runs(paths, uri: str | None = None, experiment: str = tracking.DEFAULT_EXPERIMENT) -> dict[str, int]:
    """The runs of export files into the store, each once (a run imported before, or the store's own, is
    skipped). Returns {"imported": n, "skipped": m}."""
    from mlflow.entities import Metric, Param, RunTag
    uri = tracking.resolve_uri(uri)
    tracking.health_check(uri)
    client = tracking.get_client(uri)
    exp_id = tracking.experiment_id(client, uri, experiment)
    counts = {"imported": 0, "skipped": 0}
    for path in paths:
        data = _read(Path(path))
        for rec in data["runs"]:
            rid = rec["run_id"]
            if _present(client, rid, uri):
                counts["skipped"] += 1
                continue
            tags = {k: v for k, v in rec["tags"].items() if k != "mlflow.parentRunId"}  # that parent is not here
            # files written before "last_only" was recorded carried every train/ series as its last value
            last_only = rec.get("last_only", sorted(k for k in rec["metrics"] if k.startswith("train/")))
            tags |= {SOURCE_TAG: rid, "imported_from": f"{data['exported_from']} ({Path(path).name})",
                     "imported_parent_run_id": rec["tags"].get("mlflow.parentRunId", ""),
                     LAST_ONLY_TAG: ",".join(last_only)}
            run = client.create_run(exp_id, start_time=rec["start_time"], run_name=rec["run_name"])
            params = [Param(k, v) for k, v in rec["params"].items()]
            metrics = [Metric(k, v, ts, step) for k, pts in rec["metrics"].items() for step, ts, v in pts]
            run_tags = [RunTag(k, str(v)) for k, v in tags.items()]
            for kind, items, size in (("params", params, 100), ("tags", run_tags, 100), ("metrics", metrics, 1000)):
                for i in range(0, len(items), size):  # MLflow's per-batch limits
                    client.log_batch(run.info.run_id, **{kind: items[i:i + size]})
            if rec.get("config"):
                client.log_text(run.info.run_id, rec["config"], "config.json")
            client.set_terminated(run.info.run_id, rec["status"], end_time=rec["end_time"])
            counts["imported"] += 1
    return counts


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"import-runs {path}: no such file")
    raw = path.read_bytes()
    try:
        data = json.loads(gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
        raise ValueError(f"import-runs {path}: not JSON or gzipped JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"import-runs {path}: expected a file written by `export-runs` (format {FORMAT!r})")
    return data


def _present(client, run_id: str, uri: str) -> bool:
    """The run is in this store already: as itself (exported from here) or imported before."""
    from mlflow.exceptions import MlflowException
    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        pass
    experiments = tuple(tracking.EXPERIMENTS)
    return bool(tracking.search_runs(f"tags.{SOURCE_TAG} = '{run_id}'", uri, experiments))
