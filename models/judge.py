"""The judge classifier: the harness's conv frame encoder, then one head per label family.
Static families (identity, attributes, digits: visible in every frame) are read frame by frame and
their logits averaged over time; dynamic families (action, expression) from a bidirectional LSTM over
the frames, mean-pooled (the community Sprites judge's shape). A dataset's `sorted_pairs` (SMMNIST's
two digits) are scored jointly by a PairHead. Trained in-harness only."""
from __future__ import annotations

import torch
from torch import nn

from models.base import ConvFrameEncoder, MLPFrameEncoder


class PairHead(nn.Module):
    """An unordered pair of labels over n classes, stored sorted (lo <= hi), scored jointly.

    Per frame the head emits r_c (evidence for one item of class c) and s_c (for two); the logit
    of the pair {a < b} is r_a + r_b and of {a, a} is s_a. That is a product of per-class counts
    conditioned on there being two items, so it never has to work out which digit is the smaller
    (slot heads must), and the same evidence serves both slots. The slot distributions are the
    marginals of the pair distribution."""

    def __init__(self, in_dim: int, n: int):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(in_dim, 2 * n)
        lo, hi = torch.triu_indices(n, n)  # the n(n+1)/2 pairs, lo <= hi, in row-major order
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("hi", hi, persistent=False)

    def forward(self, feats):
        """Pair logits [..., n(n+1)/2] from features [..., in_dim]."""
        rs = self.lin(feats).float()
        r, s = rs[..., :self.n], rs[..., self.n:]
        return torch.where(self.lo == self.hi, s[..., self.lo], r[..., self.lo] + r[..., self.hi])

    def index(self, lo, hi):
        """Position of the pair (lo <= hi) in the pair logits."""
        return lo * self.n - lo * (lo - 1) // 2 + (hi - lo)

    def marginals(self, pair_logits):
        """(log p(lo), log p(hi)), each [B, n], from pair logits [B, P]."""
        p = torch.softmax(pair_logits, -1)
        zeros = p.new_zeros(p.shape[0], self.n)
        return tuple(zeros.index_add(1, idx, p).clamp_min(1e-12).log() for idx in (self.lo, self.hi))


class Judge(nn.Module):
    capabilities = frozenset({"classify"})

    def __init__(self, info, width: float = 0.5, hidden: int = 128, feat_dim: int = 128):
        super().__init__()
        self.info = info
        self.static, self.dynamic = dict(info.static_labels), dict(info.dynamic_labels)
        self.families = {**self.static, **self.dynamic}
        self.columns = {**{f: ("static", i) for i, f in enumerate(info.static_labels)},
                        **{f: ("dynamic", i) for i, f in enumerate(info.dynamic_labels)}}
        self.pairs = tuple(tuple(p) for p in info.sorted_pairs)
        for lo, hi in self.pairs:
            if lo not in self.static or hi not in self.static or self.static[lo] != self.static[hi]:
                raise ValueError(f"{info.name}: sorted pair ({lo}, {hi}) must name two static label families "
                                 f"with the same classes; static labels are {self.static}")
        self.paired = {f for p in self.pairs for f in p}  # scored by a PairHead, not a head of their own
        self.frame_enc = (MLPFrameEncoder(info.size, feat_dim, width) if info.kind == "audio"
                          else ConvFrameEncoder(info.channels, info.size, feat_dim, width))
        self.lstm = nn.LSTM(feat_dim, hidden, batch_first=True, bidirectional=True) if self.dynamic else None
        self.heads = nn.ModuleDict({**{f: nn.Linear(feat_dim, n) for f, n in self.static.items() if f not in self.paired},
                                    **{f: nn.Linear(2 * hidden, n) for f, n in self.dynamic.items()}})
        self.pair_heads = nn.ModuleList(PairHead(feat_dim, self.static[lo]) for lo, _ in self.pairs)

    def _features(self, x):
        b, t = x.shape[:2]
        return self.frame_enc(x.flatten(0, 1)).view(b, t, -1)

    def _outputs(self, x):
        """(logits per family, pair logits per sorted pair) for sequences x [B, T, ...]."""
        feats = self._features(x)
        out = {f: self.heads[f](feats).mean(1) for f in self.static if f in self.heads}
        pair_logits = [head(feats).mean(1) for head in self.pair_heads]
        for (lo, hi), head, logits in zip(self.pairs, self.pair_heads, pair_logits):
            out[lo], out[hi] = head.marginals(logits)  # log-probabilities are logits of the same softmax
        if self.dynamic:
            pooled = self.lstm(feats)[0].mean(1)
            out.update({f: self.heads[f](pooled) for f in self.dynamic})
        return out, pair_logits

    def forward(self, x) -> dict[str, torch.Tensor]:
        """Logits per label family for sequences x [B, T, ...]."""
        return self._outputs(x)[0]

    @torch.no_grad()
    def probs(self, x) -> dict[str, torch.Tensor]:
        return {f: torch.softmax(v.float(), -1) for f, v in self(x).items()}

    def targets(self, batch, family):
        key, col = self.columns[family]
        return batch[key][:, col]

    # trainer interface (same loop as every model)
    def loss_terms(self, batch):
        out, pair_logits = self._outputs(batch["x"])
        ce = nn.functional.cross_entropy
        terms = {f"ce_{f}": ce(v.float(), self.targets(batch, f)) for f, v in out.items() if f not in self.paired}
        for (lo, hi), head, logits in zip(self.pairs, self.pair_heads, pair_logits):
            terms[f"ce_{lo}_{hi}"] = ce(logits, head.index(self.targets(batch, lo), self.targets(batch, hi)))
        return terms

    def loss_weights(self):
        return {**{f"ce_{f}": 1.0 for f in self.families if f not in self.paired},
                **{f"ce_{lo}_{hi}": 1.0 for lo, hi in self.pairs}}

    def configure_optimizers(self, train_cfg):
        return [torch.optim.Adam(self.parameters(), lr=train_cfg.lr)]
