"""Loss terms of Eq. 9, each a pure function of tensors (unweighted, averaged over the batch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mean_q, logvar_q, mean_p=None, logvar_p=None):
    """KL(N(mean_q, e^logvar_q) || N(mean_p, e^logvar_p)) elementwise (standard normal p when omitted)."""
    if mean_p is None:
        return 0.5 * (mean_q.pow(2) + logvar_q.exp() - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mean_q - mean_p).pow(2)) / logvar_p.exp() - 1.0)


def kl_static(mean, logvar):
    """KL(q(z_f|x) || N(0, I)), summed over dimensions, mean over the batch."""
    return gaussian_kl(mean, logvar).sum(-1).mean()


def kl_dynamic(mean_q, logvar_q, mean_p, logvar_p):
    """Σ_t KL(q(z_t|x_≤t) || p(z_t|z_<t)), summed over dimensions and time, mean over the batch."""
    return gaussian_kl(mean_q, logvar_q, mean_p, logvar_p).sum((-1, -2)).mean()


def reconstruction(logits, x, kind: str = "gaussian", sigma: float = 1.0, squash: bool = True):
    """−log p(x|z) summed over pixels and frames, mean over the batch (constants dropped).

    gaussian: the decoder output is the mean (through a sigmoid for images, `squash`),
    σ fixed: ½‖x − x̂‖²/σ². bce: Bernoulli likelihood on the logits (images only)."""
    dims = tuple(range(1, x.dim()))
    if kind == "gaussian":
        mean = torch.sigmoid(logits) if squash else logits
        return (0.5 / sigma**2) * (mean.float() - x).pow(2).sum(dims).mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dims).mean()
    raise ValueError(f"loss.recon={kind!r}: expected 'gaussian' or 'bce'")


def triplet(anchor, positive, negative, margin: float = 1.0):
    """Eq. 6: max(D(a, p) − D(a, n) + m, 0) with plain Euclidean D, mean over the batch."""
    d_pos = (anchor - positive).pow(2).sum(-1).add(1e-12).sqrt()
    d_neg = (anchor - negative).pow(2).sum(-1).add(1e-12).sqrt()
    return F.relu(d_pos - d_neg + margin).mean()


def patch_targets(topk_idx, k: int, num_patches: int):
    """Soft targets over patches: mass spread evenly over the top-k patches. topk_idx: [..., ≥k]."""
    tgt = torch.zeros(*topk_idx.shape[:-1], num_patches, device=topk_idx.device)
    return tgt.scatter_(-1, topk_idx[..., :k], 1.0 / k)


def dfp_loss(pred, target, kind: str, k: int = 1):
    """L_DFP averaged over frames and batch: patch CE (video), MSE (landmark distances), BCE (silence)."""
    if kind == "patch":
        return F.cross_entropy(pred.flatten(0, 1).float(), patch_targets(target, k, pred.shape[-1]).flatten(0, 1))
    if kind == "regress":
        return F.mse_loss(pred.float(), target.float())
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(pred.squeeze(-1).float(), target.float())
    raise ValueError(f"unknown DFP kind {kind!r}; expected patch, regress or binary")


def log_density_matrix(z, mean, logvar):
    """log q(z_i | x_j) summed over the last dim for every pair: z, mean, logvar [..., M, D] -> [..., M, M]."""
    z, mean, logvar = z.unsqueeze(-2), mean.unsqueeze(-3), logvar.unsqueeze(-3)
    return (-0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))).sum(-1)


def mws_mutual_information(zf, zf_mean, zf_logvar, zt, zt_mean, zt_logvar):
    """Eq. 7 with the minibatch-weighted-sampling entropies of Eq. 8, summed over time.

    zf*: [M, d_f]; zt*: [M, T, d_t]. One logsumexp over [T, M, M]; no loop over t.
    Eq. 8's −log(NM) appears once in each of the three entropies, so Eq. 7 keeps a
    constant log N (no gradient) per step; we drop it so that the value reads as
    an MI (≈ 0 for independent latents): MI_t = E[lse(f+t) − lse(f) − lse(t)] + log M.
    """
    m = zf.shape[0]
    lf = log_density_matrix(zf.float(), zf_mean.float(), zf_logvar.float())  # [M, M]
    lt = log_density_matrix(zt.transpose(0, 1).float(), zt_mean.transpose(0, 1).float(),
                            zt_logvar.transpose(0, 1).float())  # [T, M, M]
    log_qf = torch.logsumexp(lf, -1)                # [M]
    log_qt = torch.logsumexp(lt, -1)                # [T, M]
    log_qft = torch.logsumexp(lf.unsqueeze(0) + lt, -1)  # [T, M]
    mi_t = (log_qft - log_qf.unsqueeze(0) - log_qt).mean(-1) + math.log(m)
    return mi_t.sum()
