"""Diversity / fidelity metrics on judge probabilities p(y|x), shape [n, C], natural log.

0·log 0 is taken as 0 (scipy.special.xlogy). In `label_kl` the reference
probabilities are clipped below at 1e-12 so that KL stays finite where the
generated side puts mass on a class the real side gives exactly 0.
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from ._arrays import check_probs

KL_EPS = 1e-12  # floor for the reference distribution in label_kl


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p_i || q_i) = Σ_c p_ic (log p_ic − log q_ic), with 0·log 0 = 0."""
    return (xlogy(p, p) - xlogy(p, q)).sum(axis=-1)


def intra_entropy(probs) -> float:
    """H(y|x) = mean_i −Σ_c p_ic log p_ic."""
    p = check_probs(probs, "probs")
    return float(np.mean(-xlogy(p, p).sum(axis=1)))


def inter_entropy(probs) -> float:
    """H(y) = −Σ_c p̄_c log p̄_c, with p̄ = mean_i p_i."""
    pbar = check_probs(probs, "probs").mean(axis=0)
    return float(-xlogy(pbar, pbar).sum())


def inception_score(probs) -> float:
    """IS = exp(mean_i KL(p_i || p̄)), with p̄ = mean_i p_i."""
    p = check_probs(probs, "probs")
    return float(np.exp(np.mean(_kl_rows(p, p.mean(axis=0, keepdims=True)))))


def label_kl(gen_probs, real_probs) -> float:
    """KL_{g,r} = mean_i KL(p_gen,i || p_real,i) over paired rows; p_real is clipped at 1e-12."""
    g = check_probs(gen_probs, "gen_probs")
    r = check_probs(real_probs, "real_probs")
    if g.shape != r.shape:
        raise ValueError(f"gen_probs/real_probs: shapes {g.shape} and {r.shape} differ; "
                         "rows must be paired and class counts equal")
    return float(np.mean(_kl_rows(g, np.clip(r, KL_EPS, None))))
