"""Procedural speech: tensors, labels, speaker splits, determinism, features, DFP labels, real TIMIT loader, cache."""
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from benchmark.data import SPLITS, load_dataset
from benchmark.data import speech as S
from benchmark.profiles import PROFILES
from benchmark.registry import DATASETS

SMOKE = PROFILES["smoke"].data_for("speech")
SR = S.SAMPLE_RATE


@pytest.fixture(scope="module")
def smoke(cache):
    return {split: load_dataset("speech", split, profile="smoke") for split in SPLITS}


def numpy(ds):
    t = {k: v.numpy() for k, v in ds.tensors.items()}
    return t | {"speaker": t["static"][:, 0]}


def embedded_arrays():
    arrays, *_ = S._embedded(SMOKE["speakers"], SMOKE["utterances"], SMOKE["segment"], SMOKE["seed"], SR)
    return arrays


def features(wave, arrays, segment=SMOKE["segment"]):
    """What the dataset holds for one waveform: normalised fbank segments and their labels."""
    f = (S.log_fbank(wave) - arrays["norm_mean"]) / arrays["norm_std"]
    k = len(f) // segment
    return f[: k * segment].reshape(k, segment, -1), S.nonsilent_frames(wave)[: k * segment].reshape(k, segment)


# ------------------------------------------------------------------------------ embedded data

def test_registered_with_info(smoke):
    assert "speech" in DATASETS
    info = smoke["train"].info
    assert (info.name, info.kind, info.frames, info.channels, info.size) == ("speech", "audio", 20, 1, 80)
    assert info.static_labels == {"speaker": SMOKE["speakers"]}
    assert info.dynamic_labels == {}
    assert info.dfp == {"kind": "binary", "dim": 1}
    assert info.num_train == len(smoke["train"])
    assert info.num_sequences == SMOKE["speakers"] * SMOKE["utterances"]
    for ds in smoke.values():  # utterance ids index FHVAE's per-sequence table
        assert ds.tensors["utterance"].max() < info.num_sequences
    assert len({ds.fingerprint for ds in smoke.values()}) == 1


