"""Why the action side of sprites' protocol is low: the judge's action accuracy on generations that keep a test
sequence's z_{1:T} (posterior means) and take z_f from (a) the prior N(0, I) — the protocol's action side —,
(b) the posterior mean of another test sequence (a swap: a z_f the decoder has seen the like of), (c) a Gaussian with
the per-dimension mean and std of the test posterior means (the aggregate posterior's moments). (a) far below (b)
says the prior's samples fall where the decoder was never trained (a prior/posterior mismatch), not that z_{1:T}
lost the action. Target: the judge's reading of the real sequence, as in the protocol; 512 test sequences, seed 0.
Sprites' 9 action classes are 3 movements x 3 facing directions, and the facing direction is the same in every frame:
so each is also split into movement and direction, read against the z_{1:T} source and (for b) the z_f source.

    python results/diagnostics/action_side.py OUT.md RUN_ID [RUN_ID ...]   (repository root; env MLFLOW_TRACKING_URI)"""
import os
import sys
import time

import torch

from benchmark.api import protocol_batches
from benchmark.diagnose import restore_run
from benchmark.tracking import git_info

uri = os.environ.get("MLFLOW_TRACKING_URI")
out, runs = sys.argv[1], sys.argv[2:]
lines = ["# Sprites' action side: where z_f comes from", "",
         f"`python results/diagnostics/action_side.py {' '.join(sys.argv[1:])}` at commit {git_info()['git_commit'][:10]} "
         f"(dirty: {git_info()['git_dirty']}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
         "Accuracy (%) of the judge's action on the generations against the z_{1:T} source's action (9 classes), then its "
         "movement / direction parts; for (b) also against the z_f source's.", "",
         "| run | model | seed | steps | (a) z_f ~ N(0, I) | (b) z_f of another sequence | (c) z_f ~ N(mean, std of posteriors) | "
         "(a) movement / direction | (b) movement / direction | (b) vs the z_f source: movement / direction |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for run in runs:
    cfg, test, model, judge = restore_run(run, "sprites", uri)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        batches = protocol_batches(test, 512, torch.device("cpu"))
        posts = [model.encode(b["x"], sample=False) for b in batches]
        zf = torch.cat([p.zf_mean for p in posts])
        mu, sd = zf.mean(0), zf.std(0)
        real = torch.cat([judge.probs(b["x"])["action"].argmax(-1) for b in batches])
        other = torch.randint(len(zf), (len(zf),), generator=g)
        sources = {"a": torch.randn(zf.shape, generator=g), "b": zf[other], "c": mu + sd * torch.randn(zf.shape, generator=g)}
        zt = torch.cat([p.zt_mean for p in posts])
        read = {k: torch.cat([judge.probs(model.decode(z[i:i + 256], zt[i:i + 256]))["action"].argmax(-1)
                              for i in range(0, len(zt), 256)]) for k, z in sources.items()}
    pct = lambda a, b: 100.0 * float((a == b).float().mean())
    parts = lambda a, b: f"{pct(a // 3, b // 3):.1f} / {pct(a % 3, b % 3):.1f}"
    lines.append(f"| {run[:8]} | {cfg.model.name} | {cfg.seed} | {cfg.train.max_steps:,} | {pct(read['a'], real):.1f} | "
                 f"{pct(read['b'], real):.1f} | {pct(read['c'], real):.1f} | {parts(read['a'], real)} | "
                 f"{parts(read['b'], real)} | {parts(read['b'], real[other])} |")
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}")
