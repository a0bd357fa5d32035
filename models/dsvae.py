"""DSVAE (Li & Mandt, ICML 2018), the 'full q' variant, on the same frame networks as S3VAE.

z_f from a bidirectional LSTM over the frame features (final forward and backward states);
q(z_t | x_1:T, z_f): a bidirectional LSTM over [features, z_f] followed by a forward RNN —
unlike S3VAE, the dynamic posterior sees the whole sequence and z_f. Same learned LSTM prior
and decoder. Objective: reconstruction + KL(z_f) + KL(z_1:T); SCC distance and MI are
still logged as no-grad diagnostics (weights 0), so it compares with S3VAE's ablations.
"""
from __future__ import annotations

import torch
from torch import nn

from models.base import GaussianHead
from models.s3vae import S3VAE


class DSVAE(S3VAE):
    capabilities = frozenset({"encode", "swap", "sample"})

    def __init__(self, info, model_cfg, loss_cfg):
        super().__init__(info, model_cfg, loss_cfg)
        c = model_cfg
        del self.lstm_f, self.lstm_t, self.zf_head  # replaced by DSVAE's inference networks
        self.lstm_f = nn.LSTM(c.feat_dim, c.hidden, batch_first=True, bidirectional=True)
        self.zf_head = GaussianHead(2 * c.hidden, c.d_zf)
        self.lstm_z = nn.LSTM(c.feat_dim + c.d_zf, c.hidden, batch_first=True, bidirectional=True)
        self.rnn_z = nn.RNN(2 * c.hidden, c.hidden, batch_first=True)
        self.zt_head = GaussianHead(c.hidden, c.d_zt)

    def _static(self, feats):
        h, _ = self.lstm_f(feats)
        half = h.shape[-1] // 2
        last = torch.cat([h[:, -1, :half], h[:, 0, half:]], -1)  # forward end + backward end
        return (h, *self.zf_head(last))

    def _dynamic(self, feats, h, z_f):
        zf_seq = z_f.unsqueeze(1).expand(-1, feats.shape[1], -1)
        g, _ = self.lstm_z(torch.cat([feats, zf_seq.to(feats.dtype)], -1))
        r, _ = self.rnn_z(g)
        return self.zt_head(r)
