"""Which colours does a sprites model's decoder merge? Per static attribute, the judge's prediction on the posterior-mean
reconstructions of the protocol's test subset (`protocol_batches`, 256 sequences) against the true colour, as confusion
matrices with the palette's RGB, for each run given; only attributes below 100 % are printed in full. For those,
a second matrix asks where the colours merge: a linear probe (least squares on one-hot labels) fit on the posterior means
of z_f over the train split and read on the test subset. A probe that also confuses them means the encoder put both
colours at one code; a probe that tells them apart while the reconstructions do not points at the decoder.

    python results/diagnostics/sprites_confusion.py OUT.md RUN_ID [RUN_ID ...]   (repository root; env MLFLOW_TRACKING_URI)"""
import os
import sys
import time

import numpy as np
import torch

import benchmark.data.sprites as S
from benchmark.api import protocol_batches
from benchmark.data import load_dataset
from benchmark.diagnose import restore_run
from benchmark.tracking import git_info

PALETTES = {"skin": S.SKIN, "top": S.TOP, "pants": S.PANTS, "hair": S.HAIR}


def encode_zf(model, data, judge, batch=512):
    """z_f posterior means of a whole split and each attribute's labels."""
    zs, ys = [], {f: [] for f in PALETTES}
    with torch.inference_mode():
        for b in protocol_batches(data, len(data), torch.device("cpu"), batch_size=batch):
            zs.append(model.encode(b["x"], sample=False).zf_mean)
            for f in PALETTES:
                ys[f].append(judge.targets(b, f))
    return torch.cat(zs).numpy(), {f: torch.cat(y).numpy() for f, y in ys.items()}


def probe_confusion(z_fit, y_fit, z_read, y_read, classes):
    """Confusion of a least-squares linear probe (standardised z, one-hot targets) fit on (z_fit, y_fit)."""
    mu, sd = z_fit.mean(0), z_fit.std(0) + 1e-6
    design = lambda z: np.c_[(z - mu) / sd, np.ones(len(z))]
    w = np.linalg.lstsq(design(z_fit), np.eye(classes)[y_fit], rcond=None)[0]
    cm = np.zeros((classes, classes), int)
    np.add.at(cm, (y_read, (design(z_read) @ w).argmax(1)), 1)
    return cm

uri = os.environ.get("MLFLOW_TRACKING_URI")
out, runs = sys.argv[1], sys.argv[2:]
lines = ["# Sprites: colours merged on reconstructions", "",
         f"`python results/diagnostics/sprites_confusion.py {' '.join(sys.argv[1:])}` at commit "
         f"{git_info()['git_commit'][:10]} (dirty: {git_info()['git_dirty']}), "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Rows: true colour; columns: the judge's reading of "
         "the reconstruction.", ""]
for run in runs:
    cfg, test, model, judge = restore_run(run, "sprites", uri)
    cms = {f: np.zeros((len(p), len(p)), int) for f, p in PALETTES.items()}
    zf_test, y_test = [], {f: [] for f in PALETTES}
    with torch.inference_mode():
        for b in protocol_batches(test, 256, torch.device("cpu")):
            post = model.encode(b["x"], sample=False)
            probs = judge.probs(model.decode(post.zf_mean, post.zt_mean))
            zf_test.append(post.zf_mean)
            for f, cm in cms.items():
                y_test[f].append(judge.targets(b, f))
                np.add.at(cm, (judge.targets(b, f).numpy(), probs[f].argmax(-1).numpy()), 1)
    accs = {f: 100 * np.trace(cm) / cm.sum() for f, cm in cms.items()}
    probes = {}
    if min(accs.values()) < 100:
        train = load_dataset("sprites", "train", cfg.profile, cfg.data.data_dir, cfg.data.options)
        zf_train, y_train = encode_zf(model, train, judge)
        for f in (f for f, a in accs.items() if a < 100):
            probes[f] = probe_confusion(zf_train, y_train[f], torch.cat(zf_test).numpy(),
                                        torch.cat(y_test[f]).numpy(), len(PALETTES[f]))
    lines += [f"## {cfg.model.name}, seed {cfg.seed}, {cfg.train.max_steps:,} steps (run {run})", "",
              ", ".join(f"{f} {a:.1f} %" for f, a in accs.items()), ""]
    for f, cm in cms.items():
        if accs[f] < 100:
            pal = PALETTES[f]
            lines += [f"{f}:", "", "| true \\ read | " + " | ".join(f"{i} {tuple(c)}" for i, c in enumerate(pal)) + " |",
                      "|---" * (len(pal) + 1) + "|"]
            lines += [f"| {i} {tuple(pal[i])} | " + " | ".join(map(str, row)) + " |" for i, row in enumerate(cm)]
            lines.append("")
            pm = probes[f]
            lines += [f"{f}, linear probe on z_f (posterior means; fit on train, read on the same test sequences): "
                      f"{100 * np.trace(pm) / pm.sum():.1f} %", "",
                      "| true \\ probe | " + " | ".join(str(i) for i in range(len(pal))) + " |", "|---" * (len(pal) + 1) + "|"]
            lines += [f"| {i} | " + " | ".join(map(str, row)) + " |" for i, row in enumerate(pm)]
            lines.append("")
open(out, "w").write("\n".join(lines))
print(f"wrote {out}")
