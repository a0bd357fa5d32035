"""The two views of a sequence that C-DSVAE contrasts (Bai, Wang, Gomes, NeurIPS 2021, §3.3).

- `content_view` (content-preserving, motion-destroying): each sequence's time steps in an independent
  random order — the paper's content augmentation, and what the public code's `c_aug` holds.
- `motion_view` (motion-preserving, appearance-changing): one random pointwise colour map per sequence,
  the same for every frame and pixel (channel permutation, colour jitter, sometimes grey), then sometimes
  a Gaussian blur, also the same for every frame — SimCLR's colour distortion + blur as the paper cites
  it and the public reimplementation (tomoya-yamanokuchi, MotionAugumentation.py) applies it. The public
  code ships these views precomputed (`m_aug` in its data.pkl) without the code that made them, so the
  exact recipe is not pinned down: the parameters below are ours (docs/assumptions.md). For audio
  features [B, T, bins] the "appearance" is the speaker: a VTLP-style warp of the frequency axis plus a
  smooth random spectral offset, both constant over time (ours; not checked against the paper's audio
  recipe).

Pure functions of a batch tensor: every random number comes from torch's generator (the global one,
seeded with the run, or `generator`), so a seeded run draws the same views and a resumed one continues
them. Frame t of a motion view depends on frame t alone, so which pixels change between frames (the
motion) can only shrink under a non-injective colour map or blur, never move.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# colour distortion of SimCLR (Chen et al. 2020, appendix A) at strength 1, as the reimplementation uses it
JITTER_P, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.8, 0.8, 0.8, 0.8, 0.2
GRAY_P = 0.2
BLUR_P, BLUR_SIGMA = 0.5, (0.1, 2.0)   # kernel: the odd number nearest 10 % of the frame side, at least 3
PERMUTE_P = 1.0                        # random RGB order (ours: sprites' attributes are colours)
WARP, TILT = 0.1, 0.5                  # audio: frequency-axis scale in [1 - WARP, 1 + WARP]; offset amplitude


def _uniform(n, lo, hi, like, generator=None):
    return lo + (hi - lo) * torch.rand(n, device=like.device, generator=generator, dtype=torch.float32)


def _bernoulli(n, p, like, generator=None):
    return torch.rand(n, device=like.device, generator=generator) < p


def _per_seq(v, x):
    """[B] -> broadcastable against x [B, ...]."""
    return v.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def shuffle_frames(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Each sequence of x [B, T, ...] with its time steps in an independent random order."""
    b, t = x.shape[:2]
    perm = torch.argsort(torch.rand(b, t, device=x.device, generator=generator), dim=1)
    return torch.gather(x, 1, perm.view(b, t, *([1] * (x.dim() - 2))).expand_as(x))


content_view = shuffle_frames


def _grey(x, channel_dim: int):
    """ITU-R 601 luma over the channel axis (the plain mean for other channel counts), keepdim."""
    c = x.shape[channel_dim]
    if c != 3:
        return x.mean(channel_dim, keepdim=True)
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * w.view(-1, 1, 1)).sum(channel_dim, keepdim=True)


def _hue_rotation(theta: torch.Tensor) -> torch.Tensor:
    """[B] angles -> [B, 3, 3] rotations of RGB about the grey axis (1, 1, 1)/√3 (Rodrigues)."""
    u = 1 / math.sqrt(3.0)
    kx = torch.tensor([[0.0, -u, u], [u, 0.0, -u], [-u, u, 0.0]], device=theta.device)  # cross-product matrix
    eye = torch.eye(3, device=theta.device)
    c, s = theta.cos().view(-1, 1, 1), theta.sin().view(-1, 1, 1)
    return eye + s * kx + (1 - c) * (kx @ kx)


