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


def _nll(dist, x):
    return -dist.log_prob(x).sum(tuple(range(1, x.dim()))).mean()


def test_reconstruction_gaussian_fixed_sigma_equals_normal_log_prob():
    torch.manual_seed(0)
    x, logits = torch.rand(2, 3, 1, 4, 4), torch.randn(2, 3, 1, 4, 4)
    for sigma in (1.0, 0.1):
        ref = _nll(Normal(torch.sigmoid(logits), sigma), x)
        assert losses.reconstruction(logits, x, "gaussian", sigma).item() == pytest.approx(ref.item(), rel=1e-5)
    feats = torch.randn(2, 3, 8)  # audio: the decoder output is the mean itself
    out = torch.randn(2, 3, 8)
    assert losses.reconstruction(out, feats, squash=False).item() == pytest.approx(_nll(Normal(out, 1.0), feats).item(),
                                                                                 rel=1e-5)
    # σ = 1 is ½ squared error plus the constant ½ log 2π per element (12 per sequence here)
    flat = torch.full((2, 3, 1, 2, 2), 0.25)
    assert losses.reconstruction(torch.zeros_like(flat), flat).item() == pytest.approx(
        12 * (0.5 * 0.0625 + 0.5 * math.log(2 * math.pi)), rel=1e-6)
    with pytest.raises(ValueError, match="loss.recon"):
        losses.reconstruction(logits, x, "l1")
    with pytest.raises(ValueError, match="recon_sigma"):
        losses.reconstruction(logits, x, "gaussian", 0.0)


def test_reconstruction_learned_sigma_per_channel_equals_normal_log_prob():
    torch.manual_seed(1)
    x, logits = torch.rand(2, 3, 3, 4, 4), torch.randn(2, 3, 3, 4, 4)
    log_sigma = torch.tensor([-1.0, 0.0, 0.5]).view(3, 1, 1).requires_grad_()
    ref = _nll(Normal(torch.sigmoid(logits), log_sigma.exp()), x)
    got = losses.reconstruction(logits, x, "gaussian-learned", log_sigma=log_sigma)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    got.backward()
    assert log_sigma.grad is not None and log_sigma.grad.abs().sum() > 0  # σ is trained
    with pytest.raises(ValueError, match="log σ"):
        losses.reconstruction(logits, x, "gaussian-learned")


def test_reconstruction_optimal_sigma_is_the_batch_rmse_and_carries_no_gradient_to_sigma():
    torch.manual_seed(2)
    x = torch.rand(4, 2, 1, 3, 3)
    logits = torch.randn(4, 2, 1, 3, 3, requires_grad=True)
    mean = torch.sigmoid(logits)
    sigma = (mean - x).pow(2).mean().sqrt()
    ref = _nll(Normal(mean, sigma), x)
    got = losses.reconstruction(logits, x, "gaussian-optimal")
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # at the optimum σ² = MSE the squared-error part is exactly ½ per element
    d = x[0].numel()
    assert got.item() == pytest.approx(d * (0.5 + 0.5 * math.log(2 * math.pi * sigma.item() ** 2)), rel=1e-5)
    # σ is detached: the gradient is the fixed-σ Gaussian's at that σ
    g = torch.autograd.grad(got, logits)[0]
    g_ref = torch.autograd.grad(_nll(Normal(torch.sigmoid(logits), sigma.detach()), x), logits)[0]
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_reconstruction_bce_equals_bernoulli_log_prob():
    torch.manual_seed(3)
    x = torch.randint(0, 2, (2, 3, 1, 4, 4)).float()
    logits = torch.randn(2, 3, 1, 4, 4)
    ref = _nll(torch.distributions.Bernoulli(logits=logits), x)
    assert losses.reconstruction(logits, x, "bce").item() == pytest.approx(ref.item(), rel=1e-5)


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
    assert torch.allclose(mat.float(), ref, atol=1e-5)


def _direct_log_density_matrix(z, mean, logvar):
    """The pairwise form the GEMM one replaces: an [..., M, M, D] intermediate (the reference, in float64)."""
    z, mean, logvar = z.double().unsqueeze(-2), mean.double().unsqueeze(-3), logvar.double().unsqueeze(-3)
    return (-0.5 * (losses.LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))).sum(-1)


