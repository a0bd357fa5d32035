"""FHVAE (Hsu, Zhang & Glass, NIPS 2017): factorized hierarchical VAE for speech segments.

Per segment x (T frames): a sequence-level latent z2 ~ N(μ2_i, 0.5² I) whose mean μ2_i ~ N(0, I)
is a learned row of a lookup table per training utterance i, and a segment-level latent
z1 ~ N(0, I). Inference: q(z2 | x) from a 2-layer LSTM over the frames, q(z1 | x, z2) from a
2-layer LSTM over [frames, z2]; decoder: a 2-layer LSTM fed [z1, z2] at every frame. The
discriminative objective α·log p(i | z2) (softmax over the table) keeps z2 utterance-specific.
For Table 3, z_f = z2 (posterior mean) and z_{1:T} = z1 repeated over the frames.
The frame likelihood is the harness's `loss.recon` (the same choice for every model here).
As ScalableFHVAE does: −log p(μ2_i) is shared out over the utterance's segments (each segment's
objective carries 1/n_i of it), and log p(i | z2) is scored on the posterior mean of z2.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from models import losses
from models.base import GaussianHead, Latents, SequentialModel, recon_log_sigma, recon_terms, reparameterize

Z2_PRIOR_STD = 0.5  # p(z2 | μ2) = N(μ2, 0.5² I)


class FHVAE(SequentialModel):
    capabilities = frozenset({"encode", "swap", "sample"})
    kinds = frozenset({"audio"})

    def __init__(self, info, model_cfg, loss_cfg):
        super().__init__()
        if info.kind not in self.kinds:
            raise ValueError(f"fhvae models speech segments; dataset {info.name!r} is {info.kind}")
        if info.num_sequences < 1:
            raise ValueError(f"fhvae needs utterance ids (info.num_sequences) from dataset {info.name!r}")
        c, h = model_cfg, model_cfg.hidden
        self.info, self.loss_cfg, self.d_z1, self.d_z2 = info, loss_cfg, c.d_zt, c.d_zf
        self.enc_z2 = nn.LSTM(info.size, h, num_layers=2, batch_first=True)
        self.z2_head = GaussianHead(h, c.d_zf)
        self.enc_z1 = nn.LSTM(info.size + c.d_zf, h, num_layers=2, batch_first=True)
        self.z1_head = GaussianHead(h, c.d_zt)
        self.dec = nn.LSTM(c.d_zf + c.d_zt, h, num_layers=2, batch_first=True)
        self.dec_out = nn.Linear(h, info.size)
        self.mu2 = nn.Embedding(info.num_sequences, c.d_zf)
        nn.init.normal_(self.mu2.weight)
        self.log_sigma = recon_log_sigma(info, loss_cfg)
        self.weights = {"recon": 1.0, "kl_z1": 1.0, "kl_z2": 1.0, "log_pmu2": 1.0, "disc": loss_cfg.alpha_disc}

    def loss_weights(self):
        return dict(self.weights)

    def encode(self, x, sample: bool = True) -> Latents:
        h2, _ = self.enc_z2(x)
        z2_mean, z2_logvar = self.z2_head(h2[:, -1])
        z2 = reparameterize(z2_mean, z2_logvar, sample)
        h1, _ = self.enc_z1(torch.cat([x, z2[:, None].expand(-1, x.shape[1], -1).to(x.dtype)], -1))
        z1_mean, z1_logvar = self.z1_head(h1[:, -1])
        z1 = reparameterize(z1_mean, z1_logvar, sample)
        t = x.shape[1]
        rep = lambda v: v[:, None].expand(-1, t, -1)  # noqa: E731 - z1 is per segment: same at every frame
        return Latents(z2_mean, z2_logvar, z2, rep(z1_mean), rep(z1_logvar), rep(z1))

    def decode(self, z_f, z_t):
        h, _ = self.dec(torch.cat([z_f[:, None].expand(-1, z_t.shape[1], -1), z_t], -1))
        return self.dec_out(h)

    def sample_prior(self, n: int, steps: int) -> Latents:
        dev = self.mu2.weight.device
        mu2 = torch.randn(n, self.d_z2, device=dev)
        z2 = mu2 + Z2_PRIOR_STD * torch.randn_like(mu2)
        z1 = torch.randn(n, self.d_z1, device=dev)[:, None].expand(-1, steps, -1)
        zeros = torch.zeros_like(z1)
        return Latents(mu2, torch.full_like(mu2, 2 * math.log(Z2_PRIOR_STD)), z2, zeros, zeros, z1)

    def loss_terms(self, batch):
        x, ids = batch["x"], batch["utterance"]
        if "segments" not in batch:
            raise ValueError(f"fhvae needs the number of segments of each utterance (batch column 'segments') "
                             f"from dataset {self.info.name!r}")
        post = self.encode(x)
        out = self.decode(post.zf, post.zt)
        mu2 = self.mu2(ids)
        logvar_p2 = torch.full_like(mu2, 2 * math.log(Z2_PRIOR_STD))
        # log p(i | z2) over the whole table, on the posterior mean of z2: the discriminative term
        table = self.mu2.weight
        logits = -0.5 * (post.zf_mean[:, None].float() - table[None]).pow(2).sum(-1) / Z2_PRIOR_STD**2
        lc = self.loss_cfg
        return {
            **recon_terms(out, x, lc, squash=False, log_sigma=self.log_sigma),
            "kl_z1": losses.kl_static(post.zt_mean[:, 0], post.zt_logvar[:, 0]),
            "kl_z2": losses.gaussian_kl(post.zf_mean, post.zf_logvar, mu2, logvar_p2).sum(-1).mean(),
            # −log N(μ2_i; 0, I), shared out over the utterance's n_i segments (Hsu et al. Eq. 5)
            "log_pmu2": (0.5 * (mu2.pow(2) + losses.LOG_2PI).sum(-1) / batch["segments"].float()).mean(),
            "disc": nn.functional.cross_entropy(logits, ids),
        }
