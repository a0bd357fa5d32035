"""Would SCC (Eq. 6) act more on z_f samples than on posterior means? At a trained run's final weights, on 512 test
sequences of its dataset (the protocol's fixed subset): the triplet hinge max(D(z_f, z_f⁺) − D(z_f, z_f⁻) + m, 0) per
sequence with z_f⁺ from its time-shuffled frames and z_f⁻ from a random other sequence (as training draws them), once
on posterior means (what training uses) and once on one posterior sample of each; the share of sequences whose hinge
is > 0 (they alone give z_f a gradient), its mean, and the mean distances.

    python results/diagnostics/scc_hinge.py OUT.md RUN_ID [RUN_ID ...]   (repository root; env MLFLOW_TRACKING_URI)"""
import os
import sys
import time

import torch
import torch.nn.functional as F

from benchmark.api import protocol_batches
from benchmark.diagnose import restore_run
from benchmark.tracking import git_info
from models import augment

uri = os.environ.get("MLFLOW_TRACKING_URI")
out, runs = sys.argv[1], sys.argv[2:]
lines = ["# SCC's hinge on posterior means and on samples, at trained weights", "",
         f"`python results/diagnostics/scc_hinge.py {' '.join(sys.argv[1:])}` at commit {git_info()['git_commit'][:10]} "
         f"(dirty: {git_info()['git_dirty']}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. 512 test "
         "sequences, one random negative and one shuffle each (seed 0).", "",
         "| run | model | dataset | z_f | hinge > 0 (% of sequences) | mean hinge | mean D(z_f, z_f⁺) | mean D(z_f, z_f⁻) |",
         "|---|---|---|---|---|---|---|---|"]
for run in runs:
    cfg, test, model, _ = restore_run(run, uri=uri, judge=False)
    if not hasattr(model, "_static"):
        sys.exit(f"error: run {run} is a {cfg.model.name}; this diagnostic reads S3VAE-family runs (LSTM_f's z_f)")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        (b,) = protocol_batches(test, 512, torch.device("cpu"), batch_size=512)
        feats = model._features(b["x"])
        _, mu, logvar = model._static(feats)
        _, mu_pos, logvar_pos = model._static(augment.shuffle_frames(feats, generator=g))
        neg = torch.randperm(len(mu), generator=g)
        draw = lambda m, lv: m + (0.5 * lv).exp() * torch.randn(m.shape, generator=g)
        for kind, a, p in (("means", mu, mu_pos), ("samples", draw(mu, logvar), draw(mu_pos, logvar_pos))):
            d_pos, d_neg = (a - p).norm(dim=-1), (a - a[neg]).norm(dim=-1)
            h = F.relu(d_pos - d_neg + cfg.loss.scc_margin)
            lines.append(f"| {run[:8]} | {cfg.model.name} | {cfg.data.name} | {kind} | {100 * float((h > 0).float().mean()):.1f} | "
                         f"{float(h.mean()):.4f} | {float(d_pos.mean()):.2f} | {float(d_neg.mean()):.2f} |")
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}")
