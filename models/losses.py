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


# −log p(x|z) per element, each a pure function of (decoder output, data, log σ or None); the
# decoder output is the mean for the Gaussians (after a sigmoid for images) and logits for bce
def _gaussian_nll(mean, x, log_sigma):
    """Full Gaussian negative log-likelihood per element, constants included."""
    return 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI


RECON_KINDS = ("gaussian", "gaussian-learned", "gaussian-optimal", "bce")
MIN_LOG_SIGMA = math.log(1e-3)  # σ floor of the learned/optimal likelihoods: a perfect pixel is not worth ∞


def reconstruction(out, x, kind: str = "gaussian", sigma: float = 1.0, squash: bool = True, log_sigma=None):
    """−log p(x|z) summed over pixels (or bins) and frames, mean over the batch, constants included
    (so the value of every likelihood is a negative log-density of the same data and they compare).

    gaussian: N(x̂, σ²) with σ fixed (`loss.recon_sigma`).
    gaussian-learned: σ = exp(log_sigma), a trained parameter broadcast over x (e.g. one per channel).
    gaussian-optimal: σ² = the batch's mean squared error, detached: the maximum-likelihood σ of the
        current decoder (Rybkin et al. 2021, "calibrated decoders"), so no scale is chosen by hand.
    bce: Bernoulli on the logits (images in [0, 1]).
    x̂ = sigmoid(out) for images (`squash`), out itself for features."""
    dims = tuple(range(1, x.dim()))
    out = out.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dims).mean()
    mean = torch.sigmoid(out) if squash else out
    if kind == "gaussian":
        if not sigma > 0:
            raise ValueError(f"loss.recon_sigma={sigma}: expected a positive standard deviation")
        log_s = torch.tensor(math.log(sigma), device=x.device)
    elif kind == "gaussian-learned":
        if log_sigma is None:
            raise ValueError("loss.recon=gaussian-learned: the model has no learned log σ parameter")
        log_s = log_sigma.float().clamp(min=MIN_LOG_SIGMA)
    elif kind == "gaussian-optimal":
        log_s = 0.5 * (mean.detach() - x).pow(2).mean().clamp(min=math.exp(2 * MIN_LOG_SIGMA)).log()
    else:
        raise ValueError(f"loss.recon={kind!r}: expected one of {', '.join(RECON_KINDS)}")
    return _gaussian_nll(mean, x, log_s).sum(dims).mean()


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
    """log q(z_i | x_j) summed over the last dim for every pair: z, mean, logvar [..., M, D] -> [..., M, M] (float64).

    Σ_d (z_i − μ_j)² / σ_j² expanded into z_i² · (1/σ_j²) − 2 z_i · (μ_j/σ_j²) + Σ_d μ_j²/σ_j²: two batched GEMMs
    instead of an [..., M, M, D] intermediate and ~8 elementwise passes over it forward and back (the MWS MI was
    3.7 ms of the speech S3VAE's ~20 ms step at M = 16 and grows as M²: 44 ms at M = 64; the GEMMs take 2.0 and
    7.8 ms, 2-core AVX-512). The expansion cancels catastrophically for sharp posteriors (1/σ² ~ 1e5) in fp32,
    so it is computed in float64, where it matches the direct fp64 form better than the direct fp32 form does
    (tests/test_losses.py); autocast is off so a bf16 run does not round the GEMMs."""
    with torch.autocast(z.device.type, enabled=False):
        z, mean, logvar = z.double(), mean.double(), logvar.double()
        precision = torch.exp(-logvar)                                   # [..., M(j), D]
        const = (LOG_2PI + logvar + mean.pow(2) * precision).sum(-1)      # [..., M(j)]
        quad = z.pow(2) @ precision.transpose(-1, -2)                    # [..., M(i), M(j)]
        cross = z @ (mean * precision).transpose(-1, -2)
        return cross - 0.5 * (quad + const.unsqueeze(-2))


MI_REDUCTIONS = ("sum", "mean")


