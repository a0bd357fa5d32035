"""Known-answer tests for the loss terms of Eq. 9."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from models import losses
from models.base import UpsampleConv3x3


def test_kl_static_matches_torch_distributions():
    torch.manual_seed(0)
    m, lv = torch.randn(5, 7), torch.randn(5, 7)
    ref = kl_divergence(Normal(m, (0.5 * lv).exp()), Normal(0.0, 1.0)).sum(-1).mean()
    assert torch.allclose(losses.kl_static(m, lv), ref, atol=1e-5)


def test_kl_dynamic_matches_torch_distributions():
    torch.manual_seed(1)
    mq, lq, mp, lp = (torch.randn(4, 6, 3) for _ in range(4))
    ref = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp())).sum((-1, -2)).mean()
    assert torch.allclose(losses.kl_dynamic(mq, lq, mp, lp), ref, atol=1e-5)


def test_triplet_hand_computation():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 1.0]])   # distances 5, 0
    n = torch.tensor([[0.0, 1.0], [1.0, 4.0]])   # distances 1, 3
    # max(5 - 1 + 1, 0) = 5 ; max(0 - 3 + 1, 0) = 0 -> mean 2.5
    assert losses.triplet(a, p, n, margin=1.0).item() == pytest.approx(2.5, abs=1e-5)


def test_reconstruction_gaussian_is_half_squared_error():
    x = torch.full((2, 3, 1, 2, 2), 0.25)
    logits = torch.zeros_like(x)  # sigmoid -> 0.5, error 0.25 per pixel, 12 pixels per sequence
    assert losses.reconstruction(logits, x).item() == pytest.approx(0.5 * 12 * 0.0625)
    assert losses.reconstruction(logits, x, sigma=0.5).item() == pytest.approx(4 * 0.5 * 12 * 0.0625)
    with pytest.raises(ValueError, match="loss.recon"):
        losses.reconstruction(logits, x, "l1")


def test_patch_targets_spread_over_topk():
    idx = torch.tensor([[[3, 1, 0]]])
    t = losses.patch_targets(idx, 2, 4)
    assert t.tolist() == [[[0.0, 0.5, 0.0, 0.5]]]


def _mi(zf_mean, zf_std, zt_mean, zt_std):
    zf = zf_mean + zf_std * torch.randn_like(zf_mean)
    zt = zt_mean + zt_std * torch.randn_like(zt_mean)
    return losses.mws_mutual_information(zf, zf_mean, 2 * zf_std.log(), zt, zt_mean, 2 * zt_std.log()).item()


def test_mws_mi_near_zero_for_independent_latents_and_large_for_copies():
    torch.manual_seed(0)
    m, t, d = 512, 3, 2
    zf_mean, zt_mean = torch.randn(m, d), torch.randn(m, t, d)
    std_f, std_t = torch.full((m, d), 0.5), torch.full((m, t, d), 0.5)
    independent = _mi(zf_mean, std_f, zt_mean, std_t)
    copy_mean = zf_mean[:, None].expand(m, t, d).contiguous()
    # z_t = copy of z_f: sample z_f once and reuse it for every step
    zf = zf_mean + 0.5 * torch.randn_like(zf_mean)
    zt = zf[:, None].expand(m, t, d)
    copied = losses.mws_mutual_information(zf, zf_mean, 2 * std_f.log(), zt, copy_mean, 2 * std_t.log()).item()
    assert abs(independent) < 0.1 * t
    assert copied > 1.0 * t  # true MI per step is several nats for this signal-to-noise ratio
    assert copied > 10 * abs(independent)


def test_mws_log_density_matrix_matches_normal_log_prob():
    torch.manual_seed(0)
    z, mean, logvar = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    mat = losses.log_density_matrix(z, mean, logvar)
    ref = Normal(mean[None], (0.5 * logvar[None]).exp()).log_prob(z[:, None]).sum(-1)
    assert torch.allclose(mat, ref, atol=1e-5)


def test_upsample_conv_equals_upsample_then_conv():
    torch.manual_seed(0)
    layer = UpsampleConv3x3(5, 7)
    x = torch.randn(2, 5, 6, 4, requires_grad=True)
    ref = layer.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    out = layer(x)
    assert out.shape == (2, 7, 12, 8)
    assert torch.allclose(out, ref, atol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), (x, layer.conv.weight))
    g_out = torch.autograd.grad(layer(x).square().sum(), (x, layer.conv.weight))
    for a, b in zip(g_out, g_ref):
        assert torch.allclose(a, b, atol=1e-4)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert torch.allclose(layer.to(memory_format=torch.channels_last)(x_cl), ref, atol=1e-5)
