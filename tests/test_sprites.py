"""Procedural Sprites: tensors, labels, splits, determinism, motions, DFP labels, real-format loader, cache."""
import cv2
import numpy as np
import pytest

from benchmark.data import SPLITS, load_dataset
from benchmark.data import sprites as S
from benchmark.profiles import PROFILES
from benchmark.registry import DATASETS

SMOKE = PROFILES["smoke"].data_for("sprites")


@pytest.fixture(scope="module")
def smoke(cache):
    return {split: load_dataset("sprites", split, profile="smoke") for split in SPLITS}


def numpy(ds):
    t = {k: v.numpy() for k, v in ds.tensors.items()}
    return t | {"action": t["dynamic"][:, 0], "attrs": t["static"]}


def motion_energy(x):
    """Mean |frame t+1 - frame t| over time, grayscale, pooled to 8x8: [N, 64]; independent of colours' layout in time."""
    gray = x.astype(np.float32).mean(axis=2)
    diff = np.abs(np.diff(gray, axis=1)).mean(axis=1)
    n, h, w = diff.shape
    return diff.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4)).reshape(n, -1)


def test_registered_with_info(smoke):
    assert "sprites" in DATASETS
    info = smoke["train"].info
    assert (info.name, info.kind, info.frames, info.channels, info.size) == ("sprites", "video", 8, 3, SMOKE["image_size"])
    assert info.static_labels == {"skin": 6, "top": 6, "pants": 6, "hair": 6}
    assert info.dynamic_labels == {"action": 9}
    assert info.dfp == {"kind": "patch", "dim": 16, "grid": 4, "topk_stored": 3}
    assert info.num_train == len(smoke["train"])
    assert len({ds.fingerprint for ds in smoke.values()}) == 1


def test_tensors_shapes_dtypes_ranges(smoke):
    s = SMOKE["image_size"]
    for ds in smoke.values():
        t = numpy(ds)
        n = len(ds)
        assert t["x"].shape == (n, 8, 3, s, s) and t["x"].dtype == np.uint8
        assert t["action"].shape == (n,) and t["action"].dtype == np.int64
        assert t["attrs"].shape == (n, 4) and t["attrs"].dtype == np.int64
        assert t["dfp"].shape == (n, 8, 3) and t["dfp"].dtype == np.int64
        assert t["character"].shape == (n,) and t["character"].dtype == np.int64
        assert t["action"].min() >= 0 and t["action"].max() < 9
        assert t["attrs"].min() >= 0 and t["attrs"].max() < 6
        assert t["dfp"].min() >= 0 and t["dfp"].max() < 16
        # the three stored patches of a frame are distinct
        d = np.sort(t["dfp"], axis=-1)
        assert (np.diff(d, axis=-1) > 0).all()
        np.testing.assert_array_equal(S.character_id(t["attrs"]), t["character"])
        # every character does all 9 action-directions
        for c in np.unique(t["character"]):
            assert sorted(t["action"][t["character"] == c]) == list(range(9))
    batch = smoke["test"].batch([0, 1])
    assert batch["x"].dtype.is_floating_point and 0 <= batch["x"].min() and batch["x"].max() <= 1


def test_splits_by_character(smoke):
    chars = {k: set(numpy(ds)["character"]) for k, ds in smoke.items()}
    n = SMOKE["characters"]
    assert len(chars["test"]) == round(n * 296 / 1296)
    assert len(chars["train"]) + len(chars["test"]) == n
    assert not chars["train"] & chars["test"]
    assert chars["val"] and chars["val"] < chars["train"]
    assert len(chars["val"]) == round(len(chars["train"]) * 0.1)


def test_deterministic_from_seed(smoke):
    """A fresh generation repeats the cached one; with fewer characters it is its prefix (per-sequence
    randomness belongs to the character), and another seed gives other characters and frames."""
    t = numpy(smoke["train"])
    size, seed = SMOKE["image_size"], SMOKE["seed"]
    again = S._generate(size, 10, seed, 8)
    for k in ("x", "action", "attrs", "dfp", "character"):
        np.testing.assert_array_equal(again[k], t[k][:90])
    other = S._generate(size, 10, seed + 1, 8)
    assert not np.array_equal(other["character"], again["character"])
    assert not np.array_equal(other["x"], again["x"])


