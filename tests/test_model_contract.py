"""Every registered model through the interface at tiny size on CPU, gated on capabilities."""
import contextlib

import pytest
import torch

from benchmark.config import RunConfig
from benchmark.trainer import weighted_total
from benchmark.zoo import MODELS
from tests.conftest import tiny_batch, tiny_info


def tiny_model(name, info, **loss):
    cfg = RunConfig()
    cfg.model.width, cfg.model.hidden, cfg.model.feat_dim, cfg.model.d_zf, cfg.model.d_zt = 0.125, 16, 16, 6, 3
    cfg.model.dfp_hidden = 8
    for k, v in MODELS.get(name).defaults.items():
        setattr(cfg.loss, k.split(".")[1], v)
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    torch.manual_seed(0)
    return MODELS.build(name, info, cfg.model, cfg.loss)


@pytest.mark.parametrize("kind", ["video", "audio"])
@pytest.mark.parametrize("name", MODELS.names())
def test_contract(name, kind):
    info = tiny_info(kind)
    if kind not in MODELS.get(name).builder.kinds:
        with pytest.raises(ValueError, match=f"is {kind}"):
            tiny_model(name, info)
        return
    model = tiny_model(name, info)
    batch = tiny_batch(info)
    weights = model.loss_weights()
    opts = model.configure_optimizers(RunConfig().train)
    before = [p.detach().clone() for p in model.parameters()]
    if "adversarial" in model.capabilities:  # own update rule (alternating G/D steps)
        terms = model.train_step(batch, opts, weights, contextlib.nullcontext)
    else:
        terms = model.loss_terms(batch)
        for k in ("scc", "mi"):  # S3VAE family: zero-weight diagnostics stay out of the graph
            if k in weights:
                assert terms[k].requires_grad == (weights[k] > 0), f"zero-weight {k} must stay out of the graph"
        weighted_total(terms, weights).backward()
        for opt in opts:
            opt.step()
    assert terms and all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert {k for k, w in weights.items() if w} <= set(terms), "every weighted term is computed"
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    if "encode" in model.capabilities:
        lat = model.encode(batch["x"])
        assert lat.zf.shape[0] == 6 and lat.zt.shape[:2] == (6, info.frames)
        out = model.decode(lat.zf, lat.zt)
        assert out.shape == batch["x"].shape
        if kind == "video":
            assert 0 <= out.min() and out.max() <= 1
    if "sample" in model.capabilities:
        lat = model.sample_prior(4, info.frames)
        assert lat.zt.shape[:2] == (4, info.frames) and lat.zf.shape[0] == 4
        assert model.decode(lat.zf, lat.zt).shape[:2] == (4, info.frames)
    if "generate" in model.capabilities:
        labels = {f: torch.zeros(3, dtype=torch.long) for f in list(info.static_labels)[:1]}
        assert model.generate(labels, info.frames).shape == (3,) + tuple(batch["x"].shape[1:])


def test_presets_set_weights():
    info = tiny_info()
    w = {name: tiny_model(name, info).loss_weights() for name in ("s3vae", "baseline", "no-scc", "no-dfp", "no-mi")}
    assert (w["s3vae"]["scc"], w["s3vae"]["dfp"], w["s3vae"]["mi"]) == (1000, 100, 1)
    assert w["no-scc"]["scc"] == 0 and w["no-scc"]["dfp"] == 100
    assert w["no-dfp"]["dfp"] == 0 and w["no-dfp"]["mi"] == 1
    assert w["no-mi"]["mi"] == 0 and w["no-mi"]["scc"] == 1000
    assert (w["baseline"]["scc"], w["baseline"]["dfp"], w["baseline"]["mi"]) == (0, 0, 0)


def test_zt_posterior_is_causal_and_ignores_zf():
    info = tiny_info(frames=6)
    model = tiny_model("s3vae", info).eval()
    x = torch.rand(3, 6, 3, 16, 16)
    lat = model.encode(x, sample=False)
    x2 = x.clone()
    x2[:, 4:] = torch.rand_like(x2[:, 4:])  # change frames after t = 3
    lat2 = model.encode(x2, sample=False)
    assert torch.allclose(lat.zt_mean[:, :4], lat2.zt_mean[:, :4], atol=1e-6)
    assert not torch.allclose(lat.zt_mean[:, 4:], lat2.zt_mean[:, 4:])
    assert not torch.allclose(lat.zf_mean, lat2.zf_mean), "z_f sees the whole sequence"
    # Eq. 4: q(z_t | x_≤t) does not depend on z_f: altering the z_f head changes nothing in z_t
    with torch.no_grad():
        for p in model.zf_head.parameters():
            p.add_(1.0)
    lat3 = model.encode(x, sample=False)
    assert not torch.allclose(lat3.zf_mean, lat.zf_mean)
    assert torch.allclose(lat3.zt_mean, lat.zt_mean) and torch.allclose(lat3.zt_logvar, lat.zt_logvar)


