"""C-DSVAE: its InfoNCE term, its two augmentations, its encoder and one training step."""
import math

import pytest
import torch

from benchmark.config import RunConfig, resolve_config
from benchmark.trainer import weighted_total
from benchmark.zoo import MODELS
from models import augment
from models.cdsvae import info_nce
from tests.conftest import tiny_batch, tiny_info


def tiny_cdsvae(info, **loss):
    cfg = RunConfig()
    cfg.model.width, cfg.model.hidden, cfg.model.feat_dim, cfg.model.d_zf, cfg.model.d_zt = 0.125, 16, 16, 6, 3
    cfg.model.dfp_hidden = 8
    for k, v in {**MODELS.get("cdsvae").defaults, **{f"loss.{k}": v for k, v in loss.items()}}.items():
        setattr(cfg.loss, k.split(".")[1], v)
    torch.manual_seed(0)
    return MODELS.build("cdsvae", info, cfg.model, cfg.loss)


# ---- InfoNCE ------------------------------------------------------------------------------------------
def test_info_nce_known_answer():
    """Identical views, orthogonal negatives: log(1 + (2M−2)e^(−1/τ)) — every positive at cosine 1, every
    negative at 0; swapping the positives (each view's partner is another sequence's) is far worse."""
    m, tau = 4, 0.5
    a = 3.0 * torch.eye(8)[:m]          # orthogonal rows; the scale does not matter (cosine)
    same = info_nce(a, a.clone(), tau)
    assert same.item() == pytest.approx(math.log(1 + (2 * m - 2) * math.exp(-1 / tau)), rel=1e-5)
    # no configuration can beat every negative at cosine −1: a lower bound, and identical views are near it
    assert same.item() > math.log(1 + (2 * m - 2) * math.exp(-2 / tau))
    assert same.item() < 0.6
    swapped = info_nce(a, a.roll(1, 0), tau)  # b_i = a_{i−1}: the true partner sits among the negatives
    assert swapped.item() == pytest.approx(math.log(math.exp(1 / tau) + 2 * m - 2), rel=1e-5)
    assert swapped.item() == pytest.approx(same.item() + 1 / tau, rel=1e-5)  # log(e^(1/τ) + 2M − 2) − log(1 + …)
    # symmetric in the two views, and a lower temperature sharpens the identical-view optimum
    assert info_nce(a.roll(1, 0), a, tau).item() == pytest.approx(swapped.item(), rel=1e-6)
    assert info_nce(a, a, 0.1) < same
    with pytest.raises(ValueError, match="nce_tau"):
        info_nce(a, a, 0.0)


def test_info_nce_gradient_pulls_views_together():
    torch.manual_seed(0)
    a = torch.randn(6, 5, requires_grad=True)
    b = torch.randn(6, 5)
    before = info_nce(a, b).item()
    info_nce(a, b).backward()
    with torch.no_grad():
        a2 = a - 0.5 * a.grad
    assert info_nce(a2, b).item() < before