def test_frames_move(smoke):
    x = numpy(smoke["train"])["x"].astype(np.int16)
    step = np.abs(np.diff(x, axis=1)).reshape(len(x), 7, -1).mean(-1)
    assert (step > 1).all()


def test_actions_are_different_motions(smoke):
    t = numpy(smoke["train"])
    x, action, char = t["x"], t["action"], t["character"]
    # the same character doing two different action-directions gives different frames
    for c in np.unique(char)[:5]:
        seqs = x[char == c][np.argsort(action[char == c])].astype(np.int16)
        for a in range(9):
            for b in range(a + 1, 9):
                assert np.abs(seqs[a] - seqs[b]).mean() > 5
    # where the frames change identifies the action, whatever the colours: nearest class mean of
    # the training set's motion-energy maps classifies the test set
    e_train = motion_energy(x)
    means = np.stack([e_train[action == a].mean(0) for a in range(9)])
    assert np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(9, dtype=bool)].min() > 20
    test = numpy(smoke["test"])
    e_test = motion_energy(test["x"])
    pred = np.linalg.norm(e_test[:, None] - means[None], axis=-1).argmin(1)
    assert (pred == test["action"]).mean() > 0.95


def test_appearance_is_static(smoke):
    """Colours belong to the character: its mean colour hardly changes over its frames."""
    x = numpy(smoke["train"])["x"].astype(np.float32)
    per_frame = x.mean(axis=(3, 4))                       # [N, T, 3]
    assert np.abs(per_frame - per_frame.mean(1, keepdims=True)).max() < 5


def test_dfp_marks_where_the_body_moves(smoke):
    t = numpy(smoke["train"])
    top_row = t["dfp"][..., 0] // 4                       # 0 = top of the image
    walk_side = np.isin(t["action"], [1, 2])               # walk left/right: the legs step
    assert (top_row[walk_side] >= 2).mean() > 0.9
    spellcast = t["action"] // 3 == 1                      # arms move, feet stay
    assert (top_row[spellcast] < 3).all()
    assert (top_row[spellcast] < 2).mean() > 0.5
    # the patch whose pixels change most between frames t-1 and t is among the stored top 3 of frame t
    gray = t["x"].astype(np.float32).mean(axis=2)
    diff = np.abs(np.diff(gray, axis=1))
    n, f, h, w = diff.shape
    changed = diff.reshape(n, f, 4, h // 4, 4, w // 4).mean(axis=(3, 5)).reshape(n, f, 16).argmax(-1)
    assert (t["dfp"][:, 1:] == changed[..., None]).any(-1).mean() > 0.75


def test_dfp_labels_follow_a_moving_square():
    x = np.full((1, 4, 3, 32, 32), 255, np.uint8)
    for t in range(4):
        x[0, t, :, 2:8, 2 + 2 * t:8 + 2 * t] = 0   # a dark square moving right inside patch row 0
    top = S.dfp_labels(x)[0, :, 0]
    assert set(top) <= {0, 1}                      # patches (0, 0) and (0, 1)


def test_render_character():
    f64 = S.render_character([1, 2, 3, 4], 0, 2)
    assert f64.shape == (8, 64, 64, 3) and f64.dtype == np.uint8
    f32 = S.render_character([1, 2, 3, 4], 0, 2, size=32)
    resized = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in f64])
    assert np.abs(f32.astype(int) - resized).max() <= 2
    # left is the mirror image of right
    np.testing.assert_array_equal(S.render_character([1, 2, 3, 4], 0, 1), f64[:, :, ::-1])
    assert tuple(f64[0, 0, 0]) == S.BACKGROUND
    assert (np.all(f64 == S.SKIN[1], axis=-1)).any() and (np.all(f64 == S.HAIR[4], axis=-1)).any()