def mws_mutual_information(zf, zf_mean, zf_logvar, zt, zt_mean, zt_logvar, reduce: str = "sum"):
    """Eq. 7 with the minibatch-weighted-sampling entropies of Eq. 8, summed (the seed) or averaged
    (C-DSVAE) over time (`reduce`).

    zf*: [M, d_f]; zt*: [M, T, d_t]. One logsumexp over [T, M, M]; no loop over t.
    Eq. 8's −log(NM) appears once in each of the three entropies, so Eq. 7 keeps a
    constant log N (no gradient) per step; we drop it so that the value reads as
    an MI (≈ 0 for independent latents): MI_t = E[lse(f+t) − lse(f) − lse(t)] + log M.
    The estimate of each step is at most log M (`mi_ceiling`), reached whenever both posteriors
    are sharp, whether or not the latents depend on each other.
    """
    if reduce not in MI_REDUCTIONS:
        raise ValueError(f"loss.mi_reduce={reduce!r}: expected one of {', '.join(MI_REDUCTIONS)}")
    m = zf.shape[0]
    lf = log_density_matrix(zf, zf_mean, zf_logvar)  # [M, M], float64
    lt = log_density_matrix(zt.transpose(0, 1), zt_mean.transpose(0, 1), zt_logvar.transpose(0, 1))  # [T, M, M]
    log_qf = torch.logsumexp(lf, -1)                # [M]
    log_qt = torch.logsumexp(lt, -1)                # [T, M]
    log_qft = torch.logsumexp(lf.unsqueeze(0) + lt, -1)  # [T, M]
    mi_t = (log_qft - log_qf.unsqueeze(0) - log_qt).mean(-1) + math.log(m)
    return (mi_t.sum() if reduce == "sum" else mi_t.mean()).float()


def mi_ceiling(batch: int, steps: int, reduce: str = "sum") -> float:
    """The largest value `mws_mutual_information` can take: log M per step, summed or averaged over T."""
    return math.log(batch) * (steps if reduce == "sum" else 1)


MI_ESTIMATORS = ("mws", "density-ratio")


class DensityRatioMI(torch.nn.Module):
    """I(z_f; z_t) per time step from a classifier of joint pairs (z_f^i, z_t^i) against pairs of the
    marginals (z_f^i, z_t^j), j ≠ i (the density-ratio trick of FactorVAE's total-correlation term).

    At the classifier's optimum its logit is log q(z_f, z_t) / (q(z_f) q(z_t)), so the mean logit over joint
    pairs estimates the MI with no log M ceiling: the MWS estimate saturates at log M per step once the
    posteriors are sharp, whether or not the latents depend on each other (`mi_ceiling`), and then no
    longer pushes them apart. forward() returns (mi, classifier loss): `mi` carries gradient into the
    latents only (the classifier's weights are detached for it), the classifier loss into the classifier
    only (its inputs are detached), so one optimizer and one backward train both."""

    def __init__(self, d_zf: int, d_zt: int, hidden: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(d_zf + d_zt, hidden), torch.nn.LeakyReLU(0.2),
                                       torch.nn.Linear(hidden, hidden), torch.nn.LeakyReLU(0.2),
                                       torch.nn.Linear(hidden, 1))

    def forward(self, zf, zt, reduce: str = "sum"):
        """zf [M, d_f], zt [M, T, d_t] -> (mi, classifier loss); mi summed or averaged over T (`reduce`)."""
        if reduce not in MI_REDUCTIONS:
            raise ValueError(f"loss.mi_reduce={reduce!r}: expected one of {', '.join(MI_REDUCTIONS)}")
        m, t = zt.shape[:2]
        if m < 2:
            raise ValueError("the density-ratio MI needs a batch of at least 2 sequences (pairs of marginals)")
        zf_t = zf.unsqueeze(1).expand(-1, t, -1)
        joint = torch.cat([zf_t, zt], -1).float()
        # marginal pairs: each z_f with the z_t of another sequence (a random non-zero shift of the batch)
        shift = torch.randint(1, m, (1,), device=zt.device)
        marginal = torch.cat([zf_t, zt[(torch.arange(m, device=zt.device) + shift) % m]], -1).float()
        frozen = {k: v.detach() for k, v in self.net.named_parameters()}
        mi_t = torch.func.functional_call(self.net, frozen, (joint,)).squeeze(-1).mean(0)  # [T]
        logits = self.net(torch.cat([joint, marginal]).detach()).squeeze(-1)
        target = torch.cat([torch.ones(m, t, device=zt.device), torch.zeros(m, t, device=zt.device)])
        classifier = F.binary_cross_entropy_with_logits(logits, target)
        return (mi_t.sum() if reduce == "sum" else mi_t.mean()), classifier