@pytest.mark.parametrize("log_var", [-2.0, -12.0, -20.0])
def test_mws_mi_gemm_form_equals_the_direct_pairwise_form(monkeypatch, log_var):
    """The MI's value and gradients from the expanded (GEMM) log-density matrix equal the direct pairwise form
    in float64, for posteriors from broad to very sharp (σ = e^-10: 1/σ² ~ 5e8, where the expansion in fp32
    loses every digit), overlapping enough that the estimate is below its ceiling and has gradients."""
    torch.manual_seed(0)
    m, t, d = 16, 5, 8
    s = math.exp(log_var / 2)
    params = [torch.randn(m, d) * s * 0.5 + 1, torch.randn(m, d) * 0.3 + log_var,
              torch.randn(m, t, d) * s * 0.5 - 2, torch.randn(m, t, d) * 0.3 + log_var]
    eps_f, eps_t = torch.randn(m, d), torch.randn(m, t, d)

    def mi_and_grads():
        p = [x.clone().requires_grad_() for x in params]
        zf, zt = p[0] + eps_f * (0.5 * p[1]).exp(), p[2] + eps_t * (0.5 * p[3]).exp()
        mi = losses.mws_mutual_information(zf, p[0], p[1], zt, p[2], p[3])
        return mi.item(), torch.autograd.grad(mi, p)

    fast, fast_grads = mi_and_grads()
    monkeypatch.setattr(losses, "log_density_matrix", _direct_log_density_matrix)
    ref, ref_grads = mi_and_grads()
    assert 0.1 < ref < losses.mi_ceiling(m, t) - 0.1  # a case with something to compute
    assert fast == pytest.approx(ref, abs=1e-4)
    for g, g_ref in zip(fast_grads, ref_grads):
        assert g_ref.abs().max() > 0
        assert torch.allclose(g, g_ref, rtol=1e-3, atol=1e-4 * g_ref.abs().max().item())


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


def test_mws_mi_sum_vs_mean_over_time():
    torch.manual_seed(0)
    m, t, d = 64, 5, 2
    zf_mean, zt_mean = torch.randn(m, d), torch.randn(m, t, d)
    lv_f, lv_t = torch.full((m, d), -1.0), torch.full((m, t, d), -1.0)
    zf, zt = zf_mean + 0.6 * torch.randn_like(zf_mean), zt_mean + 0.6 * torch.randn_like(zt_mean)
    total = losses.mws_mutual_information(zf, zf_mean, lv_f, zt, zt_mean, lv_t, "sum")
    mean = losses.mws_mutual_information(zf, zf_mean, lv_f, zt, zt_mean, lv_t, "mean")
    assert total.item() == pytest.approx(t * mean.item(), rel=1e-5)
    # each step's estimate alone (T = 1) is the mean's summand
    per_step = [losses.mws_mutual_information(zf, zf_mean, lv_f, zt[:, i:i + 1], zt_mean[:, i:i + 1],
                                              lv_t[:, i:i + 1]).item() for i in range(t)]
    assert mean.item() == pytest.approx(sum(per_step) / t, rel=1e-5)
    with pytest.raises(ValueError, match="mi_reduce"):
        losses.mws_mutual_information(zf, zf_mean, lv_f, zt, zt_mean, lv_t, "max")


def test_mws_mi_reaches_its_ceiling_for_sharp_independent_latents():
    """Sharp posteriors saturate the MWS estimate at log M per step, though z_f and z_t are independent."""
    torch.manual_seed(0)
    m, t, d = 16, 8, 4
    zf_mean, zt_mean = torch.randn(m, d), torch.randn(m, t, d)  # independent draws
    lv_f, lv_t = torch.full((m, d), -16.0), torch.full((m, t, d), -16.0)  # σ ≈ 3e-4
    est = losses.mws_mutual_information(zf_mean, zf_mean, lv_f, zt_mean, zt_mean, lv_t, "sum").item()
    assert est == pytest.approx(losses.mi_ceiling(m, t, "sum"), rel=1e-4)
    assert losses.mi_ceiling(m, t, "sum") == pytest.approx(t * math.log(16))  # 22.2 nats at T = 8, M = 16
    assert losses.mi_ceiling(m, t, "mean") == pytest.approx(math.log(16))
    est_mean = losses.mws_mutual_information(zf_mean, zf_mean, lv_f, zt_mean, zt_mean, lv_t, "mean").item()
    assert est_mean == pytest.approx(math.log(m), rel=1e-4)


