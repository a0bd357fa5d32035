"""Does sprites' DFP target carry the facing direction? The dynamic-factor-prediction labels (PROTOCOLS: top-k
optical-flow patches of a 4x4 grid per frame) are what S3VAE asks z_t to predict; the paper credits them for
keeping the direction in z_{1:T} (its Fig. 4 discussion). Sprites' 9 actions are 3 movements x 3 facing
directions (action // 3, action % 3). A linear probe (metrics.probes, the harness's own) reads movement, direction
and action from the labels alone: one-hot patch indices per frame (the DFP target's content, in time order) and
pooled over frames (which patches move, not when). Trained on the train split, scored on the test split. If the
labels predict the direction, a model whose decoder reads the direction from z_f has not lost it for want of a
signal; the question is then where the decoder takes it from (action_side.py).

    python results/diagnostics/dfp_direction.py OUT.md [PROFILE]   (repository root; env BENCHMARK_CACHE)"""
import sys
import time

import numpy as np

from benchmark.data import load_dataset
from benchmark.tracking import git_info
from metrics.probes import probe_accuracy

out, profile = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "cpu")


def features(ds, k: int) -> dict[str, np.ndarray]:
    """One-hot [N, T, cells] of each frame's top-k flow patches: flattened over time, and summed over frames."""
    dfp = ds.tensors["dfp"].numpy()[..., :k]
    cells = int(ds.info.dfp["dim"])
    onehot = np.zeros((*dfp.shape[:2], cells))
    for j in range(k):
        np.put_along_axis(onehot, dfp[..., j:j + 1], 1.0, axis=2)
    return {"per frame": onehot.reshape(len(onehot), -1), "pooled over frames": onehot.sum(1)}


train, test = load_dataset("sprites", "train", profile), load_dataset("sprites", "test", profile)
action = {s: d.tensors["dynamic"][:, 0].numpy() for s, d in (("train", train), ("test", test))}
labels = {s: {"movement": a // 3, "direction": a % 3, "action": a} for s, a in action.items()}
majority = {f: 100.0 * np.bincount(y).max() / len(y) for f, y in labels["test"].items()}
lines = ["# Sprites: does the DFP target carry the facing direction?", "",
         f"`python results/diagnostics/dfp_direction.py {' '.join(sys.argv[1:])}` at commit "
         f"{git_info()['git_commit'][:10]} (dirty: {git_info()['git_dirty']}), "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; profile {profile}: {len(train)} train / {len(test)} "
         f"test sequences, {train.info.dfp['grid']}x{train.info.dfp['grid']} patch grid.", "",
         "Test accuracy (%) of a linear probe (multinomial logistic regression, `metrics.probes.probe_accuracy`) "
         "reading each factor from the DFP labels alone. Majority class on test: " +
         ", ".join(f"{f} {v:.1f}" for f, v in majority.items()) + ".", "",
         "| top-k patches | features | movement (3) | direction (3) | action (9) |", "|---|---|---|---|---|"]
for k in range(1, int(train.info.dfp["topk_stored"]) + 1):
    ftr, fte = features(train, k), features(test, k)
    for name in ftr:
        acc = {f: probe_accuracy(ftr[name], labels["train"][f], fte[name], labels["test"][f]) for f in labels["test"]}
        lines.append(f"| {k} | {name} | {acc['movement']:.1f} | {acc['direction']:.1f} | {acc['action']:.1f} |")
        print(lines[-1], flush=True)
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}")
