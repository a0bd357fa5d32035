"""Every registered model through the interface at tiny size on CPU, gated on capabilities."""
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
    model = tiny_model(name, info)
    batch = tiny_batch(info)
    terms = model.loss_terms(batch)
    weights = model.loss_weights()
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert set(weights) <= set(terms) | {k for k, w in weights.items() if w == 0}
    assert {"mi", "scc"} <= set(terms), "SCC distance and MI are logged even when their weight is 0"
    for k in ("scc", "mi"):
        assert terms[k].requires_grad == (weights[k] > 0), f"zero-weight {k} must stay out of the graph"
    opt = model.configure_optimizers(RunConfig().train)[0]
    before = [p.detach().clone() for p in model.parameters()]
    weighted_total(terms, weights).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    if "encode" in model.capabilities:
        lat = model.encode(batch["x"])
        assert lat.zf.shape == (6, 6) and lat.zt.shape == (6, info.frames, 3)
        out = model.decode(lat.zf, lat.zt)
        assert out.shape == batch["x"].shape
        if kind == "video":
            assert 0 <= out.min() and out.max() <= 1
    if "sample" in model.capabilities:
        lat = model.sample_prior(4, info.frames)
        assert lat.zt.shape == (4, info.frames, 3) and lat.zf.shape == (4, 6)


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