def test_learned_sigma_starts_at_the_data_std():
    """gaussian-learned starts at the train data's std per channel (video) / per bin (audio), floored;
    a positive recon_sigma_init overrides it; models without a learned σ are left alone."""
    import math

    from torch import nn

    from models.base import calibrate_recon_sigma
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(10, 4, 3, 8, 8, generator=g) * 255).to(torch.uint8)
    x[:, :, 0] = 7  # constant channel: the floor
    x[:, :, 1] //= 2
    m = nn.Module()
    m.log_sigma = nn.Parameter(torch.zeros(3, 1, 1))
    assert calibrate_recon_sigma(m, x, "video")
    xf = x.float() / 255
    want = torch.tensor([0.01, xf[:, :, 1].std().item(), xf[:, :, 2].std().item()])
    assert torch.allclose(m.log_sigma.detach().exp().flatten(), want, rtol=1e-5)
    a = nn.Module()
    a.log_sigma = nn.Parameter(torch.zeros(5))
    xa = torch.randn(64, 20, 5, generator=g) * torch.arange(1, 6)
    calibrate_recon_sigma(a, xa, "audio")
    assert torch.allclose(a.log_sigma.detach().exp(), xa.reshape(-1, 5).std(0), rtol=1e-5)
    calibrate_recon_sigma(a, xa, "audio", init=0.5)
    assert torch.allclose(a.log_sigma.detach(), torch.full((5,), math.log(0.5)))
    assert not calibrate_recon_sigma(nn.Linear(2, 2), xa, "audio")
    with pytest.raises(ValueError, match="recon_sigma_init"):
        calibrate_recon_sigma(a, xa, "audio", init=-1.0)


def _fit_density_ratio(zf_zt, steps=400, m=16, t=4, seed=0):
    """A DensityRatioMI whose classifier is trained on fresh batches from zf_zt(generator) -> (zf, zt)."""
    from models.losses import DensityRatioMI
    torch.manual_seed(seed)
    est = DensityRatioMI(4, 4, 32)
    opt = torch.optim.Adam(est.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        _, loss = est(*zf_zt(gen, m, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(sum(est(*zf_zt(gen, m, t), reduce="mean")[0] for _ in range(20)) / 20)


def test_density_ratio_mi_is_near_zero_for_independent_latents_and_has_no_log_m_ceiling():
    import math
    independent = lambda g, m, t: (torch.randn(m, 4, generator=g), torch.randn(m, t, 4, generator=g))  # noqa: E731

    def copied(g, m, t):  # z_t is z_f (plus a little noise) at every step: strongly dependent
        zf = torch.randn(m, 4, generator=g)
        return zf, zf.unsqueeze(1).expand(-1, t, -1) + 0.05 * torch.randn(m, t, 4, generator=g)
    assert abs(_fit_density_ratio(independent)) < 0.15
    # the MWS estimate of sharp posteriors is capped at log M = 2.77 nats per step, whatever the dependence
    assert _fit_density_ratio(copied) > math.log(16)


def test_density_ratio_mi_gradients_reach_only_what_each_part_should():
    from models.losses import DensityRatioMI
    est = DensityRatioMI(3, 2, 8)
    zf, zt = torch.randn(5, 3, requires_grad=True), torch.randn(5, 4, 2, requires_grad=True)
    mi, classifier = est(zf, zt)
    mi.backward(retain_graph=True)
    assert zf.grad is not None and zt.grad is not None
    assert all(p.grad is None for p in est.parameters()), "the MI term must not train the classifier"
    zf.grad = zt.grad = None
    classifier.backward()
    assert zf.grad is None and zt.grad is None, "the classifier loss must not move the latents"
    assert all(p.grad is not None for p in est.parameters())
    with pytest.raises(ValueError, match="at least 2 sequences"):
        est(zf[:1], zt[:1])
    with pytest.raises(ValueError, match="loss.mi_reduce='max'"):
        est(zf, zt, reduce="max")