def test_cache_is_reused(smoke, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("generated again instead of loading the cache")
    monkeypatch.setattr(S, "_generate", fail)
    again = load_dataset("sprites", "train", profile="smoke")
    np.testing.assert_array_equal(again.tensors["x"].numpy(), smoke["train"].tensors["x"].numpy())
    assert again.fingerprint == smoke["train"].fingerprint


def test_missing_real_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sprites_X_train.npy") as err:
        S.build_sprites("train", SMOKE, data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def one_hot(idx, n):
    return np.eye(n, dtype=np.float32)[idx]


def fake_real_sequences(n, rng):
    """Sequences rendered at 64 with real-format labels: frames float [0,1], attributes per frame in the
    real order (body, bottom, top, hair), actions one-hot per frame."""
    ours = rng.integers(0, 6, size=(n, 4))
    action = rng.integers(0, 9, size=n)
    x = np.stack([S.render_character(a, c // 3, c % 3) for a, c in zip(ours, action)]).astype(np.float32) / 255
    real_attrs = ours[:, [0, 2, 1, 3]]
    A = np.repeat(one_hot(real_attrs, 6)[:, None], 8, axis=1)   # [n, 8, 4, 6]
    D = np.repeat(one_hot(action, 9)[:, None], 8, axis=1)       # [n, 8, 9]
    return x, A, D, ours, action


def test_real_format_loader(tmp_path, cache, monkeypatch):
    rng = np.random.default_rng(0)
    truth = {}
    for split, n in (("train", 20), ("test", 6)):
        x, A, D, ours, action = fake_real_sequences(n, rng)
        np.save(tmp_path / f"sprites_X_{split}.npy", x)
        np.save(tmp_path / f"sprites_A_{split}.npy", A)
        np.save(tmp_path / f"sprites_D_{split}.npy", D)
        truth[split] = (x, ours, action)
    data = dict(image_size=32, seed=3)
    ds = {s: S.build_sprites(s, data, data_dir=str(tmp_path)) for s in SPLITS}
    for split in ("train", "test"):
        x, ours, action = truth[split]
        t = numpy(ds[split])
        assert t["x"].shape == (len(x), 8, 3, 32, 32) and t["x"].dtype == np.uint8
        np.testing.assert_array_equal(t["attrs"], ours)
        np.testing.assert_array_equal(t["action"], action)
        np.testing.assert_array_equal(t["character"], S.character_id(ours))
        # frames are the 64-pixel files resized like the embedded data
        expect = np.stack([S.render_character(a, c // 3, c % 3, size=32) for a, c in zip(ours, action)])
        assert np.abs(t["x"].transpose(0, 1, 3, 4, 2).astype(int) - expect).max() <= 2
        assert t["dfp"].shape == (len(x), 8, 3)
    assert ds["train"].info.num_train == 20 and len(ds["val"]) == 2
    val_rows = {r.tobytes() for r in ds["val"].tensors["x"].numpy()}
    assert val_rows <= {r.tobytes() for r in ds["train"].tensors["x"].numpy()}

    # the converted arrays and flow labels are cached too
    monkeypatch.setattr(S, "_read_real", lambda *a, **k: pytest.fail("real files read again"))
    again = S.build_sprites("test", data, data_dir=str(tmp_path))
    np.testing.assert_array_equal(again.tensors["dfp"].numpy(), ds["test"].tensors["dfp"].numpy())


def test_real_per_motion_layout(tmp_path, cache):
    """The original `npy/{action}_{direction}_{frames,attributes}_{split}.npy` files."""
    rng = np.random.default_rng(1)
    npy = tmp_path / "npy"
    npy.mkdir()
    for split in ("train", "test"):
        for label in range(9):
            x, A, _, _, _ = fake_real_sequences(1, rng)
            act, direction = S.REAL_ACTIONS[label // 3], S.DIRECTIONS[label % 3]
            np.save(npy / f"{act}_{direction}_frames_{split}.npy", x)
            np.save(npy / f"{act}_{direction}_attributes_{split}.npy", A)
    ds = S.build_sprites("test", dict(image_size=32, seed=0), data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.tensors["dynamic"][:, 0].numpy(), np.arange(9))
