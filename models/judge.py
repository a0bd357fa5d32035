"""The judge classifier: the harness's conv frame encoder, then one head per label family.
Static families (identity, attributes, digits: visible in every frame) are read frame by frame and
their logits averaged over time; dynamic families (action, expression) from a bidirectional LSTM over
the frames, mean-pooled (the community Sprites judge's shape). Trained in-harness only."""
from __future__ import annotations

import torch
from torch import nn

from models.base import ConvFrameEncoder, MLPFrameEncoder


class Judge(nn.Module):
    capabilities = frozenset({"classify"})

    def __init__(self, info, width: float = 0.5, hidden: int = 128, feat_dim: int = 128, train_frames: int = 0):
        super().__init__()
        if train_frames and info.dynamic_labels:
            raise ValueError(f"judge train_frames={train_frames} on {info.name}: training on frame windows needs a "
                             f"dataset without dynamic labels ({', '.join(info.dynamic_labels)} need whole sequences)")
        self.info, self.train_frames = info, train_frames
        self.static, self.dynamic = dict(info.static_labels), dict(info.dynamic_labels)
        self.families = {**self.static, **self.dynamic}
        self.columns = {**{f: ("static", i) for i, f in enumerate(info.static_labels)},
                        **{f: ("dynamic", i) for i, f in enumerate(info.dynamic_labels)}}
        self.frame_enc = (MLPFrameEncoder(info.size, feat_dim, width) if info.kind == "audio"
                          else ConvFrameEncoder(info.channels, info.size, feat_dim, width))
        self.lstm = nn.LSTM(feat_dim, hidden, batch_first=True, bidirectional=True) if self.dynamic else None
        self.heads = nn.ModuleDict({**{f: nn.Linear(feat_dim, n) for f, n in self.static.items()},
                                    **{f: nn.Linear(2 * hidden, n) for f, n in self.dynamic.items()}})

    def forward(self, x) -> dict[str, torch.Tensor]:
        """Logits per label family for sequences x [B, T, ...]."""
        b, t = x.shape[:2]
        feats = self.frame_enc(x.flatten(0, 1)).view(b, t, -1)
        out = {f: self.heads[f](feats).mean(1) for f in self.static}
        if self.dynamic:
            pooled = self.lstm(feats)[0].mean(1)
            out.update({f: self.heads[f](pooled) for f in self.dynamic})
        return out

    @torch.no_grad()
    def probs(self, x) -> dict[str, torch.Tensor]:
        return {f: torch.softmax(v.float(), -1) for f, v in self(x).items()}

    def targets(self, batch, family):
        key, col = self.columns[family]
        return batch[key][:, col]

    # trainer interface (same loop as every model)
    def loss_terms(self, batch):
        x = batch["x"]
        if self.train_frames and self.training and x.shape[1] > self.train_frames:
            # static labels only: a random window of frames per batch is as informative per frame, and cheaper
            t0 = int(torch.randint(x.shape[1] - self.train_frames + 1, ()))
            x = x[:, t0:t0 + self.train_frames]
        ce = nn.functional.cross_entropy
        return {f"ce_{f}": ce(v.float(), self.targets(batch, f)) for f, v in self(x).items()}

    def loss_weights(self):
        return {f"ce_{f}": 1.0 for f in self.families}

    def configure_optimizers(self, train_cfg):
        return [torch.optim.Adam(self.parameters(), lr=train_cfg.lr)]