def test_scc_positive_is_shuffled_sequence():
    """The positive's z_f equals encoding the time-shuffled frames from scratch (feature reuse is exact)."""
    info = tiny_info(frames=5)
    model = tiny_model("s3vae", info).eval()
    x = torch.rand(4, 5, 3, 16, 16)
    perm = torch.tensor([4, 2, 0, 1, 3])
    direct = model.encode(x[:, perm], sample=False).zf_mean
    feats = model._features(x)
    h, _ = model.lstm_f(feats[:, perm])
    assert torch.allclose(model.zf_head(h[:, -1])[0], direct, atol=1e-5)


def test_dsvae_zt_posterior_depends_on_zf_and_future_frames():
    """DSVAE's 'full q' (the difference S3VAE's Eq. 4 removes): q(z_t | x_1:T, z_f)."""
    info = tiny_info(frames=6)
    model = tiny_model("dsvae", info).eval()
    x = torch.rand(3, 6, 3, 16, 16)
    lat = model.encode(x, sample=False)
    x2 = x.clone()
    x2[:, 4:] = torch.rand_like(x2[:, 4:])
    assert not torch.allclose(model.encode(x2, sample=False).zt_mean[:, :4], lat.zt_mean[:, :4])
    with torch.no_grad():
        model.zf_head.mean.bias.add_(1.0)
    assert not torch.allclose(model.encode(x, sample=False).zt_mean, lat.zt_mean)


def test_mocogan_step_changes_both_players_and_respects_labels():
    info = tiny_info(size=16)
    model = tiny_model("mocogan", info)
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    d_before = [p.detach().clone() for p in model.d_video.parameters()]
    batch = tiny_batch(info)
    opts = model.configure_optimizers(RunConfig().train)
    terms = model.train_step(batch, opts, model.loss_weights(), contextlib.nullcontext)
    assert {"d_image", "d_video", "d_category", "g_image", "g_video", "g_category"} == set(terms)
    assert any(not torch.equal(a, p) for a, p in zip(g_before, model.generator.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(d_before, model.d_video.parameters()))
    after = model.train_step(batch, opts, model.loss_weights(), contextlib.nullcontext)
    assert after["d_image"] != terms["d_image"] and after["g_video"] != terms["g_video"]
    # the categorical code follows the requested labels
    onehot, full = model._one_hot({"act": torch.tensor([3, 1])}, 2, "cpu")
    assert full["act"].tolist() == [3, 1] and onehot.shape == (2, 3 + 2 + 4)
    assert onehot[:, 5:].argmax(-1).tolist() == [3, 1]


def test_fhvae_discriminative_term_rises_when_mu2_rows_are_shuffled():
    """α·log p(i|z2) ties z2 to its utterance's μ2 row: train briefly, then permute the table."""
    info = tiny_info("audio")
    model = tiny_model("fhvae", info)
    batch = tiny_batch(info, n=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        weighted_total(model.loss_terms(batch), model.loss_weights()).backward()
        opt.step()
    model.eval()
    torch.manual_seed(0)
    trained = model.loss_terms(batch)["disc"].item()
    with torch.no_grad():
        model.mu2.weight.copy_(model.mu2.weight[torch.roll(torch.arange(10), 1)])
    torch.manual_seed(0)
    assert trained < 2.0 < model.loss_terms(batch)["disc"].item()


@pytest.mark.parametrize("recon", ["gaussian", "gaussian-learned", "gaussian-optimal", "bce"])
@pytest.mark.parametrize("name,kind", [("s3vae", "video"), ("dsvae", "video"), ("s3vae", "audio"), ("fhvae", "audio")])
def test_every_likelihood_trains_every_vae(name, kind, recon):
    """loss.recon reaches every VAE; the learned σ is a trained parameter; bce on audio features is refused."""
    info = tiny_info(kind)
    if recon == "bce" and kind == "audio":
        with pytest.raises(ValueError, match="bce"):
            tiny_model(name, info, recon=recon)
        return
    model = tiny_model(name, info, recon=recon)
    terms = model.loss_terms(tiny_batch(info))
    assert torch.isfinite(terms["recon"]) and terms["mse"] >= 0
    assert ("recon_sigma" in terms) == (recon != "bce")
    weighted_total(terms, model.loss_weights()).backward()
    learned = getattr(model, "log_sigma", None)
    assert (learned is not None) == (recon == "gaussian-learned")
    if learned is not None:
        assert learned.grad is not None and learned.grad.abs().sum() > 0
        assert learned.shape == ((3, 1, 1) if kind == "video" else (info.size,))
    with pytest.raises(ValueError, match="loss.recon"):
        tiny_model(name, info, recon="l2")


def test_figures_name_the_model_it_was_built_as_not_its_class():
    """The baseline and the other S3VAE ablations share S3VAE's class: their figure titles name the model."""
    from benchmark.visuals import name_of
    from benchmark.zoo import build_model
    cfg = RunConfig()
    cfg.model.name, cfg.model.width, cfg.model.hidden = "baseline", 0.125, 16
    model = build_model(cfg, tiny_info("video"))
    assert type(model).__name__ == "S3VAE" and name_of(model) == "baseline"
    assert name_of(torch.nn.Linear(1, 1)) == "Linear"  # a model from elsewhere: its class