def test_tensors_shapes_dtypes_ranges(smoke):
    for ds in smoke.values():
        t = numpy(ds)
        n = len(ds)
        assert n > 0
        assert t["x"].shape == (n, 20, 80) and t["x"].dtype == np.float32 and np.isfinite(t["x"]).all()
        assert t["static"].shape == (n, 1) and t["static"].dtype == np.int64
        assert t["dynamic"].shape == (n, 0) and t["dynamic"].dtype == np.int64
        assert t["dfp"].shape == (n, 20) and t["dfp"].dtype == np.float32
        assert set(np.unique(t["dfp"])) <= {0.0, 1.0}
        assert t["utterance"].shape == (n,) and t["utterance"].dtype == np.int64
        assert t["speaker"].min() >= 0 and t["speaker"].max() < SMOKE["speakers"]
        # utterance ids are global: speaker * utterances + index, every segment of one speaker
        np.testing.assert_array_equal(t["utterance"] // SMOKE["utterances"], t["speaker"])
        # ~2-4 s per utterance: 10-20 segments of 20 frames
        per_utt = np.bincount(t["utterance"])[np.unique(t["utterance"])]
        assert per_utt.min() >= 9 and per_utt.max() <= 27
        # utterances have speech and silence
        assert 0.5 < t["dfp"].mean() < 0.95
    batch = smoke["test"].batch([0, 1])
    assert batch["x"].dtype.is_floating_point and batch["x"].shape == (2, 20, 80)


def test_splits_by_speaker(smoke):
    spk = {k: set(numpy(ds)["speaker"]) for k, ds in smoke.items()}
    n = SMOKE["speakers"]
    assert len(spk["test"]) == round(n / 6) and len(spk["train"]) == n - len(spk["test"])
    assert not spk["train"] & spk["test"]
    assert spk["val"] and spk["val"] < spk["train"]
    assert len(spk["val"]) == max(1, round(len(spk["train"]) * 0.1))
    # every utterance of a speaker is in the speaker's split
    for split, ds in smoke.items():
        t = numpy(ds)
        assert len(np.unique(t["utterance"])) == len(spk[split]) * SMOKE["utterances"]
    # the split is the seeded 5:1 speaker split
    train, val, test = S.speaker_split(np.arange(n), SMOKE["seed"])
    assert set(test) == spk["test"] and set(val) == spk["val"]
    other = S.speaker_split(np.arange(90), SMOKE["seed"] + 1)
    assert len(other[2]) == 15 and len(other[0]) == 75 and len(other[1]) == 8


def test_features_are_normalised_fbank(smoke):
    """x is the Kaldi fbank of the utterance, normalised with the train split's per-bin stats (test too)."""
    arrays = embedded_arrays()
    train = numpy(smoke["train"])["x"].reshape(-1, 80)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    for split in ("train", "test"):
        t = numpy(smoke[split])
        utt = t["utterance"][-1]
        spk, u = divmod(int(utt), SMOKE["utterances"])
        wave, _ = S.synthesize_utterance(S.speaker_voice(SMOKE["seed"], spk), SMOKE["seed"], spk, u)
        x, dfp = features(wave, arrays)
        np.testing.assert_allclose(t["x"][t["utterance"] == utt], x, atol=1e-4)
        np.testing.assert_array_equal(t["dfp"][t["utterance"] == utt], dfp)
    # the frames are Kaldi's: 25 ms windows every 10 ms, no edge padding
    assert S.num_frames(SR) == 98 and len(S.log_fbank(np.zeros(SR, np.int16) + 1)) == 98


def test_deterministic_from_seed(smoke):
    seed = SMOKE["seed"]
    v = S.speaker_voice(seed, 3)
    w1, m1 = S.synthesize_utterance(v, seed, 3, 1)
    w2, m2 = S.synthesize_utterance(S.speaker_voice(seed, 3), seed, 3, 1)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(m1, m2)
    assert w1.dtype == np.int16 and 2.0 <= len(w1) / SR <= 5.5 and m1.shape == w1.shape
    assert not np.array_equal(S.synthesize_utterance(v, seed, 3, 2)[0][:SR], w1[:SR])
    assert S.speaker_voice(seed + 1, 3)["f0"] != v["f0"]
    a, b = S._generate(3, 1, 20, seed, SR), S._generate(3, 1, 20, seed, SR)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = S._generate(3, 1, 20, seed + 1, SR)
    assert a["x"].shape != c["x"].shape or not np.array_equal(a["x"], c["x"])
    # a speaker's voice does not depend on how many speakers are generated
    t = numpy(smoke["train"])
    first = t["utterance"][0]
    spk, u = divmod(int(first), SMOKE["utterances"])
    wave, _ = S.synthesize_utterance(S.speaker_voice(seed, spk), seed, spk, u)
    assert (t["utterance"] == first).sum() == S.num_frames(len(wave)) // 20


def test_dfp_labels_match_ground_truth_silence():
    """The energy threshold agrees with the synthesiser's own sound/silence mask on >= 90% of frames."""
    agree, n = 0, 0
    for spk in range(6):
        v = S.speaker_voice(7, spk)
        for u in range(2):
            wave, active = S.synthesize_utterance(v, 7, spk, u)
            truth, lab = S.mask_frames(active), S.nonsilent_frames(wave)
            assert len(truth) == len(lab) == S.num_frames(len(wave))
            assert (truth == lab).mean() > 0.85
            assert 0 < lab.mean() < 1
            agree, n = agree + (truth == lab).sum(), n + len(lab)
    assert agree / n >= 0.9


def test_dfp_threshold_known_answer():
    """A tone between stretches of faint noise: frames inside the tone are sound, frames in the noise silent."""
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 3, SR).astype(np.float64)                  # ~ -70 dB re the tone
    t = np.arange(4000, 12000)
    wave[t] += 10000 * np.sin(2 * np.pi * 440 * t / SR)
    lab = S.nonsilent_frames(np.round(wave).astype(np.int16))
    starts = np.arange(len(lab)) * 160
    inside, outside = (starts >= 4000) & (starts + 400 <= 12000), (starts + 400 <= 4000) | (starts >= 12000)
    assert lab[inside].all() and not lab[outside].any()
    # 20 dB down is still sound, 40 dB down is silence
    quiet = np.concatenate([10000 * np.sin(np.arange(4000) * 0.1), 1000 * np.sin(np.arange(4000) * 0.1),
                            100 * np.sin(np.arange(4000) * 0.1)])
    lab = S.nonsilent_frames(quiet)
    starts = np.arange(len(lab)) * 160
    assert lab[starts + 400 <= 8000].all() and not lab[starts >= 8000].any()


