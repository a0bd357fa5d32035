"""The judge classifier: the harness's conv frame encoder, a bidirectional LSTM over frames,
one head per label family (the community Sprites judge's shape). Trained in-harness only."""
from __future__ import annotations

import torch
from torch import nn

from models.base import ConvFrameEncoder, MLPFrameEncoder


class Judge(nn.Module):
    capabilities = frozenset({"classify"})

    def __init__(self, info, width: float = 0.5, hidden: int = 128, feat_dim: int = 128):
        super().__init__()
        self.info = info
        self.families = {**info.static_labels, **info.dynamic_labels}
        self.columns = {**{f: ("static", i) for i, f in enumerate(info.static_labels)},
                        **{f: ("dynamic", i) for i, f in enumerate(info.dynamic_labels)}}
        self.frame_enc = (MLPFrameEncoder(info.size, feat_dim, width) if info.kind == "audio"
                          else ConvFrameEncoder(info.channels, info.size, feat_dim, width))
        self.lstm = nn.LSTM(feat_dim, hidden, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleDict({f: nn.Linear(2 * hidden, n) for f, n in self.families.items()})

    def forward(self, x) -> dict[str, torch.Tensor]:
        """Logits per label family for sequences x [B, T, ...]."""
        b, t = x.shape[:2]
        h, _ = self.lstm(self.frame_enc(x.flatten(0, 1)).view(b, t, -1))
        pooled = h.mean(1)
        return {f: head(pooled) for f, head in self.heads.items()}

    @torch.no_grad()
    def probs(self, x) -> dict[str, torch.Tensor]:
        return {f: torch.softmax(v.float(), -1) for f, v in self(x).items()}

    def targets(self, batch, family):
        key, col = self.columns[family]
        return batch[key][:, col]

    # trainer interface (same loop as every model)
    def loss_terms(self, batch):
        ce = nn.functional.cross_entropy
        return {f"ce_{f}": ce(v.float(), self.targets(batch, f)) for f, v in self(batch["x"]).items()}

    def loss_weights(self):
        return {f"ce_{f}": 1.0 for f in self.families}

    def configure_optimizers(self, train_cfg):
        return [torch.optim.Adam(self.parameters(), lr=train_cfg.lr)]
