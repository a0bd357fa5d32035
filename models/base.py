"""The SequentialModel interface and the building blocks the sequence models share."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Latents:
    """Posterior (or prior) parameters and samples. z_f: [B, d_zf]; z_t: [B, T, d_zt]."""
    zf_mean: torch.Tensor
    zf_logvar: torch.Tensor
    zf: torch.Tensor
    zt_mean: torch.Tensor
    zt_logvar: torch.Tensor
    zt: torch.Tensor


class SequentialModel(nn.Module):
    """What the trainer, protocols and tables may call. Capabilities gate optional parts:
    encode, swap, sample, generate, speaker, adversarial (own train_step)."""
    capabilities: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset({"video", "audio"})  # data modalities the model is built for

    def loss_terms(self, batch) -> dict[str, torch.Tensor]:
        """UNWEIGHTED loss terms; keys in `self.loss_weights()` are optimised, the rest are diagnostics."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Term name -> weight in the objective; the trainer forms Σ weight·term over these keys."""
        raise NotImplementedError

    def encode(self, x) -> Latents:
        raise NotImplementedError

    def decode(self, z_f, z_t) -> torch.Tensor:
        raise NotImplementedError

    def sample_prior(self, n: int, steps: int) -> Latents:
        raise NotImplementedError

    def generate(self, labels: dict, steps: int, n: int | None = None) -> torch.Tensor:
        """Conditional generators: sequences for labels (family -> [n]), or n random ones."""
        raise NotImplementedError

    def configure_optimizers(self, train_cfg) -> list[torch.optim.Optimizer]:
        return [adam(self.parameters(), train_cfg)]


def adam(params, train_cfg, **kw) -> torch.optim.Adam:
    """Adam with the run's lr and betas; the fused kernel on CPU and CUDA (one pass over all parameters instead
    of ~10 small ops per tensor: 0.65 vs 1.7 ms per step for the speech S3VAE's 41 tensors, 0.9 vs 3.2 ms for
    sprites', 1 thread, 2-core AVX2; the same update up to float rounding)."""
    params = list(params)
    fused = {"fused": True} if params and params[0].device.type in ("cpu", "cuda") else {}
    return torch.optim.Adam(params, lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2), **fused, **kw)


def scaled(ch: int, width: float) -> int:
    return max(4, int(round(ch * width)))


def conv_depth(size: int) -> int:
    """Number of stride-2 stages from `size` down to 4×4 (64 → 4, 32 → 3): depth follows image size."""
    d = int(math.log2(size)) - 2
    if d < 1 or 4 * 2 ** d != size:
        raise ValueError(f"image size {size} is not supported: expected a power of two ≥ 8 (e.g. 32 or 64)")
    return d


