"""C-DSVAE (Bai, Wang, Gomes, "Contrastively Disentangled Sequential Variational Autoencoder", NeurIPS 2021)
on the harness's frame networks, prior and likelihoods.

Inference, as the public code's `CDSVAE` (github.com/JunwenBai/C-DSVAE, model.py): per-frame encoder -> one
bidirectional LSTM over the frame features; q(z_f | x_1:T) from its forward end and backward start (as
our DSVAE); q(z_t | x_1:T) from a forward RNN over the same BiLSTM outputs — it sees the whole sequence
but, unlike DSVAE's full q, not z_f. Prior: z_f ~ N(0, I), z_t | z_<t from our learned LSTM prior.
Decoder on [z_f, z_t] per frame: the frame decoder every model here shares (models/base.py).

Objective (unweighted terms from `loss_terms`, weights from `loss_weights`; the trainer adds Σ w·term):

| term | what | weight (config key: default) | where the default comes from |
|---|---|---|---|
| recon | −log p(x_1:T \\| z) of `loss.recon` (shared by every model) | 1 | ELBO |
| kl_f | KL(q(z_f \\| x) ‖ N(0, I)) | 1 | ELBO; public code `--weight_f 1` (run_cdsvae.sh) |
| kl_t | Σ_t KL(q(z_t \\| x) ‖ p(z_t \\| z_<t)) | 1 | ELBO; public code `--weight_z 1` |
| mi | minibatch-weighted-sampling I(z_f; z_t), averaged over t (`loss.mi_reduce=mean`) | `loss.lambda_mi`: 1 | public code adds `mi_fz` unweighted, a mean over frames and batch (train_cdsvae.py) |
| nce_f | InfoNCE: z_f mean of x vs of its time-shuffled copy (`models/augment.py`) | `loss.lambda_nce_f`: 10 | public code `--weight_c_aug 10` |
| nce_t | InfoNCE: z_1:T mean (flattened) of x vs of its appearance-changed copy | `loss.lambda_nce_t`: 10 | public code `--weight_m_aug 10` |

InfoNCE is SimCLR's NT-Xent, as the public code's `contrastive_loss(tau=0.5, normalize=True)`: the 2M
views of a batch of M, cosine similarity over temperature τ (`loss.nce_tau`: 0.5), for each view the other
view of the same sequence is the positive and the 2M − 2 views of the other sequences the negatives;
mean over the 2M views. The public code's MI keeps Eq. 8's −log(NM) in each entropy and applies a ReLU
per sample: our estimate (models/losses.py, shared with S3VAE) drops the constant log N, which leaves
the gradient the same wherever that ReLU is inactive (it is, by log N ≈ 9 on sprites).

Diagnostics logged beside them, at weight 0 (no gradient): S3VAE's `scc` triplet distance, `mi_ceiling`
and, where the dataset has a DFP signal, the `dfp` probe of the S3VAE family; `mse`, `recon_sigma`.

Dimensions of the public code (train_cdsvae.py defaults, run_cdsvae.sh) and ours at `--profile paper`:
frame feature g_dim 128 (`model.feat_dim` 128), rnn_size 256 (`model.hidden` 256), f_dim 256 / z_dim 32
(sprites' `(d_zf, d_zt)` = (256, 32)); Adam lr 1e-3, betas (0.9, 0.999) — the same as the paper
profile. What differs (docs/assumptions.md): the public code trains at batch 128 for 100 epochs (the
profile's batch and budget are every model's), its likelihood is a summed MSE (≡ `loss.recon=gaussian`
with σ = 1/√2 up to a constant; ours is the harness's shared `loss.recon`), its prior is a 2-layer LSTM
(ours 1 layer, shared), its z_f heads end in a LeakyReLU (ours linear, shared) and its decoder is
transposed convs (ours the shared decoder).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models import augment
from models.dsvae import DSVAE


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """NT-Xent over the 2M views [a; b] ([M, D] each, row i of a and of b views of the same sequence):
    mean over the 2M views of −log softmax of the positive's cosine similarity / τ against every other
    view (itself excluded). Identical views with orthogonal negatives give log(1 + (2M − 2)·e^(−1/τ))."""
    if not tau > 0:
        raise ValueError(f"loss.nce_tau={tau}: expected a positive temperature")
    m = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=-1, eps=1e-8)
    sim = (z @ z.T) / tau
    sim = sim.masked_fill(torch.eye(2 * m, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(m, 2 * m), torch.arange(m)]).to(sim.device)
    return F.cross_entropy(sim, target)


class CDSVAE(DSVAE):
    capabilities = frozenset({"encode", "swap", "sample"})

    def __init__(self, info, model_cfg, loss_cfg):
        super().__init__(info, model_cfg, loss_cfg)
        del self.lstm_z  # q(z_t) reads the shared BiLSTM's outputs, not [features, z_f] (DSVAE's full q)
        for key in ("lambda_nce_f", "lambda_nce_t"):
            if not getattr(loss_cfg, key) >= 0:
                raise ValueError(f"loss.{key}={getattr(loss_cfg, key)}: expected a weight ≥ 0")
        if not loss_cfg.nce_tau > 0:
            raise ValueError(f"loss.nce_tau={loss_cfg.nce_tau}: expected a positive temperature")
        self.weights.update(nce_f=loss_cfg.lambda_nce_f, nce_t=loss_cfg.lambda_nce_t)

    def _dynamic(self, feats, h, z_f):
        """q(z_t | x_1:T): a forward RNN over the BiLSTM outputs h (z_f unused)."""
        r, _ = self.rnn_z(h)
        return self.zt_head(r)

    def loss_terms(self, batch):
        terms, feats, post = self._objective(batch)  # ELBO, MI and the S3VAE family's diagnostics
        x, w, tau = batch["x"], self.weights, self.loss_cfg.nce_tau
        # content view: the per-frame encoder commutes with a shuffle of time steps (BatchNorm sees the same
        # frames), so shuffling x's features is exactly encoding the shuffled frames
        with torch.set_grad_enabled(torch.is_grad_enabled() and w["nce_f"] > 0):
            zf_content = self._static(augment.content_view(feats))[1]
            terms["nce_f"] = info_nce(post.zf_mean, zf_content, tau)
        # motion view: the frames with a new appearance, through the whole encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and w["nce_t"] > 0):
            feats_m = self._features(augment.motion_view(x, self.info.kind))
            zt_motion = self._dynamic(feats_m, self._static(feats_m)[0], None)[0]
            terms["nce_t"] = info_nce(post.zt_mean.flatten(1), zt_motion.flatten(1), tau)
        return terms
