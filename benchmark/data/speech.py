"""Speech (stands in for TIMIT, Table 3): procedural source-filter speech and a loader for the real files.

Embedded default: every speaker is a voice (F0 in male- or female-like ranges, vocal-tract
length as a formant scale factor, glottal spectral tilt, breathiness, speaking rate,
jitter/shimmer/vibrato, higher formants F4/F5, small per-vowel formant idiosyncrasies and a
fixed colouring by three peaking filters), which drifts a little from utterance to utterance;
every utterance is ~2-4 s of random content units (10 vowels, 3 nasals, 3 fricatives, 3 stops
as closure + burst, and pauses) drawn independently of the speaker, so the speaker is the
static factor and the content the dynamic one. A unit sequence becomes a 16 kHz waveform by
a source-filter model: a jittered glottal pulse train at F0 (two-pole tilt filter, lip
radiation, aspiration noise) through a cascade of five 2nd-order resonators whose formants
move between the units' targets (biquads lfilter([A], [1, -B, -C]) run by scipy.signal.sosfilt,
coefficients per 10 ms block), plus band-limited noise for fricatives and bursts, plus a little
background noise (45-55 dB down); stored as int16 like TIMIT.

Features (real and embedded alike): 80-d log-mel filterbank (torchaudio's Kaldi fbank, 25 ms
Hamming window, 10 ms shift), normalised per bin with the TRAIN split's mean/std (kept in the
cache as `norm_mean`/`norm_std`, applied to every split), cut into non-overlapping
`segment`-frame pieces (the remainder of an utterance is dropped).

DFP labels (PROTOCOLS.md, "Self-supervision signals"): a frame is non-silent (1) when the
energy of its 25 ms waveform window (DC removed) is above the utterance's loudest frame
minus SILENCE_DB dB.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy.signal import butter, lfilter, sosfilt

try:  # the in-place kernel behind sosfilt: ~20x less overhead for the many 10 ms blocks
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_inplace
except ImportError:  # pragma: no cover - other scipy versions: the public function, same numbers
    _sosfilt_inplace = None
from tqdm import tqdm

from benchmark.data import DatasetInfo, SequenceDataset, cached_arrays, fingerprint
from benchmark.registry import DATASETS

VERSION = "speech-procedural-v2"  # bump when the synthesiser, the features or the DFP labels change

SAMPLE_RATE = 16000
N_MELS = 80
FBANK = dict(num_mel_bins=N_MELS, frame_length=25.0, frame_shift=10.0, window_type="hamming", dither=0.0)
SILENCE_DB = 30.0            # non-silent: frame energy above (loudest frame of the utterance - 30 dB)
TEST_SHARE = 1 / 6           # train:test speakers = 5:1
VAL_FRACTION = 0.1           # val = 10% of the train speakers (a subset of train)
SPLIT_MODES = ("seed", "standard", "core")
DATA_KEYS = ("speakers", "utterances", "segment", "seed", "split", "sample_rate")
PART_TRAIN, PART_VAL, PART_TEST = 0, 1, 2  # per-row split code in the cache (val rows are train rows too)

# TIMIT's 24-speaker core test set (2 male + 1 female per dialect region)
CORE_TEST_SPEAKERS = ("MDAB0", "MWBT0", "FELC0", "MTAS1", "MWEW0", "FPAS0", "MJMP0", "MLNT0",
                      "FPKT0", "MLLL0", "MTLS0", "FJLM0", "MBPM0", "MKLT0", "FNLP0", "MCMJ0",
                      "MJDH0", "FMGD0", "MGRT0", "MNJM0", "FDHC0", "MJLN0", "MPAM0", "FMLD0")
TIMIT_LAYOUT = ("TIMIT's layout <dir>/TRAIN|TEST/DR1..DR8/<SPEAKER>/<UTTERANCE>.WAV (NIST SPHERE or RIFF; "
                "lower-case names such as train/dr1/fcjf0/si1027.wav are accepted too; SA1/SA2 are skipped)")

# ------------------------------------------------------------------------------ phone inventory

# vowels: Peterson & Barney (1952) adult-male F1, F2, F3 (Hz) and a level (dB, open vowels louder)
VOWELS = {"iy": (270, 2290, 3010, -3.0), "ih": (390, 1990, 2550, -2.0), "eh": (530, 1840, 2480, -1.0),
          "ae": (660, 1720, 2410, 0.0), "ah": (520, 1190, 2390, 0.0), "aa": (730, 1090, 2440, 1.0),
          "ao": (570, 840, 2410, 0.0), "uh": (440, 1020, 2240, -2.0), "uw": (300, 870, 2240, -3.0),
          "er": (490, 1350, 1690, -1.0)}
VOWEL_NAMES = tuple(VOWELS)
VOWEL_BW = (60.0, 90.0, 120.0, 175.0, 250.0)
# nasal murmurs: low F1, weak upper formants, wide bandwidths
NASALS = {"m": (280, 1100, 2250), "n": (280, 1600, 2500), "ng": (280, 2000, 2650)}
NASAL_BW = (100.0, 150.0, 200.0, 250.0, 300.0)
NASAL_DB = -8.0
# fricatives: band-limited noise (low, high edge in Hz for a scale-1 vocal tract) and level (dB)
FRICATIVES = {"s": (4000, 7500, -10.0), "sh": (2200, 5000, -9.0), "f": (1200, 7000, -16.0)}
# stops: silent closure, then a short noise burst in this band
STOPS = {"p": (500, 2000), "t": (3000, 7000), "k": (1500, 3500)}
BURST_DB = -8.0
COLOUR_BANDS = ((250, 900), (900, 2800), (2800, 6000))  # Hz ranges of the speaker's colouring filters
SPEECH_RMS = 0.08            # full-scale RMS of a 0 dB unit
ACTIVE = ("vowel", "nasal", "fric", "burst")  # unit kinds that are sound (the rest: "sil", "clo")


# ------------------------------------------------------------------------------ voices and content

def speaker_voice(seed: int, speaker: int) -> dict:
    """The voice of one speaker; drawn from (seed, speaker) alone, so a speaker is the same in any set size."""
    rng = np.random.default_rng([seed, speaker, 0])
    female = bool(rng.random() < 0.5)
    scale = rng.uniform(1.0, 1.2) if female else rng.uniform(0.85, 1.05)
    return dict(
        female=female,
        f0=float(rng.uniform(165, 255) if female else rng.uniform(85, 155)),
        scale=float(scale),                                   # vocal-tract length -> formant scale
        tilt=float(rng.uniform(0.90, 0.985)),                # glottal two-pole low-pass radius
        breath=float(rng.uniform(0.0, 0.25)),                # aspiration relative to the pulses
        rate=float(rng.uniform(0.8, 1.25)),                   # speaking rate (unit durations / rate)
        jitter=float(rng.uniform(0.005, 0.02)),               # per-period F0 perturbation
        shimmer=float(rng.uniform(0.02, 0.08)),               # per-period amplitude perturbation
        vibrato=(float(rng.uniform(4.0, 6.5)), float(rng.uniform(0.0, 0.012))),
        f45=(float(3500 * scale * rng.uniform(0.94, 1.06)), float(4500 * scale * rng.uniform(0.94, 1.06))),
        bw=float(rng.uniform(0.8, 1.3)),                      # formant bandwidth factor
        vowel_offsets=np.exp(rng.normal(0.0, 0.04, (len(VOWELS), 3))),  # accent: per-vowel formant shifts
        fric_scale=float(math.sqrt(scale) * rng.uniform(0.95, 1.05)),
        # fixed colouring of everything the speaker says (chest / nasal, oral and hypopharyngeal
        # resonances and antiresonances): three peaking filters (centre Hz, gain dB, Q)
        colour=tuple((float(rng.uniform(lo, hi) * scale), float(rng.choice([-1, 1]) * rng.uniform(4, 10)),
                      float(rng.uniform(1.0, 3.0))) for lo, hi in COLOUR_BANDS),
    )


def _session(voice: dict, rng: np.random.Generator) -> dict:
    """A speaker's voice on one occasion: small per-utterance drifts of the vocal-tract scale,
    tilt, breathiness and colouring (F0 drifts inside synthesize_utterance)."""
    v = dict(voice)
    k = math.exp(rng.normal(0.0, 0.015))
    v["scale"] = voice["scale"] * k
    v["f45"] = tuple(f * k for f in voice["f45"])
    v["tilt"] = float(np.clip(voice["tilt"] + rng.normal(0.0, 0.008), 0.85, 0.995))
    v["breath"] = voice["breath"] * math.exp(rng.normal(0.0, 0.2))
    v["colour"] = tuple((f, g + rng.normal(0.0, 1.0), q) for f, g, q in voice["colour"])
    return v


def utterance_plan(voice: dict, rng: np.random.Generator) -> list[tuple[str, str, float, float]]:
    """Random content units, independent of the speaker except for the speaking rate:
    [(kind, phone, duration_s, level_db)], kind in sil | vowel | nasal | fric | clo | burst."""
    rate = voice["rate"] * math.exp(rng.normal(0.0, 0.05))
    total = rng.uniform(2.0, 4.0)
    units = [("sil", "", rng.uniform(0.1, 0.3), 0.0)]
    tail = rng.uniform(0.1, 0.3)
    t = units[0][2]

    def consonant():
        kind = rng.choice(3, p=[0.3, 0.35, 0.35])
        if kind == 0:
            ph = str(rng.choice(list(NASALS)))
            return [("nasal", ph, rng.uniform(0.05, 0.10) / rate, NASAL_DB + rng.normal(0, 1.5))]
        if kind == 1:
            ph = str(rng.choice(list(FRICATIVES)))
            return [("fric", ph, rng.uniform(0.08, 0.16) / rate, FRICATIVES[ph][2] + rng.normal(0, 1.5))]
        ph = str(rng.choice(list(STOPS)))
        return [("clo", ph, rng.uniform(0.03, 0.07) / rate, 0.0),
                ("burst", ph, rng.uniform(0.008, 0.02), BURST_DB + rng.normal(0, 2.0))]

    while t < total - tail:
        syl = consonant() if rng.random() < 0.7 else []
        v = str(rng.choice(VOWEL_NAMES))
        syl.append(("vowel", v, rng.uniform(0.08, 0.22) / rate, VOWELS[v][3] + rng.normal(0, 1.5)))
        if rng.random() < 0.3:
            syl += consonant()
        if rng.random() < 0.15:
            syl.append(("sil", "", rng.uniform(0.1, 0.4), 0.0))
        units += syl
        t += sum(u[2] for u in syl)
    units.append(("sil", "", tail, 0.0))
    return units


def _smooth(a: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (same length)."""
    if width <= 1:
        return a
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (a.ndim - 1)
    ap = np.pad(a, pad, mode="edge")
    c = np.cumsum(np.concatenate([np.zeros_like(ap[:1]), ap]), axis=0)
    return (c[width:] - c[:-width]) / width


