"""Speaker verification: cosine trials over utterance embeddings and their equal error rate."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from ._arrays import as_numpy, check_finite


def equal_error_rate(scores, labels) -> float:
    """EER = (fpr + fnr)/2 at argmin_t |fnr − fpr| over sklearn roc_curve thresholds, fnr = 1 − tpr."""
    s, y = as_numpy(scores, "scores"), as_numpy(labels, "labels")
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"scores/labels: expected 1-D arrays, got shapes {s.shape} and {y.shape}")
    if s.size == 0:
        raise ValueError("scores: empty, no trials")
    if s.shape != y.shape:
        raise ValueError(f"scores/labels: lengths differ ({s.size} vs {y.size}); lengths must match")
    check_finite(s, "scores")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels: must be binary (0/1 or bool; 1 = target trial)")
    if np.unique(y).size < 2:
        raise ValueError("labels: only one class present; EER needs target and non-target trials")
    # drop_intermediate=False keeps every threshold: dropped collinear points can hold the EER crossing.
    fpr, tpr, _ = roc_curve(y.astype(np.int64), s, drop_intermediate=False)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def speaker_trials(embeddings, speaker_ids) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs i<j (np.triu_indices order): score = cos(e_i, e_j), label = int(id_i == id_j)."""
    e = as_numpy(embeddings, "embeddings")
    if e.ndim != 2:
        raise ValueError(f"embeddings: expected a 2-D [n, d] array, got shape {e.shape}")
    if e.shape[0] < 2 or e.shape[1] == 0:
        raise ValueError(f"embeddings: need at least 2 rows and 1 column, got shape {e.shape}")
    check_finite(e, "embeddings")
    if hasattr(speaker_ids, "detach"):
        speaker_ids = speaker_ids.detach().cpu().numpy()
    ids = np.asarray(speaker_ids)  # ints or strings: only compared for equality
    if ids.shape != (e.shape[0],):
        raise ValueError(f"speaker_ids: shape {ids.shape} does not match {e.shape[0]} embedding rows; "
                         "lengths must match")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"embeddings: zero-norm rows {zero[:10].tolist()}; cosine similarity is undefined")
    u = e / norms
    i, j = np.triu_indices(e.shape[0], 1)
    scores = (u @ u.T)[i, j]
    labels = (ids[i] == ids[j]).astype(np.int64)
    return scores, labels