def colour_distort(x: torch.Tensor, *, jitter_p: float = JITTER_P, gray_p: float = GRAY_P,
                   permute_p: float = PERMUTE_P, strength: float = 1.0, generator=None) -> torch.Tensor:
    """Frames x [B, T, C, H, W] in [0, 1] under one random pointwise colour map per sequence: channel
    permutation (C = 3), then with probability jitter_p brightness, contrast (about the sequence's mean
    grey), saturation and hue (a rotation about the grey axis), then with probability gray_p grey; clamped
    to [0, 1]."""
    b, _, c = x.shape[:3]
    out = x
    if c == 3 and permute_p > 0:
        perm = torch.argsort(torch.rand(b, 3, device=x.device, generator=generator), dim=1)
        keep = ~_bernoulli(b, permute_p, x, generator)
        perm = torch.where(keep[:, None], torch.arange(3, device=x.device).expand(b, 3), perm)
        out = torch.gather(out, 2, perm.view(b, 1, 3, 1, 1).expand_as(out))
    jit = _per_seq(_bernoulli(b, jitter_p, x, generator), x)
    bright = _uniform(b, 1 - BRIGHTNESS * strength, 1 + BRIGHTNESS * strength, x, generator)
    contrast = _uniform(b, max(0.0, 1 - CONTRAST * strength), 1 + CONTRAST * strength, x, generator)
    sat = _uniform(b, max(0.0, 1 - SATURATION * strength), 1 + SATURATION * strength, x, generator)
    hue = _uniform(b, -HUE * strength, HUE * strength, x, generator)
    j = out * _per_seq(bright.clamp(min=0), x)
    mean_grey = _grey(j, 2).mean((1, 2, 3, 4), keepdim=True)  # one value per sequence: one map for all frames
    j = mean_grey + _per_seq(contrast, x) * (j - mean_grey)
    if c == 3:
        g = _grey(j, 2)
        j = g + _per_seq(sat, x) * (j - g)
        rot = _hue_rotation(2 * math.pi * hue).to(x.dtype)
        j = torch.einsum("bij,btjhw->btihw", rot, j)
    out = jit * j.clamp(0, 1) + (1 - jit) * out
    grey = _per_seq(_bernoulli(b, gray_p, x, generator), x)
    out = grey * _grey(out, 2).expand_as(out) + (1 - grey) * out
    return out.clamp(0, 1)


def gaussian_blur(x: torch.Tensor, *, p: float = BLUR_P, sigma=BLUR_SIGMA, generator=None) -> torch.Tensor:
    """With probability p per sequence, a separable Gaussian blur of every frame of x [B, T, C, H, W]
    (σ uniform in `sigma`, one σ per sequence; reflect padding)."""
    b, t, c, h, w = x.shape
    k = max(3, int(round(0.1 * h)) // 2 * 2 + 1)
    s = _uniform(b, sigma[0], sigma[1], x, generator)
    apply = _bernoulli(b, p, x, generator)
    r = torch.arange(k, device=x.device, dtype=torch.float32) - k // 2
    kern = torch.exp(-0.5 * (r[None] / s[:, None]) ** 2)
    kern = (kern / kern.sum(1, keepdim=True)).to(x.dtype)              # [B, k]
    # one depthwise conv for the whole batch: time as the conv batch, (sequence, channel) as its groups
    frames = x.permute(1, 0, 2, 3, 4).reshape(t, b * c, h, w)
    kw = kern.repeat_interleave(c, 0)                                    # [B*C, k]
    pad = k // 2
    y = F.conv2d(F.pad(frames, (pad, pad, 0, 0), mode="reflect"), kw.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), kw.view(b * c, 1, k, 1), groups=b * c)
    y = y.view(t, b, c, h, w).permute(1, 0, 2, 3, 4)
    a = _per_seq(apply, x)
    return a * y + (1 - a) * x


def spectral_distort(x: torch.Tensor, *, warp: float = WARP, tilt: float = TILT, generator=None) -> torch.Tensor:
    """Features x [B, T, bins] under one random speaker-like change per sequence, constant over time: the
    bin axis scaled by α ∈ [1 - warp, 1 + warp] (linear interpolation, edges held; vocal-tract-length
    perturbation) plus a smooth offset a·cos(π f) + b·cos(2π f) over the normalised bin index f."""
    b, _, n = x.shape
    alpha = _uniform(b, 1 - warp, 1 + warp, x, generator)
    pos = (torch.arange(n, device=x.device, dtype=torch.float32)[None] / alpha[:, None]).clamp(0, n - 1)  # [B, n]
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).to(x.dtype)[:, None]
    gather = lambda idx: torch.gather(x, 2, idx[:, None].expand(-1, x.shape[1], -1))  # noqa: E731
    warped = gather(lo) * (1 - frac) + gather(hi) * frac
    f = torch.linspace(0, 1, n, device=x.device)
    a, c = _uniform(b, -tilt, tilt, x, generator), _uniform(b, -tilt, tilt, x, generator)
    offset = a[:, None] * torch.cos(math.pi * f)[None] + c[:, None] * torch.cos(2 * math.pi * f)[None]
    return warped + offset[:, None].to(x.dtype)


def motion_view(x: torch.Tensor, kind: str, generator=None) -> torch.Tensor:
    """The motion-preserving view of a batch: colour distortion then blur for video [B, T, C, H, W] in
    [0, 1]; the spectral change for audio features [B, T, bins]."""
    if kind == "video":
        return gaussian_blur(colour_distort(x, generator=generator), generator=generator)
    if kind == "audio":
        return spectral_distort(x, generator=generator)
    raise ValueError(f"motion_view: unknown data kind {kind!r}; expected video or audio")
