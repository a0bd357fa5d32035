"""`python -m benchmark {list,data,train,bench}`; every failure a user can cause ends in one clear line."""
from __future__ import annotations

import argparse
import json
import sys


def table_id(s: str):
    """Tables are numbered 1-3; `1x` is Table 1 with extra competitors (C-DSVAE)."""
    return int(s) if s.isdigit() else s


def _sigmas(text: str) -> list[float]:
    """`--blur 0.5,1,1.5` -> [0.5, 1.0, 1.5]; a clear error for anything but σ ≥ 0 in pixels."""
    try:
        sigmas = [float(s) for s in text.split(",")]
    except ValueError:
        sigmas = []
    if not sigmas or not all(0 <= s < float("inf") for s in sigmas):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated blur σ in pixels ≥ 0, e.g. 0.5,1,1.5")
    return sigmas


def _common(p, model=True):
    if model:
        p.add_argument("--model", default="s3vae", help="registered model (see `list`)")
    p.add_argument("--dataset", default="sprites", help="registered dataset (see `list`)")
    p.add_argument("--profile", default="auto", help="smoke | cpu | paper | auto (paper on CUDA, else cpu)")
    p.add_argument("--data-dir", default=None, help="real dataset files (default: embedded data)")


def _config(args):
    from benchmark.config import resolve_config
    profile = get_profile_name(args.profile)
    return resolve_config(args.model, args.dataset, profile, getattr(args, "seed", 0), _cli_overrides(args))


