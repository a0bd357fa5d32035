"""Input conversion and validation shared by the metric functions."""
from __future__ import annotations

import numpy as np

ROW_SUM_ATOL = 1e-3


def as_numpy(x, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor (any device/dtype, bf16 included) or list to float64 numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        t = x.detach().cpu()
        if t.is_complex():
            raise ValueError(f"{name}: complex tensors are not supported")
        x = (t.double() if t.is_floating_point() else t).numpy()  # bf16 has no numpy dtype
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert to a float array ({e})") from None
    return arr


def check_finite(a: np.ndarray, name: str) -> None:
    """Raise ValueError if `a` holds NaN or inf."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")


def check_probs(p, name: str) -> np.ndarray:
    """Validate a non-empty finite [n, C] array of non-negative rows summing to 1 (atol 1e-3); return it as float64."""
    p = as_numpy(p, name)
    if p.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [n, C] array of probabilities, got shape {p.shape}")
    if p.size == 0:
        raise ValueError(f"{name}: empty array (shape {p.shape})")
    check_finite(p, name)
    neg = np.flatnonzero((p < 0).any(axis=1))
    if neg.size:
        raise ValueError(f"{name}: row {neg[0]} has negative entries (min {p.min():.4g}); "
                         "pass probabilities, not logits")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_ATOL)
    if bad.size:
        raise ValueError(f"{name}: row {bad[0]} sums to {sums[bad[0]]:.4g}, expected 1 "
                         "(pass probabilities, not logits)")
    return p