def _fill(a: np.ndarray) -> np.ndarray:
    """Rows that are NaN take the nearest earlier row (or the first valid row at the start)."""
    a = a.copy()
    valid = ~np.isnan(a[:, 0])
    if not valid.any():
        return np.nan_to_num(a, nan=1.0)
    idx = np.where(valid, np.arange(len(a)), 0)
    np.maximum.accumulate(idx, out=idx)
    idx[: np.argmax(valid)] = np.argmax(valid)
    return a[idx]


def _resonator_cascade(x: np.ndarray, freqs: np.ndarray, bws: np.ndarray, block: int, sr: int) -> np.ndarray:
    """Cascade of 2nd-order (Klatt) resonators, unity gain at DC, coefficients per `block` samples.

    freqs, bws: [blocks, K] in Hz. Resonator k of block i is the biquad [A, 0, 0, 1, -B, -C]
    (lfilter([A], [1, -B, -C])); sosfilt runs the K of them in cascade and every resonator keeps
    its state from block to block, so the formants move smoothly."""
    r = np.exp(-math.pi * bws / sr)
    b1 = 2 * r * np.cos(2 * math.pi * freqs / sr)
    c1 = -r * r
    sos = np.zeros(freqs.shape + (6,))
    sos[..., 0], sos[..., 3], sos[..., 4], sos[..., 5] = 1 - b1 - c1, 1.0, -b1, -c1
    y = np.array(x, np.float64)[None]  # filtered in place, block by block
    zi = np.zeros((1, freqs.shape[1], 2))
    for i in range(len(freqs)):
        s, e = i * block, min((i + 1) * block, y.shape[1])
        if s >= e:
            break
        if _sosfilt_inplace is not None:
            _sosfilt_inplace(sos[i], y[:, s:e], zi)
        else:
            y[0, s:e], zi[0] = sosfilt(sos[i], y[0, s:e], zi=zi[0])
    return y[0]