def _cli_overrides(args) -> dict:
    """A command's -o KEY=VALUE items, with --data-dir / --device / --precision as the keys they set."""
    from benchmark.config import parse_overrides
    overrides = parse_overrides(getattr(args, "override", None))
    for flag, key in (("data_dir", "data.data_dir"), ("device", "train.device"), ("precision", "train.precision")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    return overrides


def cmd_list(args):
    from benchmark.api import model_table
    from benchmark.data import _import_all
    from benchmark.profiles import PROFILES
    from benchmark.registry import DATASETS
    _import_all()
    print("models:")
    for r in model_table():
        print(f"  {r['name']:<12} [{r['capabilities']}] {r['doc']}" + (f"  fixes {r['fixes']}" if r["fixes"] else ""))
    print("datasets:")
    for name, e in DATASETS.items():
        print(f"  {name:<12} {e.doc}")
    print("profiles:")
    for name, p in PROFILES.items():
        print(f"  {name:<12} {p.doc}; data {p.data}")


def cmd_data(args):
    from pathlib import Path

    from benchmark.data import load_dataset
    from benchmark.visuals import dataset_preview
    profile = get_profile_name(args.profile)
    for split in ("train", "val", "test"):
        ds = load_dataset(args.dataset, split, profile, args.data_dir)
        print(f"{args.dataset}/{split}: {len(ds)} sequences, x {tuple(ds.tensors['x'].shape[1:])}, "
              f"fingerprint {ds.fingerprint}")
    print(json.dumps(ds.info.__dict__, default=str))
    for path in dataset_preview(ds, Path(args.out) / f"{args.dataset}-{profile}"):
        print(f"wrote {path}")


def _continued_config(args, checkpoint: str):
    """The config a continued run goes on with: the one it trained under (its checkpoint's), with only this
    command's -o / --precision / --device / --data-dir over it. Not the profile as it is now: a profile changed
    since would tag the run with a fingerprint of settings it never trained under."""
    from benchmark.api import load_checkpoint
    from benchmark.config import RunConfig, set_dotted
    cfg = RunConfig.from_dict(load_checkpoint(checkpoint=checkpoint)[0]["config"])
    if (args.model, args.dataset) != (cfg.model.name, cfg.data.name):
        raise ValueError(f"--continue: the run trained {cfg.model.name} on {cfg.data.name} (profile "
                         f"{cfg.profile}), not --model {args.model} --dataset {args.dataset}; give the run's")
    for k, v in _cli_overrides(args).items():
        set_dotted(cfg, k, v)
    return cfg


def cmd_train(args):
    from benchmark.api import train
    from benchmark.config import parse_overrides
    resume, run_id = args.resume, None
    if args.continue_run:  # the same MLflow run goes on, so its learning curves stay one line
        from benchmark import tracking
        from benchmark.api import resume_point
        run = tracking.find_run(args.continue_run, args.tracking_uri)
        resume, run_id = resume_point(run, args.tracking_uri), run.info.run_id
        if resume is None:
            raise SystemExit(f"error: --continue {run_id}: no last.pt or final.pt in the run's checkpoint_dir "
                             f"{run.data.tags.get('checkpoint_dir')!r} (relative to where it trained) nor among "
                             "its MLflow artifacts (checkpoints/)")
        cfg = _continued_config(args, resume)
    else:
        cfg = _config(args)
    summary = train(cfg, resume=resume, tracking_uri=args.tracking_uri, run_id=run_id,
                    extra_tags=parse_overrides(args.tag) if args.tag else None)
    print(json.dumps(summary, indent=2))


def cmd_bench(args):
    from benchmark.api import bench_suite
    def config(m, d):
        return _config(argparse.Namespace(**{**vars(args), "model": m, "dataset": d}))
    res = bench_suite(args.model.split(","), args.dataset.split(","), config, steps=args.steps, warmup=args.warmup,
                      out=args.out, command=" ".join(["python -m benchmark"] + sys.argv[1:]), evaluation=args.eval,
                      profile_ops=args.profile_ops, max_sequences=args.max_sequences)
    print(res["markdown"])


def cmd_judge(args):
    from benchmark.data import load_dataset
    from benchmark.judges import blur_robustness, get_judge
    judge, report = get_judge(args.dataset, get_profile_name(args.profile), args.data_dir, force=args.force,
                              tracking_uri=args.tracking_uri, device=args.device or "auto")
    print(json.dumps(report, indent=2))
    if args.blur:
        test = load_dataset(args.dataset, "test", get_profile_name(args.profile), args.data_dir)
        acc = blur_robustness(judge, test, [0.0] + args.blur)
        heads = list(acc[0.0])
        print(f"\n{args.dataset} judge {report['fingerprint']} on real test frames blurred by σ px:\n")
        print("| σ (px) | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
        for s, a in acc.items():
            print(f"| {s:g} | " + " | ".join(f"{a[h]:.1f}" for h in heads) + " |")


def cmd_eval(args):
    from benchmark.api import evaluate
    res = evaluate(run_id=args.run, checkpoint=args.checkpoint, tracking_uri=args.tracking_uri,
                   passes=args.passes, seed=args.seed, device=args.device or "auto",
                   max_sequences=args.max_sequences)
    print(json.dumps({k: res[k] for k in ("run_id", "model", "dataset", "metrics", "eval_wall_time_s") if k in res},
                     indent=2))


def cmd_run(args):
    from benchmark.tables import format_plan, plan_table, run_table
    if args.plan:
        plan = plan_table(args.table, get_profile_name(args.profile), args.seeds, args.datasets, args.models,
                          args.tracking_uri, args.data_dir, args.data_option, args.precision)
        print(format_plan(plan, args.table))
        return
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: expected 1 or more processes")
    res = run_table(args.table, get_profile_name(args.profile), args.seeds, args.datasets, args.models, args.out,
                    args.tracking_uri, args.force, args.passes, queue_url=args.queue, workers=args.workers,
                    gpus=args.gpus.split(",") if args.gpus else None, worker_only=args.worker,
                    heartbeat_s=args.heartbeat, grace_s=args.grace, launcher=args.launcher,
                    data_dirs=args.data_dir, data_options=args.data_option, precision=args.precision,
                    stop_after_min=args.stop_after, queue_name=args.queue_name, parent_run_id=args.parent_run)
    print(json.dumps({k: res[k] for k in ("files", "wall_time_s", "parent_run_id")}, indent=2))


def cmd_report(args):
    if (args.table is None) == (args.study is None):
        raise ValueError("report: give exactly one of --table N or --study NAME")
    if args.study:
        from benchmark.sweep import report_study
        summary = report_study(args.study, args.storage, args.out or "results/sweeps", args.tracking_uri)
        print(json.dumps({k: summary.get(k) for k in ("study", "states", "best", "rerun", "files")}, indent=2,
                         default=str))
        return
    from benchmark.tables import report_table
    for f in report_table(args.table, args.out or "results", args.tracking_uri, args.run):
        print(f"wrote {f}")


def cmd_sweep(args):
    from benchmark.config import parse_overrides
    from benchmark.sweep import SweepSpec, run_sweep
    spec = SweepSpec(space=args.space, dataset=args.dataset, trials=args.trials, profile=get_profile_name(args.profile),
                     storage=args.storage, study=args.study, tracking_uri=args.tracking_uri, seed=args.seed,
                     overrides=parse_overrides(args.override), data_dir=args.data_dir, passes=args.passes,
                     heartbeat_s=args.heartbeat, grace_s=args.grace,
                     gpus=args.gpus.split(",") if args.gpus else None)
    summary = run_sweep(spec, workers=args.workers, out=args.out)
    print(json.dumps({k: summary.get(k) for k in ("study", "states", "best", "rerun", "study_wall_time_s",
                                                  "command_wall_time_s", "files")}, indent=2, default=str))


def cmd_diagnose(args):
    from benchmark.diagnose import diagnose_table
    print(f"wrote {diagnose_table(args.table, args.results, args.tracking_uri)}")


def cmd_export_runs(args):
    from benchmark.transfer import export_runs
    if (args.table is None) == (args.filter is None):
        raise ValueError("export-runs: give exactly one of --table N or --filter \"tags.study = 'NAME'\"")
    from benchmark.tables import cell_tag
    # a table's cells: the runs it trained, and those it reused from another table (same fingerprint)
    where = [args.filter] if args.filter else [f"tags.table = '{args.table}'", f"tags.{cell_tag(args.table)} = 'true'"]
    path, n = export_runs(where, args.out, args.tracking_uri)
    print(f"wrote {path} ({n} runs)")


def cmd_import_runs(args):
    from benchmark.transfer import import_runs
    c = import_runs(args.files, args.tracking_uri)
    print(f"imported {c['imported']} runs, skipped {c['skipped']} already in the store")


def cmd_claims(args):
    from benchmark.claims import write_claims
    print(f"wrote {write_claims(args.results)}")


def cmd_leaderboard(args):
    from benchmark.leaderboard import write_leaderboard
    for f in write_leaderboard(args.results, args.out, args.tracking_uri):
        print(f"wrote {f}")


def cmd_curves(args):
    from benchmark.curves import filtered_curves, parse_targets, table_curves
    command = " ".join(["python -m benchmark"] + sys.argv[1:])
    targets = parse_targets(args.until) or None
    if (args.table is None) == (args.filter is None):
        raise ValueError("curves: give exactly one of --table N or --filter \"tags.study = 'NAME'\"")
    if args.table is not None:
        files = table_curves(args.table, args.out, args.tracking_uri, command, targets)
    else:
        if not args.name:
            raise ValueError("curves --filter: also give --name (the output files' stem)")
        files = filtered_curves(args.filter, args.name, args.hue, args.out, args.tracking_uri, command, targets)
    for f in files:
        print(f"wrote {f}")


def cmd_migrate_checkpoint(args):
    from benchmark.safeload import migrate_checkpoint
    for path in args.paths:
        print(f"{migrate_checkpoint(path, trust=args.trust)}: rewritten as tensors and plain values")


def get_profile_name(name):
    """The profile a command runs under; `auto`'s choice is said, whatever the command."""
    from benchmark.profiles import get_profile
    profile = get_profile(name).name
    if name == "auto":
        print(f"profile: {profile} (auto)", file=sys.stderr)
    return profile


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="models with capabilities, datasets, profiles").set_defaults(fn=cmd_list)
    p = sub.add_parser("data", help="build/cache a dataset and print its splits")
    _common(p, model=False)
    p.add_argument("--out", default="results/datasets", help="where the sample grid (and GIF) go")
    p.set_defaults(fn=cmd_data)
    p = sub.add_parser("train", help="train one model on one dataset (tracked in MLflow)")
    _common(p)
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="e.g. -o loss.lambda_scc=100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="checkpoint to continue from (in a new MLflow run)")
    p.add_argument("--continue", dest="continue_run", default=None, metavar="RUN_ID",
                   help="continue an interrupted (or finished, with a larger train.max_steps) run from its last "
                        "checkpoint, in the same MLflow run")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE",
                   help="MLflow tag of the run, e.g. --tag study=likelihoods (select runs by it in `curves`)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"])
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default sqlite:///mlruns.db or $MLFLOW_TRACKING_URI)")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("bench", help="training throughput, FLOP/s, peak memory, parameter count")
    _common(p)
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE")
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=6, help="timed steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None, help="write the measurements + provenance as JSON and a markdown table "
                                               "(several models/datasets: comma-separated --model / --dataset)")
    p.add_argument("--eval", action="store_true", help="also time one whole evaluation (untrained model and judge: "
                                                       "speed does not depend on the weights)")
    p.add_argument("--max-sequences", type=int, default=None,
                   help="sequences the --eval row scores (default: the profile's cap; 0 = the whole test split)")
    p.add_argument("--profile-ops", type=int, default=0, metavar="N",
                   help="print the N operators with the most self time (torch.profiler) per row")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("judge", help="train (or load from cache) the judge classifier of a dataset")
    _common(p, model=False)
    p.add_argument("--force", action="store_true", help="retrain even if a cached judge matches")
    p.add_argument("--blur", type=_sigmas, default=None, metavar="SIGMAS",
                   help="also print its test accuracy on real frames blurred by each σ (px), e.g. 0.5,1,1.5")
    p.add_argument("--device", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_judge)
    p = sub.add_parser("eval", help="run the dataset's evaluation protocols on a trained model")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", default=None, help="MLflow run id of a training run")
    g.add_argument("--checkpoint", default=None, help="a checkpoint file")
    p.add_argument("--passes", type=int, default=3, help="sampling passes (their mean is the value)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-sequences", type=int, default=None,
                   help="score a fixed subset of N test sequences (0: all; default: the profile's cap)")
    p.add_argument("--device", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("run", help="regenerate a table of the paper: train, judge, evaluate, write results/")
    p.add_argument("--table", type=table_id, required=True, help="1, 2, 3, or 1x (table 1 + C-DSVAE)")
    p.add_argument("--profile", default="auto", help="smoke | cpu | paper | auto (paper on CUDA, else cpu)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per cell")
    p.add_argument("--datasets", nargs="+", default=None, help="subset (or, for table 2, more) datasets")
    p.add_argument("--models", nargs="+", default=None, help="registered models to add to the table")
    p.add_argument("--passes", type=int, default=3, help="sampling passes per evaluation")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                   help="a sitting of this length: no cell is started that would end later at this process's pace "
                        "so far; the same command goes on where it stopped")
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"],
                   help="every run's (default auto: bf16 where the CPU/GPU has bf16 units); part of each cell's "
                        "fingerprint, so a table whose sittings run on different CPUs pins one (fp32)")
    p.add_argument("--out", default="results", help="where the table files go (real data: a folder of its own)")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: print each cell's state in the store (done / evaluate / started / train) and "
                        "the training hours left at the store's measured paces, for the same options")
    p.add_argument("--data-dir", action="append", metavar="DATASET=PATH",
                   help="that dataset's real files, e.g. sprites=/data/sprites (repeatable; default: embedded data)")
    p.add_argument("--data-option", action="append", metavar="DATASET.KEY=VALUE",
                   help="that dataset's own setting, as `train -o data.KEY=VALUE`, e.g. speech.split=core (repeatable)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--force", action="store_true", help="retrain even when finished runs match")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine taking cells from the shared queue (CPU cores are split)")
    p.add_argument("--gpus", default=None, help="e.g. 0,1,2,3: one GPU per worker (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--launcher", default="processes", choices=["processes", "slurm", "submitit-local"],
                   help="how --workers run: processes here (this one is one of them), or a Slurm array job of "
                        "--workers tasks with one GPU each via submitit (this process waits, then writes the table)")
    p.add_argument("--queue", default=None, help="the cell queue's Optuna storage (default sqlite:///optuna.db; "
                                                 "postgresql://... to share cells between machines)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running cell's heartbeats")
    p.add_argument("--grace", type=int, default=60,
                   help="seconds without a heartbeat before a cell's worker counts as dead and the cell is re-queued")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a helper started by --workers
    p.add_argument("--queue-name", default=None, help=argparse.SUPPRESS)  # ... and the queue its launcher made
    p.add_argument("--parent-run", default=None, help=argparse.SUPPRESS)  # ... and the table run it nests under
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("report", help="rebuild a table's files from MLflow alone, or a sweep's from its study")
    p.add_argument("--table", type=table_id, default=None)
    p.add_argument("--study", default=None, help="an Optuna study name (see `sweep`)")
    p.add_argument("--run", default=None, metavar="PARENT_RUN_ID",
                   help="--table: this table run (default: the newest finished one on the embedded data)")
    p.add_argument("--storage", default="sqlite:///optuna.db", help="the study's SQLAlchemy URL")
    p.add_argument("--out", default=None, help="default results/ (tables), results/sweeps/ (studies)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("diagnose", help="judge accuracy on reconstructions and latent spread for a table's runs")
    p.add_argument("--table", type=table_id, required=True)
    p.add_argument("--results", default="results")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_diagnose)
    p = sub.add_parser("export-runs", help="finished training runs (a table's cells) as JSON, for a store elsewhere")
    p.add_argument("--table", type=table_id, default=None, help="the cells of table N (tags.table)")
    p.add_argument("--filter", default=None, help="any MLflow filter, e.g. \"tags.study = 'x'\"")
    p.add_argument("--out", required=True, help="the JSON file to write (e.g. results/runs/table2-cpu.json; "
                                               "ending in .gz: gzipped)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_export_runs)
    p = sub.add_parser("import-runs", help="runs of export-runs files into this store (then `run --table N` "
                                           "reuses them by fingerprint)")
    p.add_argument("files", nargs="+")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_import_runs)
    p = sub.add_parser("curves", help="learning curves (val/* metrics vs steps and time) of a table or of any runs")
    p.add_argument("--table", type=table_id, default=None, help="the newest finished run of table N")
    p.add_argument("--filter", default=None, help="MLflow filter over training runs, e.g. \"tags.study = 'lik'\"")
    p.add_argument("--name", default=None, help="output stem for --filter (results/curves/NAME.png, .csv, .md, .json)")
    p.add_argument("--hue", default="model", help="one line per value of this tag or param (e.g. loss.recon; several: model,loss.recon)")
    p.add_argument("--until", action="append", metavar="METRIC=VALUE",
                   help="report the steps and training minutes to reach a val value, e.g. acc=80 or eer_z_f=20 "
                        "(repeatable; default: the dataset's learning floors on recon_acc_*)")
    p.add_argument("--out", default="results/curves")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_curves)
    p = sub.add_parser("claims", help="test the paper's claims on the committed tables (Welch's t over seeds)")
    p.add_argument("--results", default="results")
    p.set_defaults(fn=cmd_claims)
    p = sub.add_parser("leaderboard", help="rank every model per dataset and metric from the committed tables "
                                           "(results/leaderboard.{md,csv,png})")
    p.add_argument("--results", default="results", help="where the tableN.csv + tableN_provenance.json are")
    p.add_argument("--out", default=None, help="where the leaderboard files go (default: --results)")
    p.add_argument("--tracking-uri", default=None,
                   help="optional: check the run ids against this MLflow store (http(s): links in the markdown)")
    p.set_defaults(fn=cmd_leaderboard)
    p = sub.add_parser("sweep", help="Optuna study over a search space (shared RDB storage, many workers)")
    p.add_argument("--space", required=True, help="a search space of experiments/sweeps/ (e.g. lambdas)")
    _common(p, model=False)
    p.add_argument("--trials", type=int, required=True, help="study-wide number of finished trials")
    p.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    p.add_argument("--storage", default="sqlite:///optuna.db", help="SQLAlchemy URL, e.g. postgresql://u:p@host/db")
    p.add_argument("--study", default=None, help="study name (default SPACE-DATASET-PROFILE); same name joins it")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial")
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="fixed for every trial")
    p.add_argument("--passes", type=int, default=3, help="sampling passes per val evaluation")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    p.add_argument("--gpus", default=None, help="e.g. 0,1,2,3: one GPU per worker (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--grace", type=int, default=60, help="seconds without heartbeat before a trial counts as dead")
    p.add_argument("--out", default="results/sweeps")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("migrate-checkpoint", help="rewrite checkpoints from before data-only loading (trusted files only)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--trust", action="store_true", help="you know where the file comes from: reading the old format "
                                                        "unpickles it, which can run code")
    p.set_defaults(fn=cmd_migrate_checkpoint)
    args = ap.parse_args(argv)
    from benchmark.trainer import TrainingError
    from benchmark.sweep import SweepError
    from benchmark.tracking import TrackingError
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("error: interrupted (checkpoints saved so far are kept)", file=sys.stderr)
        return 130
    except (KeyError, ValueError, FileNotFoundError, TrainingError, TrackingError, SweepError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional extra that this command needs: one line that names it, no traceback
        print(f"error: {e}" + ("" if "pip install" in str(e) else
                               " (an optional dependency: see the extras in pyproject.toml)"), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