def test_resonators():
    """The block-wise sosfilt cascade equals lfilter resonators, has unity DC gain and peaks at its formant."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SR)
    freqs = np.tile([700.0, 1200, 2500, 3500, 4500], (100, 1))
    bws = np.tile([60.0, 90, 120, 175, 250], (100, 1))
    y = S._resonator_cascade(x, freqs, bws, 160, SR)
    ref = x
    for f, b in zip(freqs[0], bws[0]):
        r = np.exp(-np.pi * b / SR)
        b1, c1 = 2 * r * np.cos(2 * np.pi * f / SR), -r * r
        ref = lfilter([1 - b1 - c1], [1, -b1, -c1], ref)
    np.testing.assert_allclose(y, ref, rtol=1e-8, atol=1e-8)
    one = S._resonator_cascade(np.ones(4000), np.full((25, 1), 1000.0), np.full((25, 1), 80.0), 160, SR)
    assert abs(one[-1] - 1) < 1e-6
    imp = np.zeros(4096)
    imp[0] = 1
    h = S._resonator_cascade(imp, np.full((26, 1), 1000.0), np.full((26, 1), 80.0), 160, SR)
    peak = np.argmax(np.abs(np.fft.rfft(h))) * SR / len(h)
    assert abs(peak - 1000) < 20


def autocorrelation_pitch(wave):
    """Median F0 (Hz) over the loud, periodic 64 ms windows of a waveform."""
    w, est = wave.astype(np.float64), []
    for s in range(0, len(w) - 1024, 400):
        f = w[s:s + 1024] - w[s:s + 1024].mean()
        if (f ** 2).mean() < 0.1 * (w ** 2).mean():
            continue
        ac = np.correlate(f, f, "full")[1023:]
        lag = SR // 300 + np.argmax(ac[SR // 300: SR // 70])
        if ac[lag] > 0.5 * ac[0]:
            est.append(SR / lag)
    return np.median(est)


def test_pitch_follows_the_voice():
    for f0 in (110.0, 220.0):
        v = S.speaker_voice(5, 0) | {"f0": f0}
        wave, _ = S.synthesize_utterance(v, 5, 0, 0)
        assert abs(autocorrelation_pitch(wave) / f0 - 1) < 0.15


def test_content_is_independent_of_the_speaker():
    """The same utterance seed gives the same unit sequence for any voice (only durations follow the rate)."""
    a, b = S.speaker_voice(1, 0), S.speaker_voice(1, 1)
    pa = S.utterance_plan(a, np.random.default_rng(5))
    pb = S.utterance_plan(b, np.random.default_rng(5))
    k = min(len(pa), len(pb)) - 1
    assert k > 10
    assert [u[:2] for u in pa[:k]] == [u[:2] for u in pb[:k]]
    kinds = {u[0] for u in pa}
    assert {"sil", "vowel"} <= kinds and kinds & {"nasal", "fric", "clo"}


def test_speakers_are_recognisable(smoke):
    """Nearest speaker-centroid of the mean speech-frame features identifies held-out utterances,
    and the voice parameters span the documented ranges."""
    t = numpy(smoke["train"])
    w = t["dfp"][..., None]
    seg = (t["x"] * w).sum(1) / np.maximum(w.sum(1), 1)
    utts = np.unique(t["utterance"])
    emb = np.stack([seg[t["utterance"] == u].mean(0) for u in utts])
    spk = utts // SMOKE["utterances"]
    speakers = np.unique(spk)
    hits = []
    for i in range(len(utts)):  # leave one utterance out, nearest speaker centroid of the rest
        rest = np.arange(len(utts)) != i
        cent = np.stack([emb[rest & (spk == s)].mean(0) for s in speakers])
        hits.append(speakers[np.linalg.norm(cent - emb[i], axis=1).argmin()] == spk[i])
    assert np.mean(hits) >= 0.5  # chance: 1 / 10
    voices = [S.speaker_voice(SMOKE["seed"], s) for s in range(40)]
    f0 = np.array([v["f0"] for v in voices])
    female = np.array([v["female"] for v in voices])
    assert f0[female].min() >= 165 and f0[~female].max() <= 155 and 0 < female.sum() < 40
    scale = np.array([v["scale"] for v in voices])
    assert 0.85 <= scale.min() and scale.max() <= 1.2


def test_cache_is_reused(smoke, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("generated again instead of loading the cache")
    monkeypatch.setattr(S, "_generate", fail)
    again = load_dataset("speech", "train", profile="smoke")
    np.testing.assert_array_equal(again.tensors["x"].numpy(), smoke["train"].tensors["x"].numpy())
    assert again.fingerprint == smoke["train"].fingerprint


@pytest.mark.parametrize("data, match", [
    (SMOKE | {"colour": 1}, "unknown data settings.*colour"),
    (SMOKE | {"split": "core"}, "needs the real files"),
    (SMOKE | {"split": "random"}, "split='random'"),
    (SMOKE | {"speakers": 1}, "speakers must be >= 2"),
    (SMOKE | {"segment": 0}, "segment=0"),
    (SMOKE | {"sample_rate": 8000}, "sample_rate >= 16000"),
])
def test_bad_settings(data, match, cache):
    with pytest.raises(ValueError, match=match):
        S.build_speech("train", data)


def test_unknown_split(smoke):
    with pytest.raises(ValueError, match="unknown split"):
        S.build_speech("dev", SMOKE)


# ------------------------------------------------------------------------------ real TIMIT

def write_sphere(path, wave, sr=SR, big_endian=False):
    """A TIMIT-style NIST SPHERE file: 1024-byte NIST_1A header, then 16-bit PCM."""
    fields = [("database_id", "-s5", "TIMIT"), ("utterance_id", f"-s{len(path.stem)}", path.stem.lower()),
              ("channel_count", "-i", "1"), ("sample_count", "-i", str(len(wave))),
              ("sample_rate", "-i", str(sr)), ("sample_n_bytes", "-i", "2"), ("sample_coding", "-s3", "pcm"),
              ("sample_byte_format", "-s2", "10" if big_endian else "01"), ("sample_sig_bits", "-i", "16")]
    head = "NIST_1A\n   1024\n" + "".join(f"{k} {t} {v}\n" for k, t, v in fields) + "end_head\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.encode().ljust(1024, b" ") + np.asarray(wave, ">i2" if big_endian else "<i2").tobytes())


TRAIN_SPEAKERS = {"DR1": ["FCJF0", "MDAC0"], "DR2": ["FAEM0", "MARC0"], "DR3": ["MRTK0"]}
TEST_SPEAKERS = {"DR1": ["MDAB0", "FAKS0"], "DR2": ["FELC0"]}  # MDAB0, FELC0: core test speakers


def write_timit(root, lower=False):
    """A tiny TIMIT tree with synthetic speech; returns {(speaker, utterance): waveform} of the non-SA files."""
    waves, i = {}, 0
    for part, drs in (("TRAIN", TRAIN_SPEAKERS), ("TEST", TEST_SPEAKERS)):
        for dr, speakers in drs.items():
            for spk in speakers:
                voice = S.speaker_voice(11, i)
                for j, utt in enumerate(("SA1", "SI1027", "SX127")):
                    wave, _ = S.synthesize_utterance(voice, 11, i, j)
                    wave = wave[: int(2.2 * SR)]  # keep the test fast
                    names = [part, dr, spk, utt + ".WAV"]
                    write_sphere(root.joinpath(*[n.lower() for n in names] if lower else names), wave)
                    if not utt.startswith("SA"):
                        waves[spk, utt] = wave
                i += 1
    return waves


@pytest.fixture(scope="module")
def timit(tmp_path_factory):
    root = tmp_path_factory.mktemp("timit")
    waves = write_timit(root)
    # a converted RIFF copy next to a SPHERE file (as some distributions have) is not read twice
    sf.write(root / "TRAIN" / "DR1" / "FCJF0" / "SI1027.WAV.wav", waves["FCJF0", "SI1027"], SR, subtype="PCM_16")
    (root / "TRAIN" / "DR1" / "FCJF0" / "SI1027.TXT").write_text("0 46797 She had your dark suit.\n")
    return root, waves


def test_read_sphere(tmp_path):
    rng = np.random.default_rng(0)
    wave = rng.integers(-3000, 3000, 5000).astype(np.int16)
    write_sphere(tmp_path / "a.wav", wave)
    write_sphere(tmp_path / "b.wav", wave, big_endian=True)
    for p in ("a.wav", "b.wav"):
        data, sr = S.read_sphere(tmp_path / p)
        assert sr == SR
        np.testing.assert_array_equal(data, wave)
        data, sr = S.read_timit_wav(tmp_path / p)
        np.testing.assert_array_equal(data, wave)
    data, _ = sf.read(tmp_path / "a.wav", dtype="int16")  # libsndfile reads the same header
    np.testing.assert_array_equal(data, wave)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError, match="bad.wav"):
        S.read_timit_wav(tmp_path / "bad.wav")


def test_real_timit_loader(timit, cache, monkeypatch):
    root, waves = timit
    data = dict(segment=20, seed=3)
    ds = {s: S.build_speech(s, data, data_dir=str(root)) for s in SPLITS}
    names = sorted(sum(TRAIN_SPEAKERS.values(), []) + sum(TEST_SPEAKERS.values(), []))
    info = ds["train"].info
    assert info.static_labels == {"speaker": len(names)} and info.num_train == len(ds["train"])
    assert info.num_sequences == 2 * len(names)  # every non-SA file has an id
    spk = {k: set(numpy(d)["speaker"]) for k, d in ds.items()}
    assert len(spk["test"]) == round(len(names) / 6) and len(spk["train"] | spk["test"]) == len(names)
    assert not spk["train"] & spk["test"] and spk["val"] < spk["train"] and len(spk["val"]) == 1
    # SA sentences and the RIFF duplicate are skipped: 2 utterances per speaker
    for split in ("train", "test"):
        t = numpy(ds[split])
        assert len(np.unique(t["utterance"])) == 2 * len(spk[split])
    # features: fbank of the file's samples, normalised with the train rows' stats
    files = S.timit_files(root)
    arrays, *_ = S._real(str(root), 20, 3, "seed", SR)
    t = numpy(ds["test"])
    for u in np.unique(t["utterance"]):
        _, name, utt, path = files[u]
        assert path.suffix == ".WAV" and names.index(name) == t["speaker"][t["utterance"] == u][0]
        x, dfp = features(waves[name, utt], arrays)
        np.testing.assert_allclose(t["x"][t["utterance"] == u], x, atol=1e-4)
        np.testing.assert_array_equal(t["dfp"][t["utterance"] == u], dfp)

    # the features are cached
    monkeypatch.setattr(S, "_read_real", lambda *a, **k: pytest.fail("TIMIT read again"))
    again = S.build_speech("test", data, data_dir=str(root))
    np.testing.assert_array_equal(again.tensors["x"].numpy(), ds["test"].tensors["x"].numpy())


def test_real_timit_split_modes(timit, cache):
    root, _ = timit
    names = sorted(sum(TRAIN_SPEAKERS.values(), []) + sum(TEST_SPEAKERS.values(), []))
    ids = lambda group: {names.index(n) for n in sum(group.values(), [])}  # noqa: E731
    std = {s: S.build_speech(s, dict(seed=0, split="standard"), data_dir=str(root)) for s in SPLITS}
    assert set(numpy(std["test"])["speaker"]) == ids(TEST_SPEAKERS)
    assert set(numpy(std["train"])["speaker"]) == ids(TRAIN_SPEAKERS)
    assert set(numpy(std["val"])["speaker"]) < ids(TRAIN_SPEAKERS)
    with pytest.warns(UserWarning, match="22 of the 24 core test speakers are missing"):
        core = S.build_speech("test", dict(seed=0, split="core"), data_dir=str(root))
    assert set(numpy(core)["speaker"]) == {names.index("MDAB0"), names.index("FELC0")}
    assert core.info.num_train == len(std["train"])
    assert len({std["test"].fingerprint, core.fingerprint}) == 2


def test_real_timit_lower_case(tmp_path, cache):
    waves = write_timit(tmp_path / "timit")   # also found one level down, as <dir>/timit/train/...
    lower = tmp_path / "lower"
    write_timit(lower, lower=True)
    a = S.build_speech("train", dict(seed=1), data_dir=str(tmp_path))
    b = S.build_speech("train", dict(seed=1), data_dir=str(lower))
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.tensors["x"].numpy(), b.tensors["x"].numpy())
    assert len(np.unique(b.tensors["utterance"].numpy())) <= len(waves)


def test_real_timit_other_sample_rate(tmp_path, cache):
    """Files at another rate are resampled to `sample_rate` before the fbank."""
    import torch
    import torchaudio
    rng = np.random.default_rng(0)
    waves = {}
    for spk in ("FCJF0", "MDAC0"):
        wave = np.round(rng.normal(0, 2000, 3 * 32000)).astype(np.int16)
        write_sphere(tmp_path / "TRAIN" / "DR1" / spk / "SI1.WAV", wave, sr=32000)
        waves[spk] = wave
    ds = S.build_speech("train", dict(seed=0), data_dir=str(tmp_path))
    arrays, *_ = S._real(str(tmp_path), 20, 0, "seed", SR)
    t = numpy(ds)
    name = ["FCJF0", "MDAC0"][t["speaker"][0]]
    down = torchaudio.functional.resample(torch.from_numpy(waves[name].astype(np.float32)), 32000, SR).numpy()
    x, _ = features(down, arrays)
    np.testing.assert_allclose(t["x"], x, atol=1e-4)


def test_bad_timit_dirs(tmp_path, cache):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        S.build_speech("train", SMOKE, data_dir=str(missing))
    assert str(missing) in str(err.value) and "TRAIN|TEST/DR1..DR8" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no TRAIN or TEST folder") as err:
        S.build_speech("train", SMOKE, data_dir=str(empty))
    assert str(empty) in str(err.value)
    no_wavs = tmp_path / "no_wavs"
    (no_wavs / "TRAIN" / "DR1" / "FCJF0").mkdir(parents=True)
    (no_wavs / "TRAIN" / "DR1" / "FCJF0" / "SI1027.TXT").write_text("text")
    write_sphere(no_wavs / "TRAIN" / "DR1" / "FCJF0" / "SA1.WAV", np.zeros(8000, np.int16))
    with pytest.raises(FileNotFoundError, match="no TIMIT .WAV files") as err:
        S.build_speech("train", SMOKE, data_dir=str(no_wavs))
    assert str(no_wavs) in str(err.value)
    train_only = tmp_path / "train_only"
    for spk in ("FCJF0", "MDAC0"):
        write_sphere(train_only / "TRAIN" / "DR1" / spk / "SI1.WAV", np.zeros(8000, np.int16) + 5)
    with pytest.raises(FileNotFoundError, match="TEST folder") as err:
        S.build_speech("train", dict(seed=0, split="standard"), data_dir=str(train_only))
    assert str(train_only) in str(err.value)
    with pytest.raises(FileNotFoundError, match="core test speakers") as err:
        S.build_speech("train", dict(seed=0, split="core"), data_dir=str(train_only))
    assert str(train_only) in str(err.value)
    broken = tmp_path / "broken"
    (broken / "TRAIN" / "DR1" / "FCJF0").mkdir(parents=True)
    (broken / "TRAIN" / "DR1" / "FCJF0" / "SI1.WAV").write_bytes(b"\x00" * 100)
    (broken / "TRAIN" / "DR1" / "MDAC0").mkdir(parents=True)
    (broken / "TRAIN" / "DR1" / "MDAC0" / "SI2.WAV").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="SI1.WAV"):
        S.build_speech("train", dict(seed=0), data_dir=str(broken))


def test_dataset_options_from_the_command_line(timit, cache, workdir, capsys):
    """`-o data.split=core --data-dir TIMIT_DIR`: the option reaches the loader, is a param and changes the
    data fingerprint; an unknown option is a clear error naming the dataset's keys."""
    import json as _json

    import mlflow

    from benchmark.__main__ import main
    from benchmark.config import resolve_config
    from benchmark.tracking import resolve_uri
    root, _ = timit
    cfg = resolve_config("s3vae", "speech", "smoke", overrides={"data.split": "core", "data.segment": "10"})
    assert cfg.data.options == {"split": "core", "segment": 10}
    assert cfg.flat()["data.split"] == "core" and "data.options" not in cfg.flat()
    from benchmark.api import logged_params
    logged = logged_params(cfg)  # the profile's data settings (smoke: 12 speakers), the options over them
    assert (logged["data.speakers"], logged["data.segment"], logged["data.split"]) == (12, 10, "core")
    from benchmark.config import RunConfig
    assert RunConfig.from_dict(cfg.to_dict()).data.options == cfg.data.options, "checkpoints restore the options"
    args = ["train", "--model", "s3vae", "--dataset", "speech", "--profile", "smoke", "--data-dir", str(root),
            "-o", "train.max_steps=2", "-o", "train.eval_every=0", "-o", "train.batch_size=4"]
    with pytest.warns(UserWarning, match="core test speakers are missing"):
        assert main(args + ["-o", "data.split=core"]) == 0
    core = _json.loads(capsys.readouterr().out)["run_id"]
    assert main(args + ["-o", "data.split=standard"]) == 0
    std = _json.loads(capsys.readouterr().out)["run_id"]
    client = mlflow.MlflowClient(resolve_uri())
    runs = {k: client.get_run(r) for k, r in (("core", core), ("std", std))}
    assert runs["core"].data.params["data.split"] == "core"
    # the profile's data settings are params too (smoke: 20-frame segments), `-o data.KEY` over them
    assert runs["std"].data.params["data.segment"] == "20" and runs["core"].data.params["data.segment"] == "20"
    assert runs["core"].data.tags["dataset_fingerprint"] != runs["std"].data.tags["dataset_fingerprint"]
    assert main(args + ["-o", "data.splitt=core"]) == 2
    err = capsys.readouterr().err
    assert "splitt" in err and "speech" in err and "split" in err
