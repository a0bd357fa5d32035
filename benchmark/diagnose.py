"""Why a table's numbers are what they are: for every run of a committed table, the judge's accuracy
on the model's own posterior reconstructions (the ceiling of the swap protocol: a factor the
decoder cannot render cannot survive a swap) and how much the latents vary across sequences
(a collapsed z_{1:T} carries no dynamics). `python -m benchmark diagnose --table N`."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmark import tracking


@torch.inference_mode()
def reconstruction_report(model, judge, dataset, n: int | None = 256, batches: list[dict] | None = None,
                          posteriors: list | None = None, real: list[dict] | None = None) -> dict[str, float]:
    """Judge accuracy (%) per label family on real sequences and on their posterior-mean reconstructions,
    reconstruction MSE, and the across-sequence std of the posterior means of z_f and z_{1:T}; on the
    fixed subset of n sequences that the protocol scores (`protocol_subset`). `batches`, `posteriors`,
    `real` (the judge's probabilities on the real batches): when the caller has them already."""
    from benchmark.api import protocol_batches
    model.eval()
    dev = next(model.parameters()).device
    # the protocol's own fixed subset, so both read the same sequences
    batches = protocol_batches(dataset, n, dev) if batches is None else batches
    posteriors = [model.encode(b["x"], sample=False) for b in batches] if posteriors is None else posteriors
    sq, count, hits = 0.0, 0, {}
    for i, (b, post) in enumerate(zip(batches, posteriors)):
        rec = model.decode(post.zf_mean, post.zt_mean)
        sq, count = sq + float((rec - b["x"]).pow(2).sum()), count + rec.numel()
        if judge is None:  # speech: no judge
            continue
        for name, probs in (("real", judge.probs(b["x"]) if real is None else real[i]), ("recon", judge.probs(rec))):
            for f, p in probs.items():
                key = f"{name}_acc_{f}"
                hits[key] = hits.get(key, 0) + int((p.argmax(-1) == judge.targets(b, f)).sum())
    zf = torch.cat([p.zf_mean for p in posteriors]).float()
    zt = torch.cat([p.zt_mean for p in posteriors]).float()
    total = sum(len(b["x"]) for b in batches)
    return {"recon_mse": sq / count, "zf_std_across": float(zf.std(0).mean()), "zt_std_across": float(zt.std(0).mean()),
            **{k: 100.0 * v / total for k, v in hits.items()}}


@torch.no_grad()
def feature_eer(dataset) -> float:
    """EER (%) of the speaker trials with each utterance embedded as its mean input frame (no model)."""
    from metrics.protocols import utterance_eer
    t = dataset.tensors
    return utterance_eer(t["x"].float().mean(1), t["utterance"], t["static"][:, 0])


def regulariser_activity(history: dict[str, list[float]]) -> dict[str, float]:
    """What the self-supervision terms did during training, from their logged values (one batch every log_every
    steps; models without the term log nothing, and get nothing here). `scc_active_pct`: % of those batches whose
    SCC hinge max(D+ − D− + m, 0) was > 0 — only they give z_f a gradient, so near 0 the term is inert at its
    margin (the baseline logs the hinge at weight 0: how often it would have acted); `scc_mean`: its mean;
    `mi_of_ceiling`: mean MI estimate over its ceiling T·log M (≈ 1: saturated, it penalises sharp latents)."""
    out = {}
    scc = np.asarray(history.get("train/scc", []), float)
    if scc.size:
        out["scc_active_pct"] = 100.0 * float((scc > 0).mean())
        out["scc_mean"] = float(scc.mean())
    mi, ceiling = history.get("train/mi", []), history.get("train/mi_ceiling", [])
    if len(mi) and len(mi) == len(ceiling):
        out["mi_of_ceiling"] = float(np.mean(np.asarray(mi, float) / np.asarray(ceiling, float)))
    return out


REGULARISER_KEYS = ("train/scc", "train/mi", "train/mi_ceiling")  # what `regulariser_activity` reads


def logged_history(run_id: str, keys=REGULARISER_KEYS, uri: str | None = None) -> dict[str, list[float]] | None:
    """Each key's logged values in step order; None where the run was imported with some of them as their last
    value only (an export that did not carry those curves): a mean over one point would pass for the whole run."""
    from benchmark.transfer import LAST_ONLY_TAG
    client = tracking.get_client(uri)
    tags = client.get_run(run_id).data.tags
    if tracking.IMPORTED_ID_TAG in tags and LAST_ONLY_TAG not in tags:
        return None  # imported before train/ curves could travel: every one came as its last value
    if set(tags.get(LAST_ONLY_TAG, "").split(",")) & set(keys):
        return None
    return {k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys}


def restore_run(run_id: str, dataset: str | None = None, uri: str | None = None, judge: bool = True):
    """(config, test split, model in eval mode, its dataset's judge or None) of a finished run, for the scripts in
    results/diagnostics/; `dataset`: the one dataset the caller reads (another run's is a clear error)."""
    from benchmark.api import load_checkpoint, restore
    from benchmark.judges import get_judge
    cfg, test, model = restore(load_checkpoint(run_id, None, uri)[0])
    if dataset is not None and cfg.data.name != dataset:
        raise ValueError(f"run {run_id} trained on {cfg.data.name!r}; this diagnostic reads {dataset} runs only")
    found = get_judge(cfg.data.name, cfg.profile, cfg.data.data_dir, options=cfg.data.options, tracking_uri=uri,
                      progress=False, device="cpu")[0] if judge else None
    return cfg, test, model, found


REPORT_KEYS = ("recon_mse", "zf_std_across", "zt_std_across")  # then real_acc_*, recon_acc_* (reconstruction_report)


def logged_report(run) -> dict[str, float]:
    """`reconstruction_report`'s numbers as the run's evaluation logged them (eval/...; empty for a run evaluated
    before they were logged, or a model without an encoder), in the report's order."""
    m = {k[len("eval/"):]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    if "recon_mse" not in m:
        return {}
    families = sorted(k for k in m if k.startswith("real_acc_")) + sorted(k for k in m if k.startswith("recon_acc_"))
    return {k: m[k] for k in (*REPORT_KEYS, *families) if k in m}


def diagnose_table(number: int, results: str | Path = "results", tracking_uri: str | None = None) -> Path:
    from benchmark.api import load_checkpoint, restore
    from benchmark.config import RunConfig
    from benchmark.data import load_dataset
    from benchmark.judges import get_judge
    from benchmark.zoo import MODELS
    from metrics.protocols import PROTOCOLS
    results = Path(results)
    prov_path = results / f"table{number}_provenance.json"
    if not prov_path.is_file():
        raise FileNotFoundError(f"{prov_path}: no committed table {number}; run `python -m benchmark run --table "
                                f"{number}` first")
    prov = json.loads(prov_path.read_text())
    rows, t0, reference = [], time.perf_counter(), {}
    for job in prov["jobs"]:
        run = tracking.find_run(job["run_id"], tracking_uri)
        report = logged_report(run)  # the table's evaluation logged it
        test = None
        if not report and "encode" in getattr(MODELS.get(job["model"]).builder, "capabilities", ()):
            payload, _ = load_checkpoint(run_id=run.info.run_id, tracking_uri=tracking_uri)  # evaluated before that
            cfg, test, model = restore(payload)
            judge = None
            if cfg.data.name in PROTOCOLS:
                judge, _ = get_judge(cfg.data.name, cfg.profile, cfg.data.data_dir, options=cfg.data.options,
                                     tracking_uri=tracking_uri, progress=False)
            report = reconstruction_report(model, judge, test)
        if report:
            history = logged_history(run.info.run_id, uri=tracking_uri)
            rows.append({**job, **report, **(regulariser_activity(history) if history is not None else {})})
            print(f"[diagnose] {job['model']}/{job['dataset']} seed {job['seed']}", file=sys.stderr, flush=True)
        if job["dataset"] not in PROTOCOLS and job["dataset"] not in reference:  # speech: the raw-feature EER
            if test is None:
                cfg = RunConfig.from_dict(json.loads(Path(tracking.download_artifact(
                    run.info.run_id, "config.json", tracking_uri)).read_text()))
                test = load_dataset(cfg.data.name, "test", cfg.profile, cfg.data.data_dir, cfg.data.options)
            if "utterance" in test.tensors:
                reference[job["dataset"]] = feature_eer(test)
    out = {"table": number, "command": " ".join(["python -m benchmark"] + sys.argv[1:]), **tracking.git_info(),
           "table_git_commit": prov.get("git_commit"), "wall_time_s": time.perf_counter() - t0, "runs": rows,
           "feature_eer": reference}
    (results / f"table{number}_diagnostics.json").write_text(json.dumps(out, indent=2))
    md = diagnostics_markdown(number, out)
    path = results / f"table{number}_diagnostics.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _mean_sd(values: list[float], of: int | None = None) -> str:
    """mean ± std; "—" for no values, and "(n = k)" where only k of the row's `of` seeds have one."""
    if not values:
        return "—"
    part = f" (n = {len(values)})" if of is not None and len(values) < of else ""
    return f"{np.mean(values):.3g} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}{part}"


def diagnostics_markdown(number: int, out: dict) -> list[str]:
    """The diagnostics file's lines: one table per dataset (label families differ), mean ± std over seeds."""
    rows, reference = out["runs"], out.get("feature_eer", {})
    md = [f"# Table {number}: diagnostics", "",
          "Judge accuracy (%) on real test sequences and on the model's posterior-mean reconstructions of them "
          "(the swap protocol cannot beat the reconstruction; datasets with a judge), reconstruction MSE, and the "
          "across-sequence std "
          "of the posterior means (≈ 0: the latent ignores its input), as each run's table evaluation logged them (the "
          "same sequences the table scores; runs evaluated before these were logged: recomputed from the checkpoint "
          "on 256 test sequences). Mean ± std over seeds. Generated by "
          f"`{out['command']}` at commit {out.get('git_commit', '?')[:10]}.", ""]
    from experiments import below_floors, floors_warning
    if (w := floors_warning(below_floors(rows))) is not None:  # a mean over seeds must not hide one stuck run
        md[2:2] = [f"**{w}.**", ""]
    for d in dict.fromkeys(r["dataset"] for r in rows):  # one table per dataset: its label families differ
        rd = [r for r in rows if r["dataset"] == d]
        # every run's keys, in first-seen order: models without a term (MoCoGAN, FHVAE log no SCC) show "—" there
        keys = [k for k in dict.fromkeys(k for r in rd for k in r) if k not in ("dataset", "model", "seed", "run_id", "how")]
        md += [f"## {d}", "", "| model | " + " | ".join(keys) + " |", "|---" * (1 + len(keys)) + "|"]
        for m in dict.fromkeys(r["model"] for r in rd):
            g = [r for r in rd if r["model"] == m]
            cells = [_mean_sd([r[k] for r in g if k in r], len(g)) for k in keys]
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        md.append("")
    if any("scc_active_pct" in r or "mi_of_ceiling" in r for r in rows):
        md += ["Regularisers during training (from each run's logged train/ terms, one batch every log_every steps): "
               "`scc_active_pct` = % of batches whose SCC triplet hinge max(D(z_f, z_f⁺) − D(z_f, z_f⁻) + m, 0) was > 0 "
               "(only those give z_f a gradient; models that train without SCC log it at weight 0, i.e. how often it "
               "would have acted), `scc_mean` its mean, `mi_of_ceiling` = mean MI estimate / its ceiling T·log M. "
               "\"—\" or \"(n = k)\": seeds without these — models that log no SCC (MoCoGAN, FHVAE), and runs imported "
               "from an export that carried these terms as their last value only (`import-runs`).", ""]
    for d, eer in reference.items():
        md += ["", f"Reference for {d}: speaker verification EER of the input features themselves (each utterance "
                   f"embedded as its mean log-mel frame, the same cosine trials): {eer:.2f} %. A z_f EER below this "
                   "means the model's static code is a better speaker embedding than the raw spectrum."]
    return md
