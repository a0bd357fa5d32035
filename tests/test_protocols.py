"""Protocols on toy models whose answers are known, for every dataset's label layout."""
import math

import pytest
import torch

from metrics.protocols import PROTOCOLS, Side, fix_resample_protocol, resample, speaker_verification
from models.base import Latents, SequentialModel

LAYOUTS = {  # dataset -> (static families, dynamic families), as their judges see them
    "sprites": ({"skin": 6, "top": 6, "pants": 6, "hair": 6}, {"action": 9}),
    "smmnist": ({"digit1": 10, "digit2": 10}, {}),
    "faces": ({"identity": 52}, {"expression": 6}),
}


class ToyJudge:
    """Reads family f's class from pixel f of the frames: value (c + 0.5) / C, averaged over time."""

    def __init__(self, static, dynamic):
        self.families = {**static, **dynamic}
        self.cols = {**{f: ("static", i) for i, f in enumerate(static)}, **{f: ("dynamic", i) for i, f in enumerate(dynamic)}}
        self.pixel = {f: i for i, f in enumerate(self.families)}

    def probs(self, x):
        out = {}
        for f, c in self.families.items():
            v = x[:, :, self.pixel[f]].mean(1)
            centers = (torch.arange(c) + 0.5) / c
            out[f] = torch.softmax(-200.0 * (v[:, None] - centers).abs(), -1)
        return out

    def targets(self, batch, f):
        key, col = self.cols[f]
        return batch[key][:, col]


class ToyModel(SequentialModel):
    """z_f = the static pixels, z_t = the dynamic pixels per frame; `ignore_zt` makes the decoder
    write the dynamic pixels from z_f instead (a model that put motion into z_f)."""
    capabilities = frozenset({"encode", "sample"})

    def __init__(self, static, dynamic, ignore_zt=False):
        super().__init__()
        self.s, self.d, self.ignore_zt = list(static.values()), list(dynamic.values()), ignore_zt
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x, sample=False):
        zf, zt = x[:, 0, :len(self.s)], x[:, :, len(self.s):]
        return Latents(zf, zf * 0, zf, zt, zt * 0, zt)

    def decode(self, zf, zt):
        if self.ignore_zt:  # dynamic classes become a function of the static code
            zt = torch.stack([((zf[:, 0] * 7919 * (i + 1)) % 1.0) for i in range(len(self.d))], -1)
            zt = ((zt * torch.tensor(self.d)).floor() + 0.5) / torch.tensor(self.d)
            zt = zt[:, None].expand(-1, 4, -1)
        return torch.cat([zf[:, None].expand(-1, zt.shape[1], -1), zt], -1)

    def sample_prior(self, n, steps):
        zf = torch.stack([(torch.randint(0, c, (n,)) + 0.5) / c for c in self.s], -1)
        zt = torch.stack([(torch.randint(0, c, (n,)) + 0.5) / c for c in self.d], -1) if self.d else torch.zeros(n, 0)
        zt = zt[:, None].expand(n, steps, -1)
        return Latents(zf, zf * 0, zf, zt, zt * 0, zt)