def _peaking(freq: float, gain_db: float, q: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook peaking equaliser: (b, a)."""
    amp, w = 10 ** (gain_db / 40), 2 * math.pi * min(freq, 0.45 * sr) / sr
    alpha = math.sin(w) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * math.cos(w), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * math.cos(w), 1 - alpha / amp])
    return b / a[0], a / a[0]


@lru_cache(maxsize=4096)
def _bandpass(lo: float, hi: float, sr: int) -> np.ndarray:
    nyq = sr / 2
    lo, hi = min(lo, 0.9 * nyq), min(hi, 0.95 * nyq)
    return butter(4, [lo, max(hi, lo * 1.05)], btype="bandpass", fs=sr, output="sos")


def _band_noise(rng, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    y = sosfilt(_bandpass(round(lo), round(hi), sr), rng.standard_normal(n + 256))[256:]  # drop the filter's start-up
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def synthesize_utterance(voice: dict, seed: int, speaker: int, utterance: int,
                         sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """One utterance of `voice`: (int16 waveform [n], bool ground-truth sound mask [n]).

    Deterministic from (seed, speaker, utterance); the mask is True inside vowel, nasal,
    fricative and burst units and False in pauses and stop closures."""
    sr = int(sample_rate)
    rng = np.random.default_rng([seed, speaker, utterance + 1])
    voice = _session(voice, rng)
    units = utterance_plan(voice, rng)
    bounds = np.round(np.cumsum([0.0] + [u[2] for u in units]) * sr).astype(np.int64)
    n = int(bounds[-1])
    block = sr // 100
    nb = -(-n // block)
    centers = np.minimum(np.arange(nb) * block + block // 2, n - 1)
    unit_of_block = np.searchsorted(bounds, centers, side="right") - 1
    unit_of_sample = np.repeat(np.arange(len(units)), np.diff(bounds))

    # ---- per-unit targets: formants [5], bandwidths [5], voicing (0/1)
    f45 = voice["f45"]
    tf = np.full((len(units), 5), np.nan)
    tb = np.full((len(units), 5), np.nan)
    voiced = np.zeros(len(units))
    for i, (kind, ph, _, _) in enumerate(units):
        if kind == "vowel":
            j = VOWEL_NAMES.index(ph)
            tf[i, :3] = np.array(VOWELS[ph][:3]) * voice["scale"] * voice["vowel_offsets"][j]
            tf[i, 3:], tb[i] = f45, np.array(VOWEL_BW) * voice["bw"]
            voiced[i] = 1
        elif kind == "nasal":
            tf[i, :3] = np.array(NASALS[ph]) * voice["scale"]
            tf[i, 3:], tb[i] = f45, np.array(NASAL_BW) * voice["bw"]
            voiced[i] = 1
    freqs = _smooth(_fill(tf[unit_of_block]), 3)
    freqs[:, 1:] = np.maximum(freqs[:, 1:], freqs[:, :-1] + 150)  # keep the formants ordered
    freqs = np.minimum(freqs, 0.45 * sr)
    bws = _smooth(_fill(tb[unit_of_block]), 3)
    t_blocks = centers.astype(np.float64)
    av = np.interp(np.arange(n), t_blocks, _smooth(voiced[unit_of_block], 2))

    # ---- F0: declination, slow intonation, vibrato; jitter and shimmer per glottal period
    secs = n / sr
    f0_utt = voice["f0"] * math.exp(rng.normal(0.0, 0.05))
    knots = np.linspace(0, n, max(3, int(secs * 4)))
    inton = np.interp(np.arange(n), knots, rng.normal(0.0, 0.04, len(knots)))
    decl = np.linspace(0.08, -0.08, n)
    vib_hz, vib_depth = voice["vibrato"]
    f0 = f0_utt * (1 + decl + inton) * (1 + vib_depth * np.sin(2 * math.pi * vib_hz * np.arange(n) / sr))
    pulses = np.zeros(n + 2)
    t = rng.uniform(0, sr / f0_utt)
    while t < n:
        a = 1.0 + voice["shimmer"] * rng.standard_normal()
        i0 = int(t)
        frac = t - i0
        pulses[i0] += a * (1 - frac)
        pulses[i0 + 1] += a * frac
        t += sr / (f0[min(i0, n - 1)] * (1.0 + voice["jitter"] * rng.standard_normal()))
    p = voice["tilt"]
    glottal = lfilter([(1 - p) ** 2], [1.0, -2 * p, p * p], pulses[:n])
    source = np.diff(glottal, prepend=0.0)  # lip radiation
    src_rms = np.sqrt(np.mean(source ** 2)) + 1e-12
    source = (source + voice["breath"] * src_rms * rng.standard_normal(n)) * av
    tract = _resonator_cascade(source, freqs, bws, block, sr)

    # ---- levels: each voiced unit's core to its target level, the gain track smoothed across units
    gains = np.full(len(units), np.nan)
    for i, (kind, _, _, level) in enumerate(units):
        if voiced[i]:
            s, e = bounds[i], bounds[i + 1]
            core = tract[s + (e - s) // 5: e - (e - s) // 5]
            gains[i] = 10 ** (level / 20) / (np.sqrt(np.mean(core ** 2)) + 1e-12)
    g = _smooth(_fill(gains[unit_of_block][:, None]), 3)[:, 0]
    speech = tract * np.interp(np.arange(n), t_blocks, g)

    # ---- fricatives and bursts: band-limited noise with ramps
    fs = voice["fric_scale"]
    for i, (kind, ph, _, level) in enumerate(units):
        if kind not in ("fric", "burst"):
            continue
        s, e = bounds[i], bounds[i + 1]
        m = e - s
        if m < 4:
            continue
        lo, hi = (FRICATIVES[ph][:2] if kind == "fric" else STOPS[ph])
        noise = _band_noise(rng, m, lo * fs, hi * fs, sr)
        if kind == "fric":
            ramp = max(2, min(int(0.015 * sr), m // 3))
            env = np.ones(m)
            env[:ramp] = np.sin(np.linspace(0, math.pi / 2, ramp)) ** 2
            env[-ramp:] = env[:ramp][::-1]
        else:  # sharp onset, exponential decay
            env = np.exp(-np.arange(m) / (0.35 * m))
            env /= np.sqrt(np.mean(env ** 2))
        speech[s:e] += noise * env * 10 ** (level / 20)

    for freq, gdb, q in voice["colour"]:
        speech = lfilter(*_peaking(freq, gdb, q, sr), speech)
    gain = SPEECH_RMS * 10 ** (rng.normal(0.0, 1.5) / 20)
    background = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    background *= 10 ** (rng.uniform(-55, -45) / 20) / (np.sqrt(np.mean(background ** 2)) + 1e-12)
    wave = np.clip(np.round((speech + background) * gain * 32767), -32768, 32767).astype(np.int16)
    active = np.isin(np.array([u[0] for u in units]), ACTIVE)[unit_of_sample]
    return wave, active


# ------------------------------------------------------------------------------ features and DFP labels

def _frame_geometry(sample_rate: int) -> tuple[int, int]:
    return int(round(sample_rate * FBANK["frame_length"] / 1000)), int(round(sample_rate * FBANK["frame_shift"] / 1000))


def num_frames(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames of Kaldi's framing (snip_edges): 1 + (n - window) // shift, 0 when shorter than a window."""
    win, hop = _frame_geometry(sample_rate)
    return 0 if n_samples < win else 1 + (n_samples - win) // hop


def log_fbank(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """80-d log-mel filterbank of an int16-scale waveform: float32 [frames, 80] (Kaldi fbank, 25 ms Hamming, 10 ms)."""
    w = torch.from_numpy(np.asarray(wave, np.float32))[None]
    return torchaudio.compliance.kaldi.fbank(w, sample_frequency=float(sample_rate), **FBANK).numpy()


def frame_energy_db(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Energy (dB) of each fbank frame's waveform window, DC removed: float64 [frames]."""
    win, hop = _frame_geometry(sample_rate)
    nf = num_frames(len(wave), sample_rate)
    if nf == 0:
        return np.zeros(0)
    w = np.asarray(wave, np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(w, win)[::hop][:nf]
    frames = frames - frames.mean(1, keepdims=True)
    return 10 * np.log10(np.maximum((frames ** 2).sum(1), 1e-10))


def nonsilent_frames(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, silence_db: float = SILENCE_DB) -> np.ndarray:
    """DFP labels: 1 where the frame's energy is above the loudest frame's minus `silence_db`: bool [frames]."""
    e = frame_energy_db(wave, sample_rate)
    return e > (e.max() - silence_db) if len(e) else np.zeros(0, bool)


def mask_frames(active: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A per-sample ground-truth mask -> per frame: True when at least half of the window is sound."""
    win, hop = _frame_geometry(sample_rate)
    nf = num_frames(len(active), sample_rate)
    if nf == 0:
        return np.zeros(0, bool)
    return np.lib.stride_tricks.sliding_window_view(active.astype(np.float32), win)[::hop][:nf].mean(1) >= 0.5


class _OneTorchThread:
    """Kaldi fbank on one short utterance is ~30x slower with several torch threads on a busy machine."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _utterance_rows(wave: np.ndarray, sample_rate: int, segment: int):
    """Features [n_seg, segment, 80] and DFP labels [n_seg, segment] of one utterance."""
    feats, lab = log_fbank(wave, sample_rate), nonsilent_frames(wave, sample_rate)
    assert len(feats) == len(lab), (len(feats), len(lab))
    k = len(feats) // segment
    return (feats[: k * segment].reshape(k, segment, N_MELS),
            lab[: k * segment].reshape(k, segment).astype(np.float32))


def _assemble(per_utt, part_of_speaker: dict[int, int]) -> dict[str, np.ndarray]:
    """Rows of all utterances [(speaker, utterance, feats, labels)], normalised with the train rows' stats."""
    per_utt = [u for u in per_utt if u[0] in part_of_speaker]
    if not per_utt:
        raise ValueError("speech: no utterances of the selected speakers")
    # per-bin mean/std of the train frames, accumulated in float64 utterance by utterance
    total, total_sq, count = np.zeros(N_MELS), np.zeros(N_MELS), 0
    for spk, _, feats, _ in per_utt:
        if part_of_speaker[spk] != PART_TEST and len(feats):
            f = feats.reshape(-1, N_MELS).astype(np.float64)
            total, total_sq, count = total + f.sum(0), total_sq + (f ** 2).sum(0), count + len(f)
    if count == 0:
        raise ValueError("speech: no training segments (every training utterance is shorter than one segment)")
    mean = total / count
    std = np.maximum(np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0)), 1e-3)
    x = np.concatenate([u[2] for u in per_utt]).astype(np.float32)
    dfp = np.concatenate([u[3] for u in per_utt]).astype(np.float32)
    speaker = np.concatenate([np.full(len(u[2]), u[0], np.int64) for u in per_utt])
    utterance = np.concatenate([np.full(len(u[2]), u[1], np.int64) for u in per_utt])
    part = np.array([part_of_speaker[s] for s in speaker], np.int8).reshape(-1)
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    return dict(x=x, dfp=dfp, speaker=speaker, utterance=utterance, part=part,
                norm_mean=mean.astype(np.float32), norm_std=std.astype(np.float32))


def speaker_split(speakers, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Speaker ids -> (train, val, test) by a seeded permutation: test = 1/6 (train:test = 5:1),
    val = 10% of the train speakers (a subset of train); each at least one speaker."""
    ids = np.asarray(speakers)
    if len(ids) < 2:
        raise ValueError(f"speech: need at least 2 speakers to split 5:1 by speaker, got {len(ids)}")
    order = ids[np.random.default_rng([seed, 1]).permutation(len(ids))]
    n_test = min(len(ids) - 1, max(1, round(len(ids) * TEST_SHARE)))
    train, test = order[:-n_test], order[-n_test:]
    n_val = max(1, round(len(train) * VAL_FRACTION))
    return np.sort(train), np.sort(train[-n_val:]), np.sort(test)


def _parts(train, val, test) -> dict[int, int]:
    part = {int(s): PART_TRAIN for s in train}
    part.update({int(s): PART_VAL for s in val})
    part.update({int(s): PART_TEST for s in test})
    return part


# ------------------------------------------------------------------------------ embedded data

def _generate(speakers: int, utterances: int, segment: int, seed: int, sample_rate: int) -> dict[str, np.ndarray]:
    """All utterances of speakers 0..speakers-1 (speaker-major), features normalised with train stats."""
    per_utt = []
    with _OneTorchThread(), tqdm(total=speakers * utterances, desc="speech: synthesising", unit="utt") as bar:
        for s in range(speakers):
            voice = speaker_voice(seed, s)
            for u in range(utterances):
                wave, _ = synthesize_utterance(voice, seed, s, u, sample_rate)
                per_utt.append((s, s * utterances + u, *_utterance_rows(wave, sample_rate, segment)))
                bar.update()
    return _assemble(per_utt, _parts(*speaker_split(np.arange(speakers), seed)))


def _embedded(speakers: int, utterances: int, segment: int, seed: int, sample_rate: int):
    if speakers < 2:
        raise ValueError(f"speech: speakers must be >= 2 (split 5:1 by speaker), got {speakers}")
    if utterances < 1:
        raise ValueError(f"speech: utterances must be >= 1, got {utterances}")
    if sample_rate < 16000:
        raise ValueError(f"speech: the embedded synthesiser needs sample_rate >= 16000, got {sample_rate}")
    settings = dict(version=VERSION, speakers=speakers, utterances=utterances, segment=segment, seed=seed,
                    sample_rate=sample_rate, fbank=FBANK, silence_db=SILENCE_DB)
    key = fingerprint(settings)
    arrays = cached_arrays("speech", key, lambda: _generate(speakers, utterances, segment, seed, sample_rate))
    return arrays, key, speakers, speakers * utterances


# ------------------------------------------------------------------------------ real TIMIT

def read_sphere(path) -> tuple[np.ndarray, int]:
    """A NIST SPHERE file (1024-byte-style `NIST_1A` header + PCM) -> (int16 [n] first channel, sample rate)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(b"NIST_1A"):
        raise ValueError(f"speech: {path} is not a NIST SPHERE file (no NIST_1A header)")
    lines = raw[:4096].split(b"\n")
    try:
        hsize = int(lines[1].strip())
    except (IndexError, ValueError):
        raise ValueError(f"speech: {path}: malformed NIST header (no header size on line 2)") from None
    fields = {}
    for line in raw[:hsize].decode("ascii", "replace").split("\n")[2:]:
        parts = line.split(None, 2)
        if not parts or parts[0] == "end_head":
            break
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    coding = fields.get("sample_coding", "pcm")
    if "shorten" in coding or "ulaw" in coding or "alaw" in coding or "pcm" not in coding:
        raise ValueError(f"speech: {path}: sample_coding {coding!r} is not supported; convert the file "
                         "to plain PCM first (e.g. sph2pipe -f wav)")
    nbytes = int(fields.get("sample_n_bytes", 2))
    channels = int(fields.get("channel_count", 1))
    if nbytes != 2:
        raise ValueError(f"speech: {path}: sample_n_bytes {nbytes} is not supported (expected 16-bit PCM)")
    order = fields.get("sample_byte_format", "01")
    dtype = np.dtype(">i2" if order == "10" else "<i2")
    body = raw[hsize:]
    count = int(fields.get("sample_count", len(body) // (nbytes * channels)))
    data = np.frombuffer(body[: count * nbytes * channels], dtype=dtype)
    if len(data) < count * channels:
        raise ValueError(f"speech: {path}: header says {count} samples, the file holds {len(data) // channels}")
    return data.reshape(-1, channels)[:, 0].astype(np.int16), int(fields.get("sample_rate", SAMPLE_RATE))


def read_timit_wav(path) -> tuple[np.ndarray, int]:
    """A TIMIT .WAV (NIST SPHERE, or RIFF in converted copies) -> (int16 [n] first channel, sample rate).
    libsndfile (soundfile) reads both; SPHERE files it refuses are parsed by read_sphere."""
    try:
        data, sr = sf.read(str(path), dtype="int16", always_2d=True)
        return np.ascontiguousarray(data[:, 0]), int(sr)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        with open(path, "rb") as f:
            if f.read(7) == b"NIST_1A":
                return read_sphere(path)
        raise ValueError(f"speech: cannot read {path} as audio: {e}") from None


def _timit_root(root: Path) -> Path:
    if not root.exists():
        raise FileNotFoundError(f"speech: TIMIT data dir {root} does not exist; expected {TIMIT_LAYOUT}")
    if not root.is_dir():
        raise FileNotFoundError(f"speech: TIMIT data dir {root} is not a directory; expected {TIMIT_LAYOUT}")
    for cand in (root, root / "TIMIT", root / "timit", root / "data", root / "TIMIT" / "data", root / "timit" / "data"):
        if cand.is_dir() and any(d.is_dir() and d.name.upper() in ("TRAIN", "TEST") for d in cand.iterdir()):
            return cand
    raise FileNotFoundError(f"speech: no TRAIN or TEST folder in TIMIT data dir {root}; expected {TIMIT_LAYOUT}")


def timit_files(root) -> list[tuple[str, str, str, Path]]:
    """[(part TRAIN|TEST, speaker, utterance, path)] sorted; SA sentences skipped; when a copy holds
    both SI1027.WAV and a converted SI1027.WAV.wav, the first is read."""
    base = _timit_root(Path(root))
    found: dict[tuple[str, str, str], Path] = {}
    for part_dir in sorted(d for d in base.iterdir() if d.is_dir() and d.name.upper() in ("TRAIN", "TEST")):
        for dr in sorted(d for d in part_dir.iterdir() if d.is_dir() and d.name.upper().startswith("DR")):
            for spk in sorted(d for d in dr.iterdir() if d.is_dir()):
                for f in sorted(spk.iterdir()):
                    name = f.name.upper()
                    if not f.is_file() or not name.endswith(".WAV"):
                        continue
                    utt = name[:-4]
                    plain = not utt.endswith(".WAV")
                    utt = utt.removesuffix(".WAV")
                    if utt.startswith("SA"):
                        continue
                    key = (part_dir.name.upper(), spk.name.upper(), utt)
                    if key not in found or plain:
                        found[key] = f
    if not found:
        raise FileNotFoundError(f"speech: no TIMIT .WAV files (SA1/SA2 aside) under {base}; expected {TIMIT_LAYOUT}")
    return [(*k, found[k]) for k in sorted(found)]


def _real_parts(files, mode: str, seed: int, root: Path) -> tuple[list[str], dict[int, int]]:
    """Global speaker ids (sorted names over TRAIN and TEST) and the split code of each used speaker."""
    names = sorted({f[1] for f in files})
    sid = {n: i for i, n in enumerate(names)}
    in_test = {f[1] for f in files if f[0] == "TEST"}
    in_train = {f[1] for f in files if f[0] == "TRAIN"}
    if mode == "seed":
        train, val, test = speaker_split(np.arange(len(names)), seed)
    else:
        if not in_train:
            raise FileNotFoundError(f"speech: split={mode!r} needs TIMIT's TRAIN folder; none with .WAV files "
                                    f"in {root}; expected {TIMIT_LAYOUT}")
        if mode == "standard":
            test_names = sorted(in_test)
        else:
            test_names = [n for n in CORE_TEST_SPEAKERS if n in in_test]
            missing = [n for n in CORE_TEST_SPEAKERS if n not in in_test]
            if not test_names:
                raise FileNotFoundError(f"speech: split='core' needs the 24 core test speakers in TIMIT's TEST "
                                        f"folder ({', '.join(CORE_TEST_SPEAKERS)}); none found in {root}")
            if missing:
                warnings.warn(f"speech: split='core': {len(missing)} of the 24 core test speakers are missing: "
                              f"{', '.join(missing)}")
        if not test_names:
            raise FileNotFoundError(f"speech: split={mode!r} needs TIMIT's TEST folder; none with .WAV files "
                                    f"in {root}; expected {TIMIT_LAYOUT}")
        train = np.array(sorted(sid[n] for n in in_train))
        test = np.array(sorted(sid[n] for n in test_names))
        perm = train[np.random.default_rng([seed, 1]).permutation(len(train))]
        val = np.sort(perm[: max(1, round(len(train) * VAL_FRACTION))])
    return names, _parts(train, val, test)


def _read_real(files, names, parts, segment: int, sample_rate: int) -> dict[str, np.ndarray]:
    sid = {n: i for i, n in enumerate(names)}
    per_utt = []
    with _OneTorchThread():
        for u, (_, spk, _, path) in enumerate(tqdm(files, desc="speech: TIMIT fbank", unit="utt")):
            if sid[spk] not in parts:
                continue
            wave, sr = read_timit_wav(path)
            if sr != sample_rate:
                wave = torchaudio.functional.resample(torch.from_numpy(wave.astype(np.float32)), sr,
                                                      sample_rate).numpy()
            per_utt.append((sid[spk], u, *_utterance_rows(wave, sample_rate, segment)))
    return _assemble(per_utt, parts)


def _real(data_dir: str, segment: int, seed: int, mode: str, sample_rate: int):
    root = Path(data_dir)
    files = timit_files(root)
    names, parts = _real_parts(files, mode, seed, root)
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for *_, p in files]
    key = fingerprint(dict(version=VERSION, files=stats, segment=segment, seed=seed, split=mode,
                           sample_rate=sample_rate, fbank=FBANK, silence_db=SILENCE_DB))
    arrays = cached_arrays("speech-real", key, lambda: _read_real(files, names, parts, segment, sample_rate))
    return arrays, key, len(names), len(files)


# ------------------------------------------------------------------------------ entry point

def _settings(data: dict) -> dict:
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ValueError(f"speech: unknown data settings {unknown}; expected keys {list(DATA_KEYS)}")
    s = dict(speakers=int(data.get("speakers", 90)), utterances=int(data.get("utterances", 10)),
             segment=int(data.get("segment", 20)), seed=int(data.get("seed", 0)),
             split=str(data.get("split", "seed")), sample_rate=int(data.get("sample_rate", SAMPLE_RATE)))
    bad = []
    if s["segment"] < 1:
        bad.append(f"segment={s['segment']} (must be >= 1)")
    if s["seed"] < 0:
        bad.append(f"seed={s['seed']} (must be >= 0)")
    if s["split"] not in SPLIT_MODES:
        bad.append(f"split={s['split']!r} (expected one of {SPLIT_MODES})")
    if not 8000 <= s["sample_rate"] <= 48000:
        bad.append(f"sample_rate={s['sample_rate']} (expected 8000..48000)")
    if bad:
        raise ValueError(f"speech: invalid data settings: {', '.join(bad)}")
    return s


@DATASETS.register("speech", doc="Speech (TIMIT stand-in): procedural speakers x content units, "
                                  "80-d log-mel, 20-frame segments")
def build_speech(split: str, data: dict, data_dir: str | None = None) -> SequenceDataset:
    """`data`: speakers, utterances (per speaker), segment (frames), seed, optional split (seed |
    standard | core, real TIMIT only) and sample_rate. `data_dir` reads real TIMIT instead (all its
    speakers: `speakers`/`utterances` are ignored).

    Splits are by speaker: test speakers never occur in train; val = 10% of the train speakers
    (a subset of train: tables train on all of train)."""
    s = _settings(data)
    if data_dir is None:
        if s["split"] != "seed":
            raise ValueError(f"speech: split={s['split']!r} selects TIMIT's own test speakers and needs the real "
                             "files (--data-dir); the embedded data only splits by seed (split='seed')")
        arrays, key, n_speakers, n_utterances = _embedded(s["speakers"], s["utterances"], s["segment"], s["seed"],
                                                          s["sample_rate"])
    else:
        arrays, key, n_speakers, n_utterances = _real(data_dir, s["segment"], s["seed"], s["split"], s["sample_rate"])
    part = arrays["part"]
    rows = {"train": part != PART_TEST, "val": part == PART_VAL, "test": part == PART_TEST, "fit": part == PART_TRAIN}
    if split not in rows:
        raise ValueError(f"speech: unknown split {split!r}; expected train, val, test or fit")
    idx = np.flatnonzero(rows[split])
    x = arrays["x"]
    # segments per utterance (FHVAE shares −log p(μ2) out over them); an utterance lies in one split
    segments = np.bincount(arrays["utterance"])[arrays["utterance"]]
    cols = dict(x=x, static=arrays["speaker"][:, None], dynamic=np.zeros((len(x), 0), np.int64),
                dfp=arrays["dfp"], utterance=arrays["utterance"], segments=segments)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in cols.items()}
    info = DatasetInfo(
        name="speech", kind="audio", frames=x.shape[1], channels=1, size=N_MELS,
        static_labels={"speaker": n_speakers}, dynamic_labels={},
        dfp={"kind": "binary", "dim": 1}, num_train=int(rows["train"].sum()), num_sequences=n_utterances)
    return SequenceDataset(info, split, tensors, key)
