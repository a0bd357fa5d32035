"""Classification accuracy of judge outputs against integer targets."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._arrays import as_numpy, check_finite


def _correct(scores, targets, name: str = "probs_or_logits", tname: str = "targets") -> np.ndarray:
    """Boolean hits argmax(scores, -1) == targets, after validating shapes and values."""
    s, t = as_numpy(scores, name), as_numpy(targets, tname)
    if s.ndim < 2:
        raise ValueError(f"{name}: expected [..., C] class scores (ndim >= 2), got shape {s.shape}")
    if s.size == 0 or t.size == 0:
        raise ValueError(f"{name}/{tname}: empty input (shapes {s.shape} and {t.shape})")
    if t.shape != s.shape[:-1]:
        raise ValueError(f"{tname}: shape {t.shape} does not match {name} shape {s.shape} "
                         f"(expected {s.shape[:-1]}); lengths must match")
    check_finite(s, name)
    check_finite(t, tname)
    if np.any(t != np.round(t)):
        raise ValueError(f"{tname}: non-integer class labels")
    n_classes = s.shape[-1]
    if t.min() < 0 or t.max() >= n_classes:
        raise ValueError(f"{tname}: class labels out of range [0, {n_classes}) "
                         f"(min {int(t.min())}, max {int(t.max())})")
    return np.argmax(s, axis=-1) == t.astype(np.int64)


def accuracy(probs_or_logits, targets) -> float:
    """Acc = mean(argmax_c p[..., c] == target); probabilities and logits give the same value."""
    return float(np.mean(_correct(probs_or_logits, targets)))


def multi_label_accuracy(list_of_probs: Sequence, list_of_targets: Sequence) -> float:
    """Acc = mean_i prod_h [argmax p_h[i] == t_h[i]]: a row counts only if every head is correct."""
    if len(list_of_probs) != len(list_of_targets):
        raise ValueError(f"list_of_probs/list_of_targets: {len(list_of_probs)} heads of scores "
                         f"but {len(list_of_targets)} heads of targets; lengths must match")
    if len(list_of_probs) == 0:
        raise ValueError("list_of_probs: empty, need at least one head")
    hits = [_correct(p, t, f"list_of_probs[{h}]", f"list_of_targets[{h}]")
            for h, (p, t) in enumerate(zip(list_of_probs, list_of_targets))]
    shapes = {h.shape for h in hits}
    if len(shapes) != 1:
        raise ValueError(f"list_of_probs: heads have different numbers of rows {sorted(shapes)}; lengths must match")
    return float(np.mean(np.logical_and.reduce(hits)))
