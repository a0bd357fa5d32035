"""S3VAE (seed §3–4, appendix D) and the presets built on it.

Inference: per-frame encoder -> LSTM_f over frames; q(z_f | x_1:T) from its last
state; its outputs -> a second, causal LSTM -> q(z_t | x_≤t), which does not see
z_f (Eq. 4). Prior: z_f ~ N(0, I); z_t | z_<t from a trainable LSTM. Decoder on
[z_f, z_t] per frame. The presets (baseline, no-scc, ...) only change loss weights.
"""
from __future__ import annotations

import torch
from torch import nn

from models import augment, losses
from models.base import (GaussianHead, Latents, LSTMPrior, SequentialModel, frame_networks, recon_log_sigma,
                         recon_terms, reparameterize)


class S3VAE(SequentialModel):
    capabilities = frozenset({"encode", "swap", "sample"})
    # x and SCC's positive share one LSTM_f call while SCC trains; False: the plain path (two calls), the
    # reference the tests compare the step against
    shared_scc_pass = True

    def __init__(self, info, model_cfg, loss_cfg):
        super().__init__()
        self.info, self.loss_cfg = info, loss_cfg
        c = model_cfg
        self.frame_enc, self.frame_dec = frame_networks(info, c.feat_dim, c.d_zf + c.d_zt, c.width)
        self.lstm_f = nn.LSTM(c.feat_dim, c.hidden, batch_first=True)
        self.zf_head = GaussianHead(c.hidden, c.d_zf)
        self.lstm_t = nn.LSTM(c.hidden, c.hidden, batch_first=True)
        self.zt_head = GaussianHead(c.hidden, c.d_zt)
        self.prior = LSTMPrior(c.d_zt, c.hidden)
        self.log_sigma = recon_log_sigma(info, loss_cfg)
        self.weights = {"recon": 1.0, "kl_f": 1.0, "kl_t": 1.0, "scc": loss_cfg.lambda_scc,
                        "dfp": loss_cfg.lambda_dfp, "mi": loss_cfg.lambda_mi}
        if not info.dfp:  # a dataset without a self-supervision signal has no DFP term
            self.weights.pop("dfp")
        else:
            self.dfp_head = nn.Sequential(nn.Linear(c.d_zt, c.dfp_hidden), nn.ReLU(True),
                                          nn.Linear(c.dfp_hidden, info.dfp["dim"]))
            if self.weights["dfp"] == 0:
                # ablations without DFP still log `dfp`, from a probe head trained on detached z_t: the same
                # column in every run (how well z_t predicts the motion signal), and no gradient into the model
                self.weights["dfp_probe"] = 1.0
                self.register_load_state_dict_post_hook(_probe_head_optional)
        if loss_cfg.mi_estimator not in losses.MI_ESTIMATORS:
            raise ValueError(f"loss.mi_estimator={loss_cfg.mi_estimator!r}: expected one of "
                             f"{', '.join(losses.MI_ESTIMATORS)}")
        if loss_cfg.mi_estimator == "density-ratio":  # its classifier learns in every preset: `mi` is logged alike
            self.mi_net = losses.DensityRatioMI(c.d_zf, c.d_zt, c.hidden)
            self.weights["mi_classifier"] = 1.0
        if loss_cfg.lambda_sv > 0 and getattr(self, "supervised", False):
            self._build_supervised_heads(c)

    # ---- interface -------------------------------------------------------------------------
    def loss_weights(self):
        return dict(self.weights)

    def _features(self, x):
        b, t = x.shape[:2]
        return self.frame_enc(x.flatten(0, 1)).view(b, t, -1)

    def _static(self, feats):
        """(LSTM_f outputs, q(z_f | x_1:T) mean, log-variance): z_f from the last state."""
        h, _ = self.lstm_f(feats)
        return (h, *self.zf_head(h[:, -1]))

    def _dynamic(self, feats, h, z_f):
        """q(z_t | x_≤t): a causal LSTM on LSTM_f's outputs; it does not see z_f (Eq. 4)."""
        g, _ = self.lstm_t(h)
        return self.zt_head(g)

    def _posteriors(self, feats, sample=True, static=None):
        """The posterior of a batch; `static`: its `_static(feats)` when already computed."""
        h, zf_mean, zf_logvar = self._static(feats) if static is None else static
        zf = reparameterize(zf_mean, zf_logvar, sample)
        zt_mean, zt_logvar = self._dynamic(feats, h, zf)
        return Latents(zf_mean, zf_logvar, zf, zt_mean, zt_logvar, reparameterize(zt_mean, zt_logvar, sample))

    def encode(self, x, sample: bool = True) -> Latents:
        return self._posteriors(self._features(x), sample)

    def _decode_logits(self, z_f, z_t):
        b, t = z_t.shape[:2]
        z = torch.cat([z_f.unsqueeze(1).expand(b, t, z_f.shape[-1]), z_t], -1)
        return self.frame_dec(z.flatten(0, 1)).view(b, t, *self.frame_dec_shape())

    def frame_dec_shape(self):
        i = self.info
        return (i.size,) if i.kind == "audio" else (i.channels, i.size, i.size)

    def decode(self, z_f, z_t):
        out = self._decode_logits(z_f, z_t)
        return torch.sigmoid(out) if self.info.kind == "video" else out

    def sample_prior(self, n: int, steps: int, sample: bool = True) -> Latents:
        dev = next(self.parameters()).device
        d_zf = self.zf_head.mean.out_features
        zf_mean = torch.zeros(n, d_zf, device=dev)
        zt_mean, zt_logvar, zt = self.prior.sample(n, steps, dev, sample)
        return Latents(zf_mean, torch.zeros_like(zf_mean), torch.randn_like(zf_mean), zt_mean, zt_logvar, zt)

    # ---- objective -------------------------------------------------------------------------
    def loss_terms(self, batch):
        return self._objective(batch)[0]

    def _objective(self, batch):
        """(terms, frame features, posterior) of a batch: subclasses adding terms reuse x's features and posterior."""
        x, lc, w = batch["x"], self.loss_cfg, self.weights
        feats = self._features(x)
        scc_trains = torch.is_grad_enabled() and w["scc"] > 0
        if scc_trains and self.shared_scc_pass:
            # SCC's positive (x's frames shuffled in time) goes through LSTM_f in the same call as x: one LSTM of
            # batch 2B instead of two of B (the speech S3VAE's step is LSTM-bound; see _scc)
            b = feats.shape[0]
            both = self._static(torch.cat([feats, augment.shuffle_frames(feats)]))
            post = self._posteriors(feats, static=tuple(part[:b] for part in both))
            zf_pos = both[1][b:]
        else:
            post, zf_pos = self._posteriors(feats), None
        logits = self._decode_logits(post.zf, post.zt)
        prior_mean, prior_logvar = self.prior(post.zt)
        terms = {
            **recon_terms(logits, x, lc, squash=self.info.kind == "video", log_sigma=self.log_sigma),
            "kl_f": losses.kl_static(post.zf_mean, post.zf_logvar),
            "kl_t": losses.kl_dynamic(post.zt_mean, post.zt_logvar, prior_mean, prior_logvar),
        }
        # A zero-weight term stays out of the graph, but SCC distance and MI are cheap
        # disentanglement diagnostics, so ablations still log them (no grad).
        with torch.set_grad_enabled(scc_trains):
            terms["scc"] = self._scc(feats, post.zf_mean, zf_pos)
        ratio = hasattr(self, "mi_net")
        with torch.set_grad_enabled(torch.is_grad_enabled() and w["mi"] > 0 and not ratio):
            terms["mws_mi" if ratio else "mi"] = losses.mws_mutual_information(
                post.zf, post.zf_mean, post.zf_logvar, post.zt, post.zt_mean, post.zt_logvar, lc.mi_reduce)
        if ratio:  # the MWS estimate stays beside it, with its ceiling, for comparison
            mi, terms["mi_classifier"] = self.mi_net(post.zf, post.zt, lc.mi_reduce)
            terms["mi"] = mi if w["mi"] > 0 else mi.detach()
        # the estimator's largest value (log M per step): an MI term near it is saturated
        terms["mi_ceiling"] = torch.tensor(losses.mi_ceiling(x.shape[0], x.shape[1], lc.mi_reduce))
        if "dfp" in w:
            probe = "dfp_probe" in w  # a probe head on detached z_t: the term is logged, the model gets no gradient
            pred = self.dfp_head(post.zt.detach() if probe else post.zt)
            terms["dfp"] = losses.dfp_loss(pred, batch["dfp"], self.info.dfp["kind"], lc.dfp_topk)
            if probe:
                terms["dfp_probe"], terms["dfp"] = terms["dfp"], terms["dfp"].detach()
        if hasattr(self, "sv_static"):
            terms["sv"] = self._supervised(post, batch)
        return terms, feats, post

    def _scc(self, feats, zf_anchor, zf_pos=None):
        """Triplet on z_f: positive = same sequence with frames shuffled in time, negative = another
        sequence of the batch. The per-frame encoder commutes with shuffling, so the positive reuses
        the frame features and only re-runs LSTM_f (`zf_pos`: its mean, when already computed)."""
        b = feats.shape[0]
        if zf_pos is None:
            zf_pos = self._static(augment.shuffle_frames(feats))[1]
        shift = int(torch.randint(1, b, ())) if b > 1 else 0  # a different sequence for every anchor
        zf_neg = zf_anchor.roll(shift, 0)
        return losses.triplet(zf_anchor, zf_pos, zf_neg, self.loss_cfg.scc_margin)

    # ---- baseline-sv: ground-truth supervision instead of self-supervision --------------------
    def _build_supervised_heads(self, c):
        self.sv_static = nn.ModuleList(nn.Linear(c.d_zf, n) for n in self.info.static_labels.values())
        self.sv_dynamic = nn.ModuleList(nn.Linear(c.d_zt, n) for n in self.info.dynamic_labels.values())
        self.weights["sv"] = self.loss_cfg.lambda_sv

    def _supervised(self, post, batch):
        ce = nn.functional.cross_entropy
        loss = sum(ce(head(post.zf).float(), batch["static"][:, i]) for i, head in enumerate(self.sv_static))
        zt_pooled = post.zt.mean(1)
        loss = loss + sum(ce(head(zt_pooled).float(), batch["dynamic"][:, i]) for i, head in enumerate(self.sv_dynamic))
        return loss


def _probe_head_optional(module, incompatible) -> None:
    """Checkpoints written before ablations had a DFP probe head still load (the probe only logs a diagnostic)."""
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith("dfp_head.")]


class SupervisedS3VAE(S3VAE):
    """baseline-sv: the baseline plus CE heads on ground-truth static (z_f) and dynamic (z_t) labels."""
    supervised = True