class ConvFrameEncoder(nn.Module):
    """Appendix D encoder: 4×4 stride-2 convs (64/128/256/512) + BN + LReLU(0.2), then a 4×4 valid conv
    to `out_dim` + BN + tanh. Frames [N, C, H, W] -> features [N, out_dim]."""
    WIDTHS = (64, 128, 256, 512)

    def __init__(self, channels: int, size: int, out_dim: int = 128, width: float = 1.0):
        super().__init__()
        layers, c_in = [], channels
        for w in self.WIDTHS[:conv_depth(size)]:
            c = scaled(w, width)
            layers += [nn.Conv2d(c_in, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        layers += [nn.Conv2d(c_in, out_dim, 4, 1, 0, bias=False), nn.BatchNorm2d(out_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return conv_stack(self.net, x, self.training).flatten(1)


def _conv_op(layer):
    """(op(x, weight, bias), weight, bias, out-channel axis of the weight) of a conv-like layer, so that a
    BatchNorm after it can be folded into its weight; None for any other layer."""
    F = nn.functional
    if isinstance(layer, UpsampleConv3x3):
        return (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1)), layer.transposed_weight(), None, 1
    if isinstance(layer, nn.ConvTranspose2d):
        return (lambda x, w, b: F.conv_transpose2d(x, w, b, layer.stride, layer.padding)), layer.weight, layer.bias, 1
    if isinstance(layer, nn.Conv2d):
        return (lambda x, w, b: F.conv2d(x, w, b, layer.stride, layer.padding)), layer.weight, layer.bias, 0
    return None


def _foldable(bn) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.track_running_stats


def fold_batchnorm(weight, bias, bn: nn.BatchNorm2d, out_axis: int):
    """(weight, bias) of conv∘BN in eval mode: BN's affine map on running statistics folded into the conv."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shape = [1] * weight.dim()
    shape[out_axis] = -1
    folded_bias = bn.bias - bn.running_mean * scale
    return weight * scale.view(shape), folded_bias if bias is None else folded_bias + bias * scale


def conv_stack(layers, h, training: bool):
    """Conv / BatchNorm / activation layers in order. In training exactly each layer in turn; in eval every
    BatchNorm is folded into the conv before it: one pass over the activations instead of two (BN on
    CPU costs as much as a small conv; measured in `bench --eval --profile-ops`)."""
    mods, i = list(layers), 0
    if training:
        for m in mods:
            h = m(h)
        return h
    while i < len(mods):
        op = _conv_op(mods[i])
        if op is not None and i + 1 < len(mods) and _foldable(mods[i + 1]):
            fn, w, b, axis = op
            h = fn(h, *fold_batchnorm(w, b, mods[i + 1], axis))
            i += 2
        else:
            h = mods[i](h)
            i += 1
    return h


# Nearest-upsample(2×) + 3×3 conv (pad 1) is exactly a stride-2 transposed conv with a 4×4 kernel:
# transposed tap k (of 4, per axis) receives the 3×3 taps listed in row k (output phase a and
# low-res offset r give k = 3 − a − 2r; phase 0 reads offsets (−1, 0), phase 1 reads (0, +1)).
_TRANSPOSE_TAPS = torch.tensor([[0., 0., 1.], [0., 1., 1.], [1., 1., 0.], [1., 0., 0.]])


class UpsampleConv3x3(nn.Module):
    """Exactly nearest-upsample(2×) followed by a 3×3 conv (pad 1), computed without the upsample.

    The 3×3 weight (the module's parameter, an nn.Conv2d's) is folded into a 4×4 stride-2 transposed
    conv: 16 instead of 36 multiply-adds per input pixel, no 4× larger intermediate, one oneDNN/cuDNN
    call. Measured on a 2-core AVX2 CPU (the decoder's three stages at width 0.25, fwd+bwd, 128 frames):
    64 ms, against 121 ms for upsample+conv and 143 ms for the earlier four-phase 2×2 convs
    (scratch A/B of 2026-12-03, channels_last; NCHW the same within 5 %)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)  # holds the 3×3 weight
        self.register_buffer("taps", _TRANSPOSE_TAPS.clone(), persistent=False)

    def transposed_weight(self):
        """The equivalent 4×4 transposed-conv weight [I, O, 4, 4]."""
        taps = self.taps.to(self.conv.weight.dtype)
        return torch.einsum("ky,lx,oiyx->iokl", taps, taps, self.conv.weight)

    def forward(self, x):
        return nn.functional.conv_transpose2d(x, self.transposed_weight(), stride=2, padding=1)


class ConvFrameDecoder(nn.Module):
    """Appendix D decoder: 4×4 convT(512) + BN + ReLU, then [upsample, 3×3 conv] stages (256/128/128/64),
    1×1 conv + sigmoid. Latent [N, d] -> frames [N, C, H, W] in [0, 1] (logits kept for BCE)."""
    WIDTHS = (512, 256, 128, 128, 64)

    def __init__(self, in_dim: int, channels: int, size: int, width: float = 1.0):
        super().__init__()
        d = conv_depth(size)
        widths = [scaled(w, width) for w in self.WIDTHS[:d] + self.WIDTHS[-1:]]
        layers = [nn.ConvTranspose2d(in_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for c_in, c in zip(widths[:-1], widths[1:]):
            layers += [UpsampleConv3x3(c_in, c), nn.BatchNorm2d(c), nn.ReLU(True)]
        layers += [nn.Conv2d(widths[-1], channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        """Logits of the frames (apply sigmoid for images)."""
        return latent_conv_stack(self.net, z, self.training)


def latent_conv_stack(net, z, training: bool):
    """`net` (a transposed conv of a 1×1 input, then conv / BatchNorm / activation layers) applied to latents
    z [N, I]. The first layer, a k×k transposed conv of a 1×1 input, is computed as the matmul it is
    ([N, I] @ [I, k·k·O]: one GEMM instead of a slow transposed-conv kernel), written straight into
    channels-last strides; in eval the BatchNorms are folded into the convs before them (`conv_stack`)."""
    first, rest = net[0], list(net)[1:]
    w, b = first.weight, first.bias  # [I, O, k, k]
    if not training and _foldable(rest[0]):
        w, b = fold_batchnorm(w, b, rest[0], 1)
        rest = rest[1:]
    i, o, k, _ = w.shape
    h = z @ w.permute(0, 2, 3, 1).reshape(i, k * k * o)
    if b is not None:
        h = h + b.repeat(k * k)
    return conv_stack(rest, h.view(-1, k, k, o).permute(0, 3, 1, 2), training)


class MLPFrameEncoder(nn.Module):
    """Audio frame encoder (the seed gives none): bins -> 256 -> 256 -> out_dim."""

    def __init__(self, bins: int, out_dim: int = 128, width: float = 1.0):
        super().__init__()
        h = scaled(256, width)
        self.net = nn.Sequential(nn.Linear(bins, h), nn.LeakyReLU(0.2, True), nn.Linear(h, h),
                                 nn.LeakyReLU(0.2, True), nn.Linear(h, out_dim), nn.Tanh())

    def forward(self, x):
        return self.net(x.flatten(1))


class MLPFrameDecoder(nn.Module):
    def __init__(self, in_dim: int, bins: int, width: float = 1.0):
        super().__init__()
        h = scaled(256, width)
        self.net = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(True), nn.Linear(h, h), nn.ReLU(True),
                                 nn.Linear(h, bins))

    def forward(self, z):
        return self.net(z)[:, None, :]


def recon_log_sigma(info, loss_cfg):
    """The trained log σ of `loss.recon=gaussian-learned` (one per image channel, or per feature bin for
    audio; σ = 1 here, the Trainer then applies `loss.recon_sigma_init`), None for the other likelihoods.
    Refuses bce on audio features, which are standardised log-mels, not probabilities."""
    from models.losses import RECON_KINDS
    if loss_cfg.recon not in RECON_KINDS:
        raise ValueError(f"loss.recon={loss_cfg.recon!r}: expected one of {', '.join(RECON_KINDS)}")
    if loss_cfg.recon == "bce" and info.kind == "audio":
        raise ValueError(f"loss.recon=bce: dataset {info.name!r} has real-valued features, not values in [0, 1]; "
                         "use a Gaussian likelihood")
    if loss_cfg.recon != "gaussian-learned":
        return None
    return nn.Parameter(torch.zeros((info.channels, 1, 1) if info.kind == "video" else (info.size,)))


def calibrate_recon_sigma(model, x: torch.Tensor, kind: str, init: float = 0.0) -> bool:
    """Start the learned σ of `loss.recon=gaussian-learned` at `init`, or where init is 0 at the
    training data's standard deviation per channel (video, pixels in [0, 1]) or per feature bin (audio):
    the likelihood's maximum for a decoder that still outputs the mean. From σ = 1, Adam moves log σ
    about lr per step, so reaching SMMNIST's σ* ≈ 0.1 takes ~2,000 steps at lr 1e-3, steps in which
    reconstruction is under-weighted against the KL. `x`: a sample of training sequences. Returns
    whether the model has such a σ."""
    from models.losses import MIN_LOG_SIGMA
    if not (init >= 0 and math.isfinite(init)):
        raise ValueError(f"loss.recon_sigma_init={init}: expected a σ > 0, or 0 for the train data's std")
    log_sigma = getattr(model, "log_sigma", None)
    if not isinstance(log_sigma, nn.Parameter):
        return False
    with torch.no_grad():
        if init > 0:
            value = torch.full_like(log_sigma, math.log(init))
        else:
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            dims = [d for d in range(x.dim()) if d != (2 if kind == "video" else x.dim() - 1)]
            # floor: a (near-)constant channel would start with a σ so sharp that the first steps explode
            value = x.std(dim=dims).clamp(min=max(0.01, math.exp(MIN_LOG_SIGMA))).log().reshape(log_sigma.shape)
        log_sigma.copy_(value.to(log_sigma))
    return True


def recon_terms(out, x, loss_cfg, squash: bool, log_sigma=None) -> dict:
    """The likelihood term `recon` of loss.recon, with two diagnostics that read the same whatever the
    likelihood: `mse` (per element) and, for the Gaussians, `recon_sigma` (the σ in use: fixed, learned
    (mean over channels) or optimal)."""
    import math

    from models import losses
    with torch.no_grad():
        mse = ((torch.sigmoid(out.float()) if squash else out.float()) - x).pow(2).mean()
    sigma = {"gaussian": lambda: torch.tensor(float(loss_cfg.recon_sigma)),
             "gaussian-learned": lambda: log_sigma.detach().float().clamp(min=losses.MIN_LOG_SIGMA).exp().mean(),
             "gaussian-optimal": lambda: mse.clamp(min=math.exp(2 * losses.MIN_LOG_SIGMA)).sqrt()}
    terms = {"recon": losses.reconstruction(out, x, loss_cfg.recon, loss_cfg.recon_sigma, squash, log_sigma), "mse": mse}
    if loss_cfg.recon in sigma:  # bce has no σ
        terms["recon_sigma"] = sigma[loss_cfg.recon]()
    return terms


def frame_networks(info, feat_dim: int, latent_dim: int, width: float):
    """(encoder, decoder) for a dataset: convs for video, MLPs for audio features."""
    if info.kind == "audio":
        return MLPFrameEncoder(info.size, feat_dim, width), MLPFrameDecoder(latent_dim, info.size, width)
    return (ConvFrameEncoder(info.channels, info.size, feat_dim, width),
            ConvFrameDecoder(latent_dim, info.channels, info.size, width))


class GaussianHead(nn.Module):
    """Linear map to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.mean = nn.Linear(in_dim, out_dim)
        self.logvar = nn.Linear(in_dim, out_dim)

    def forward(self, h):
        return self.mean(h), self.logvar(h)


def reparameterize(mean, logvar, sample: bool = True):
    if not sample:
        return mean
    return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)


class LSTMPrior(nn.Module):
    """p(z_t | z_<t): an LSTM fed the previous z (zeros at t=1) emitting mean and log-variance."""

    def __init__(self, d_zt: int, hidden: int):
        super().__init__()
        self.d_zt = d_zt
        self.lstm = nn.LSTM(d_zt, hidden, batch_first=True)
        self.head = GaussianHead(hidden, d_zt)

    def forward(self, z_post):
        """Prior parameters for every step given the posterior samples z_{1:T} (teacher forcing)."""
        prev = torch.cat([torch.zeros_like(z_post[:, :1]), z_post[:, :-1]], 1)
        h, _ = self.lstm(prev)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n: int, steps: int, device, sample: bool = True):
        z = torch.zeros(n, 1, self.d_zt, device=device)
        state, means, logvars, zs = None, [], [], []
        for _ in range(steps):
            h, state = self.lstm(z, state)
            m, lv = self.head(h)
            z = reparameterize(m, lv, sample)
            means.append(m), logvars.append(lv), zs.append(z)
        return torch.cat(means, 1), torch.cat(logvars, 1), torch.cat(zs, 1)
