"""Where does the judge misread smmnist reconstructions? Its accuracy on real test sequences and on their
posterior-mean reconstructions, binned by how much the two digits' boxes overlap (mean over frames, on the canvas they are
rendered on; box side benchmark.data.smmnist.DIGIT), and the misread digits by true class.

    python results/diagnostics/smmnist_overlap.py RUN_ID [OUT.md]   (from the repository root; env MLFLOW_TRACKING_URI)"""
import os, sys, time, torch, numpy as np
from benchmark.tracking import git_info
from benchmark.diagnose import restore_run
from benchmark.data.smmnist import DIGIT
run = sys.argv[1]
cfg, test, model, judge = restore_run(run, "smmnist", os.environ.get("MLFLOW_TRACKING_URI"))
t = test.tensors
pos = t["positions"].float()  # [N, T, 2 slots, 2 (y, x)]: top-left corners on the 64-pixel canvas (CANVAS)
d = (pos[:, :, 0] - pos[:, :, 1]).abs()  # [N, T, 2]
inter = (DIGIT - d).clamp(min=0).prod(-1) / DIGIT ** 2  # overlap fraction of a digit's DIGIT-pixel box per frame
ov = inter.mean(1).numpy()
hits = {"real": [], "recon": []}
with torch.inference_mode():
    for i in range(0, len(test), 250):
        b = test.batch(torch.arange(i, min(i + 250, len(test))))
        post = model.encode(b["x"], sample=False)
        rec = model.decode(post.zf_mean, post.zt_mean)
        for name, x in (("real", b["x"]), ("recon", rec)):
            p = judge.probs(x)
            hits[name].append(torch.stack([(p[f].argmax(-1) == judge.targets(b, f)) for f in sorted(p)], 1))
for k in hits: hits[k] = torch.cat(hits[k]).float().numpy()  # [N, 2]
bins = [0, 0.15, 0.3, 0.45, 1.01]
g = git_info()
lines = [f"# smmnist: the judge on reconstructions by digit overlap (run {run})", "",
         f"`python {' '.join(sys.argv)}` at commit {g['git_commit'][:10]} (dirty: {g['git_dirty']}), "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the run's final checkpoint, the whole test split "
         f"({len(test)} sequences), the cached judge of profile {cfg.profile}.", "",
         "| mean box overlap | sequences | real: digit1 / digit2 (%) | reconstructions: digit1 / digit2 (%) |",
         "|---|---|---|---|"]
fmt = lambda a: " / ".join(f"{v:.1f}" for v in 100 * a)
for lo, hi in zip(bins[:-1], bins[1:]):
    m = (ov >= lo) & (ov < hi)
    lines.append(f"| [{lo:.2f}, {min(hi, 1):.2f}{')' if hi < 1 else ']'} | {m.sum()} | {fmt(hits['real'][m].mean(0))} | {fmt(hits['recon'][m].mean(0))} |")
lines.append(f"| all | {len(ov)} | {fmt(hits['real'].mean(0))} | {fmt(hits['recon'].mean(0))} |")
y = t["static"].numpy()
wrong = hits["recon"] < 1
lines += ["", "Misread on reconstructions, by true class 0-9 (misread / sequences):", ""]
for slot, name in enumerate(("digit1", "digit2")):
    err, n = np.bincount(y[:, slot][wrong[:, slot]], minlength=10), np.bincount(y[:, slot], minlength=10)
    lines.append(f"- {name}: " + ", ".join(f"{c}: {e}/{k}" for c, (e, k) in enumerate(zip(err, n))))
text = "\n".join(lines) + "\n"
print(text)
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write(text)