def toy_batches(static, dynamic, n=900, frames=4, nb=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(nb):
        s = torch.stack([torch.randint(0, c, (n // nb,), generator=g) for c in static.values()], 1)
        d = (torch.stack([torch.randint(0, c, (n // nb,), generator=g) for c in dynamic.values()], 1)
             if dynamic else torch.zeros(n // nb, 0, dtype=torch.long))
        vals = torch.cat([(s + 0.5) / torch.tensor(list(static.values())),
                          (d + 0.5) / torch.tensor(list(dynamic.values()) or [1])], 1)
        out.append({"x": vals[:, None].expand(-1, frames, -1).contiguous(), "static": s, "dynamic": d})
    return out


@pytest.mark.parametrize("dataset", sorted(PROTOCOLS))
def test_good_model_scores_perfectly(dataset):
    static, dynamic = LAYOUTS[dataset]
    sides = PROTOCOLS[dataset]
    res = fix_resample_protocol(ToyModel(static, dynamic), ToyJudge(static, dynamic), toy_batches(static, dynamic),
                                sides, passes=3)
    m = res["metrics"]
    for side in sides:
        assert m[f"acc_{side.name}"] == pytest.approx(100.0)
        assert m[f"label_kl_{side.name}"] < 1e-3 or side.keep == "static" and "action" in side.entropy
        assert len(res["passes"][side.name]) == 3
    assert m["acc"] == pytest.approx(100.0)
    # uniform labels, confident judge: H(y|x) ≈ 0 and H(y) ≈ log C, IS ≈ C on the entropy heads
    c = [({**static, **dynamic})[f] for f in sides[0].entropy]
    assert m[f"h_y_given_x_{sides[0].name}"] < 0.01
    assert m[f"h_y_{sides[0].name}"] == pytest.approx(sum(map(math.log, c)) / len(c), abs=0.05)
    assert m[f"is_{sides[0].name}"] == pytest.approx(sum(c) / len(c), rel=0.1)


def test_decoder_ignoring_zt_scores_chance_action_accuracy():
    static, dynamic = LAYOUTS["sprites"]
    keep_motion = (Side("action", "dynamic", ("action",), ("action",)),)
    judge, batches = ToyJudge(static, dynamic), toy_batches(static, dynamic)
    bad = fix_resample_protocol(ToyModel(static, dynamic, ignore_zt=True), judge, batches, keep_motion)["metrics"]
    good = fix_resample_protocol(ToyModel(static, dynamic), judge, batches, keep_motion)["metrics"]
    assert good["acc"] == pytest.approx(100.0)
    assert 100 / 9 - 5 < bad["acc"] < 100 / 9 + 5  # chance over 9 actions, n = 900 × 3 passes
    assert bad["label_kl"] > 1.0


def test_passes_are_seeded():
    static, dynamic = LAYOUTS["sprites"]
    args = (ToyModel(static, dynamic, ignore_zt=True), ToyJudge(static, dynamic), toy_batches(static, dynamic),
            PROTOCOLS["sprites"])
    assert fix_resample_protocol(*args, seed=1) == fix_resample_protocol(*args, seed=1)
    assert fix_resample_protocol(*args, seed=1) != fix_resample_protocol(*args, seed=2)


def test_conditional_generator_is_judged_on_its_conditioning_label():
    static, dynamic = LAYOUTS["faces"]

    class Generator(SequentialModel):
        capabilities = frozenset({"generate"})

        def __init__(self):
            super().__init__()
            self.calls = []

        def generate(self, labels, steps):
            self.calls.append(labels)
            e = labels["expression"]
            ident = (torch.randint(0, 52, e.shape) + 0.5) / 52
            return torch.stack([ident, (e + 0.5) / 6], -1)[:, None].expand(-1, steps, -1)

    gen = Generator()
    res = fix_resample_protocol(gen, ToyJudge(static, dynamic), toy_batches(static, dynamic), PROTOCOLS["faces"])
    assert res["metrics"]["acc"] == pytest.approx(100.0)
    assert set(gen.calls[0]) == {"expression"}


def test_resample_needs_a_capability():
    class Nothing(SequentialModel):
        pass
    with pytest.raises(ValueError, match="neither the 'encode' nor the 'generate' capability"):
        resample(Nothing(), torch.zeros(2, 3, 1), "static")


class SpeakerToy(SequentialModel):
    """z_f = speaker vector (+ small noise), z_t = noise: EER(z_f) ≈ 0, EER(z_{1:T}) ≈ 50%."""
    capabilities = frozenset({"encode"})

    def encode(self, x, sample=False):
        zf = x[:, 0, :8]
        zt = x[:, :, 8:]
        return Latents(zf, zf, zf, zt, zt, zt)


def test_speaker_verification_eer():
    g = torch.Generator().manual_seed(0)
    n_spk, utt_per_spk, seg = 12, 4, 3
    spk_vec = torch.randn(n_spk, 8, generator=g)
    speaker = torch.arange(n_spk).repeat_interleave(utt_per_spk * seg)
    utterance = torch.arange(n_spk * utt_per_spk).repeat_interleave(seg)
    zf = spk_vec[speaker] + 0.1 * torch.randn(len(speaker), 8, generator=g)
    x = torch.cat([zf[:, None].expand(-1, 20, -1), torch.randn(len(speaker), 20, 16, generator=g)], -1)
    eer = speaker_verification(SpeakerToy(), x, utterance, speaker)
    assert eer["eer_z_f"] < 1.0
    assert 35 < eer["eer_z_t"] < 65


def test_side_per_attribute_and_all_hit_accuracy_known_answer():
    """4 sequences, 2 families: family a right on 3, family b right on 2, both right on 1."""
    from metrics.protocols import side_metrics
    eye = torch.eye(3)
    gen = {"a": eye[[0, 1, 2, 0]], "b": eye[[0, 0, 2, 2]]}
    targets = [torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0, 0, 2])]
    # a: hits at 0,1,2 -> 75 %; b: hits at 1,3 -> 50 %; both: only index 1 -> 25 %
    both = side_metrics(gen, gen, targets, Side("s", "static", ("a", "b"), ("a",)))
    mean = side_metrics(gen, gen, targets, Side("s", "static", ("a", "b"), ("a",), hit="mean"))
    assert both["acc"] == pytest.approx(25.0) and mean["acc"] == pytest.approx(62.5)
    for m in (both, mean):
        assert m["acc_all"] == pytest.approx(25.0)
        assert m["acc_a"] == pytest.approx(75.0) and m["acc_b"] == pytest.approx(50.0)
    one = side_metrics(gen, gen, targets[:1], Side("s", "static", ("a",), ("a",)))
    assert one["acc"] == pytest.approx(75.0) and "acc_all" not in one
    with pytest.raises(ValueError, match="hit"):
        side_metrics(gen, gen, targets, Side("s", "static", ("a", "b"), ("a",), hit="any"))


def test_sprites_row_value_uses_the_per_attribute_static_side():
    """Sprites' Acc is the mean of the action side and the per-attribute static side; acc_all uses the
    all-four hit (PROTOCOLS.md). Toy sprites model: perfect, so every variant is 100."""
    (static_side,) = [s for s in PROTOCOLS["sprites"] if s.keep == "static"]
    assert static_side.hit == "mean" and set(static_side.judged) == {"skin", "top", "pants", "hair"}
    assert all(s.hit == "all" for s in PROTOCOLS["smmnist"])


def _smoke_s3vae_and_data(n=40):
    """An untrained S3VAE (its encoder is a real network) and sprites-shaped smoke data."""
    from benchmark.config import resolve_config
    from benchmark.data import load_dataset
    from benchmark.zoo import build_model
    from models.judge import Judge
    ds = load_dataset("sprites", "test", "smoke")
    cfg = resolve_config("s3vae", "sprites", "smoke")
    torch.manual_seed(0)
    model = build_model(cfg, ds.info).eval()
    judge = Judge(ds.info, width=0.125, hidden=8, feat_dim=8).eval()
    with torch.no_grad():  # an untrained judge is near uniform; sharp heads make its labels depend on the input
        for head in judge.heads.values():
            head.weight.mul_(300.0)
    return model, judge, ds


def test_shared_posteriors_leave_every_pass_unchanged():
    """The fast path (one posterior per batch for all sides and passes, the real pass given) equals the
    reference that re-encodes every batch in every pass, because encoding draws no random numbers."""
    static, dynamic = LAYOUTS["sprites"]
    model, judge, batches = ToyModel(static, dynamic, ignore_zt=True), ToyJudge(static, dynamic), toy_batches(static, dynamic)
    sides = PROTOCOLS["sprites"]
    reference = fix_resample_protocol(model, judge, batches, sides, passes=2, seed=3,
                                      posteriors=[None] * len(batches))  # None: resample encodes per pass
    fast = fix_resample_protocol(model, judge, batches, sides, passes=2, seed=3,
                                 real=[judge.probs(b["x"]) for b in batches],
                                 posteriors=[model.encode(b["x"], sample=False) for b in batches])
    assert fast == reference
    assert fix_resample_protocol(model, judge, batches, sides, passes=2, seed=4) != reference, "the test can fail"
    # the premise, for a real model: its deterministic encoding leaves the random stream where it was
    s3vae, _, ds = _smoke_s3vae_and_data()
    state = torch.get_rng_state()
    s3vae.encode(ds.batch(torch.arange(4))["x"], sample=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_protocol_metrics_equal_the_separate_scorers_and_cache_the_real_pass(monkeypatch):
    """One call shares posteriors and the judge's real pass between the protocol, the reconstruction
    report and the probes; its numbers are those of the three run apart. A judge with a fingerprint reads
    real data once."""
    import benchmark.api as api
    from benchmark.diagnose import reconstruction_report
    from metrics.probes import probe_report
    model, judge, ds = _smoke_s3vae_and_data()
    batches = api.protocol_batches(ds, 30, "cpu")
    with torch.no_grad():
        posteriors = [model.encode(b["x"], sample=False) for b in batches]
    apart = {**fix_resample_protocol(model, judge, batches, PROTOCOLS["sprites"], passes=1, seed=0)["metrics"],
             **reconstruction_report(model, judge, ds, 30),
             **probe_report(posteriors, batches, ds.info.static_labels, ds.info.dynamic_labels)}
    judge.fingerprint = "test-judge"
    monkeypatch.setattr(api, "_REAL_PROBS", {})
    calls = []
    real_probs = judge.probs
    monkeypatch.setattr(judge, "probs", lambda x: calls.append(len(x)) or real_probs(x))
    together = api.protocol_metrics(model, judge, ds, passes=1, seed=0, max_sequences=30)["metrics"]
    assert together.keys() == apart.keys()
    for k in apart:
        assert together[k] == pytest.approx(apart[k], rel=1e-5, abs=1e-6), k
    # real once + 2 sides × 1 pass + reconstructions once = 4 judge passes over the 30 sequences
    assert calls == [30] * 4
    calls.clear()
    api.protocol_metrics(model, judge, ds, passes=1, seed=0, max_sequences=30)
    assert calls == [30] * 3, "the real pass is cached by judge fingerprint and split"