# ---- augmentations --------------------------------------------------------------------------------------
def moving_squares(b=12, t=8, size=32, seed=0):
    """Sprites-like sequences: a flat background and a two-colour 'character' moving one pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(b, t, 3, size, size)
    x[:] = (0.2 + 0.6 * torch.rand(b, 1, 3, 1, 1, generator=g))
    body, head = 0.1 + 0.8 * torch.rand(b, 3, generator=g), 0.1 + 0.8 * torch.rand(b, 3, generator=g)
    for i in range(b):
        for k in range(t):
            r, c = 8 + (i % 3), 4 + k * (1 + i % 2)
            x[i, k, :, r:r + 10, c:c + 6] = body[i].view(3, 1, 1)
            x[i, k, :, r - 4:r, c + 1:c + 5] = head[i].view(3, 1, 1)
    return x


def motion_mask(x):
    """Pixels that change between consecutive frames: [B, T−1, H, W]."""
    return (x[:, 1:] - x[:, :-1]).abs().amax(2) > 1e-6


@pytest.mark.parametrize("shape", [(5, 7, 3, 16, 16), (4, 20, 80)])
def test_shuffle_keeps_each_sequences_frames(shape):
    x = torch.randn(shape)
    torch.manual_seed(1)
    y = augment.shuffle_frames(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    moved = 0
    for xb, yb in zip(x, y):
        d = torch.cdist(yb.flatten(1), xb.flatten(1))   # [T, T]: each shuffled frame is one of the originals
        src = d.argmin(1)
        assert torch.equal(yb, xb[src]), "frames are copied, not altered"
        assert sorted(src.tolist()) == list(range(shape[1])), "the multiset of frames is kept"
        moved += int((src != torch.arange(shape[1])).any())
    assert moved == shape[0], "every sequence is reordered"
    torch.manual_seed(1)
    assert torch.equal(augment.shuffle_frames(x), y), "seeded through torch's RNG"


def test_colour_distortion_keeps_motion_mask_and_changes_colours():
    x = moving_squares()
    torch.manual_seed(0)
    y = augment.colour_distort(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    # one pointwise colour map per sequence, the same for every frame: no pixel starts to move
    assert not (motion_mask(y) & ~motion_mask(x)).any()
    assert (y - x).abs().mean() > 0.05, "the appearance changes"
    # an injective map (channel order alone) keeps the motion mask exactly and still changes colours
    torch.manual_seed(0)
    p = augment.colour_distort(x, jitter_p=0.0, gray_p=0.0)
    assert torch.equal(motion_mask(p), motion_mask(x))
    assert torch.equal(p.sort(2).values, x.sort(2).values), "the same channel values, in another order"
    assert sum(not torch.equal(pi, xi) for pi, xi in zip(p, x)) >= 6
    # the mean colour of a sequence moves: what the static side should not be able to rely on
    shift = (y.mean((1, 3, 4)) - x.mean((1, 3, 4))).abs().amax(1)
    assert (shift > 0.05).float().mean() > 0.5


def test_motion_view_is_framewise_and_creates_no_motion():
    """Frame t of the view depends on frame t alone: augmenting then reordering time is reordering then
    augmenting (same draws), and a still sequence stays still — blur included."""
    x = moving_squares(b=6, size=32)
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = augment.motion_view(x, "video", generator=g())[:, perm]
    b = augment.motion_view(x[:, perm], "video", generator=g())
    assert torch.allclose(a, b, atol=1e-6)
    still = x[:, :1].expand_as(x).contiguous()
    v = augment.motion_view(still, "video", generator=g())
    assert (v - v[:, :1]).abs().max() < 1e-6
    assert v.shape == x.shape and 0 <= v.min() and v.max() <= 1
    blurred = augment.gaussian_blur(x, p=1.0, generator=g())
    assert not torch.allclose(blurred, x) and blurred.shape == x.shape
    torch.manual_seed(2)
    first = augment.motion_view(x, "video")
    torch.manual_seed(2)
    assert torch.equal(augment.motion_view(x, "video"), first), "seeded through torch's RNG"


def test_audio_motion_view_is_framewise_and_changes_the_spectrum():
    torch.manual_seed(0)
    x = torch.randn(4, 20, 80)
    perm = torch.randperm(20)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y = augment.motion_view(x, "audio", generator=g())
    assert y.shape == x.shape
    assert torch.allclose(y[:, perm], augment.motion_view(x[:, perm], "audio", generator=g()), atol=1e-6)
    assert (y - x).abs().mean() > 0.1
    still = x[:, :1].expand_as(x).contiguous()
    s = augment.motion_view(still, "audio", generator=g())
    assert (s - s[:, :1]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="kind"):
        augment.motion_view(x, "text")


# ---- model ----------------------------------------------------------------------------------------------
def test_zt_posterior_sees_the_whole_sequence_but_not_zf():
    info = tiny_info(frames=6)
    model = tiny_cdsvae(info).eval()
    x = torch.rand(3, 6, 3, 16, 16)
    lat = model.encode(x, sample=False)
    x2 = x.clone()
    x2[:, 4:] = torch.rand_like(x2[:, 4:])
    assert not torch.allclose(model.encode(x2, sample=False).zt_mean[:, :4], lat.zt_mean[:, :4]), "bidirectional"
    with torch.no_grad():
        for p in model.zf_head.parameters():
            p.add_(1.0)
    lat3 = model.encode(x, sample=False)
    assert not torch.allclose(lat3.zf_mean, lat.zf_mean)
    assert torch.equal(lat3.zt_mean, lat.zt_mean), "q(z_t | x_1:T) does not read z_f"
    assert not hasattr(model, "lstm_z")


def test_one_step_on_a_sprites_shaped_batch():
    """Every term is logged, finite, and one Adam step leaves finite weights and finite terms."""
    info = tiny_info(size=32, frames=8)
    model = tiny_cdsvae(info)
    batch = tiny_batch(info, n=8)
    batch["x"] = moving_squares(b=8, t=8, size=32)
    weights = model.loss_weights()
    assert {k: weights[k] for k in ("recon", "kl_f", "kl_t", "mi", "nce_f", "nce_t")} == \
        {"recon": 1.0, "kl_f": 1.0, "kl_t": 1.0, "mi": 1.0, "nce_f": 10.0, "nce_t": 10.0}
    assert weights["scc"] == 0 and weights.get("dfp", 0) == 0
    opt = model.configure_optimizers(RunConfig().train)[0]
    terms = model.loss_terms(batch)
    expected = {"recon", "mse", "recon_sigma", "kl_f", "kl_t", "mi", "mi_ceiling", "scc", "nce_f", "nce_t"}
    assert expected <= set(terms) and {k for k, w in weights.items() if w} <= set(terms)
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert terms["nce_f"].requires_grad and terms["nce_t"].requires_grad and not terms["scc"].requires_grad
    assert terms["mi_ceiling"].item() == pytest.approx(math.log(8)), "MI averaged over time (C-DSVAE)"
    opt.zero_grad()
    weighted_total(terms, weights).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    after = model.loss_terms(batch)
    assert set(after) == set(terms) and all(torch.isfinite(t) for t in after.values())


def test_zero_weight_contrastive_terms_are_diagnostics():
    info = tiny_info()
    model = tiny_cdsvae(info, lambda_nce_f=0.0, lambda_nce_t=0.0)
    terms = model.loss_terms(tiny_batch(info))
    assert not terms["nce_f"].requires_grad and not terms["nce_t"].requires_grad
    with pytest.raises(ValueError, match="nce_tau"):
        tiny_cdsvae(info, nce_tau=-1.0)


def test_preset_is_the_public_codes_recipe():
    cfg = resolve_config("cdsvae", "sprites", "paper")
    lc, mc = cfg.loss, cfg.model
    assert (lc.lambda_nce_f, lc.lambda_nce_t, lc.nce_tau, lc.lambda_mi, lc.mi_reduce) == (10.0, 10.0, 0.5, 1.0, "mean")
    assert (lc.lambda_scc, lc.lambda_dfp) == (0.0, 0.0)
    assert (mc.d_zf, mc.d_zt, mc.hidden, mc.feat_dim, cfg.train.lr) == (256, 32, 256, 128, 1e-3)
    assert resolve_config("cdsvae", "sprites", "cpu", overrides={"loss.lambda_nce_t": "3"}).loss.lambda_nce_t == 3.0
    # other models keep their objective: the new keys are C-DSVAE's only
    assert "nce_f" not in MODELS.build("s3vae", tiny_info(), RunConfig().model, RunConfig().loss).loss_weights()


def test_extended_table_1_adds_cdsvae_and_keeps_the_papers_table():
    from benchmark import tables as T
    base, ext = T.get_table(1), T.get_table("1x")
    assert "cdsvae" not in base.models and T.get_table("1") == base
    assert ext.models == base.models + ("cdsvae",) and ext.number == "1x"
    assert (ext.datasets, ext.metrics) == (base.datasets, base.metrics)
    assert T.paper_values("1x").equals(T.paper_values(1))
    with pytest.raises(KeyError, match="1x"):
        T.get_table("9")


def test_cpu_budget_per_dataset_and_per_model():
    """Every VAE on sprites trains past the slowest one's knee (12,000); a model with its own budget (MoCoGAN, 6,000)
    keeps it, on that dataset only."""
    from benchmark.config import resolve_config
    assert resolve_config("cdsvae", "sprites", "cpu").train.max_steps == 12000
    assert resolve_config("s3vae", "sprites", "cpu").train.max_steps == 12000
    assert resolve_config("mocogan", "sprites", "cpu").train.max_steps == 6000
    assert resolve_config("mocogan", "faces", "cpu").train.max_steps == 18000
    assert resolve_config("cdsvae", "faces", "cpu").train.max_steps == 18000  # faces' own budget
    assert resolve_config("cdsvae", "sprites", "paper").train.max_steps == 0  # the paper's epochs


def test_loss_recipe_per_dataset_and_per_model(monkeypatch):
    """A profile's loss settings per dataset apply to every model on that dataset, a model's own over them, not to
    other datasets; a user's -o still wins. The cpu profile sets none now (the sprites KL warm-up was reverted)."""
    from benchmark.config import resolve_config
    from benchmark.profiles import PROFILES
    assert resolve_config("s3vae", "sprites", "cpu").loss.kl_warmup == 0
    monkeypatch.setattr(PROFILES["cpu"], "loss_per_dataset", {"sprites": {"kl_warmup": 2000}})
    monkeypatch.setattr(PROFILES["cpu"], "loss_per_model", {"mocogan/sprites": {"kl_warmup": 0}})
    assert [resolve_config(m, "sprites", "cpu").loss.kl_warmup for m in ("s3vae", "baseline", "dsvae", "baseline-sv",
                                                                          "mocogan")] == [2000, 2000, 2000, 2000, 0]
    assert resolve_config("s3vae", "faces", "cpu").loss.kl_warmup == 0
    assert resolve_config("s3vae", "sprites", "cpu", overrides={"loss.kl_warmup": "0"}).loss.kl_warmup == 0
