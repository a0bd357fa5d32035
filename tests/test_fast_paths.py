"""The speed-ups compute the same numbers as the plain layers they replace (fp32, within rounding):
the decoder's first layer as a GEMM, BatchNorm folded into convs at evaluation, the training step (with
S3VAE's shared LSTM_f pass for SCC)."""
import pytest
import torch

from benchmark.config import resolve_config
from benchmark.data import load_dataset
from benchmark.seeding import seed_everything
from benchmark.zoo import build_model
from models.base import ConvFrameDecoder, ConvFrameEncoder


def _random_bn_stats(net):
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_frame_networks_equal_their_plain_layers(size, channels_last):
    torch.manual_seed(0)
    dec, enc = ConvFrameDecoder(40, 3, size, 0.25), ConvFrameEncoder(3, size, 128, 0.25)
    _random_bn_stats(dec), _random_bn_stats(enc)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dec, enc = dec.to(memory_format=fmt), enc.to(memory_format=fmt)
    z, x = torch.randn(6, 40), torch.rand(6, 3, size, size).contiguous(memory_format=fmt)
    for training in (False, True):  # eval first: training mode moves the running statistics
        dec.train(training), enc.train(training)
        torch.testing.assert_close(dec(z), dec.net(z[:, :, None, None]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(enc(x), enc.net(x).flatten(1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(dec.train()(z), dec.eval()(z), atol=1e-3), "BN folding is tested on real statistics"


def test_mocogan_generator_with_folded_batchnorm_equals_its_plain_layers():
    from models.mocogan import ImageGenerator
    torch.manual_seed(0)
    gen = ImageGenerator(24, 3, 32, 0.25)
    _random_bn_stats(gen)
    z = torch.randn(6, 24)
    for training in (False, True):
        gen.train(training)
        torch.testing.assert_close(gen(z), gen.net(z[:, :, None, None]), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(gen.train()(z), gen.eval()(z), atol=1e-3), "BN folding is tested on real statistics"


@pytest.mark.parametrize("model,dataset", [("s3vae", "sprites"), ("dsvae", "sprites"), ("s3vae", "speech")])
def test_training_step_loss_and_gradients_equal_the_plain_path(model, dataset, monkeypatch):
    """The step with the fast decoder/encoder and S3VAE's shared LSTM_f pass for SCC's positive equals the step
    through plain nn.Sequential layers and two LSTM_f calls. The two paths draw the shuffle and the posterior
    noise in a different order, so both are made deterministic here (time reversed; a fixed 0.5 σ offset)."""
    import models.s3vae
    monkeypatch.setattr(models.s3vae.augment, "shuffle_frames", lambda x: x.flip(1))
    monkeypatch.setattr(models.s3vae, "reparameterize",
                        lambda mean, logvar, sample=True: mean + 0.5 * torch.exp(0.5 * logvar) if sample else mean)
    ds = load_dataset(dataset, "test", "smoke")
    cfg = resolve_config(model, dataset, "smoke")
    batch = ds.batch(torch.arange(8))

    def step():
        seed_everything(0)
        m = build_model(cfg, ds.info).train()
        seed_everything(1)
        terms = m.loss_terms(batch)
        total = sum(w * terms[k] for k, w in m.loss_weights().items() if w and k in terms)
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    fast_total, fast_grads = step()
    monkeypatch.setattr(ConvFrameDecoder, "forward", lambda self, z: self.net(z[:, :, None, None]))
    monkeypatch.setattr(ConvFrameEncoder, "forward", lambda self, x: self.net(x).flatten(1))
    monkeypatch.setattr(models.s3vae.S3VAE, "shared_scc_pass", False)
    plain_total, plain_grads = step()
    torch.testing.assert_close(fast_total, plain_total, rtol=1e-5, atol=1e-4)
    assert fast_grads.keys() == plain_grads.keys()
    for n in plain_grads:  # relative to the gradient's norm: summed losses make element-wise atol meaningless
        err = (fast_grads[n] - plain_grads[n]).norm() / plain_grads[n].norm().clamp_min(1e-12)
        assert err < 1e-4, (n, float(err))
