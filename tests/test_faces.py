"""Procedural faces (MUG stand-in): tensors, labels, splits, determinism, expressions, exact DFP labels,
cache, and the real MUG loader on tiny folders of JPEG frames."""
import logging
import sys

import cv2
import numpy as np
import pytest

from benchmark.data import SPLITS, load_dataset
from benchmark.data import faces as F
from benchmark.profiles import PROFILES
from benchmark.registry import DATASETS

SMOKE = PROFILES["smoke"].data_for("faces")
T = SMOKE["frames"]
NEUTRAL = np.zeros(len(F.AUS))


@pytest.fixture(scope="module")
def smoke(cache):
    return {split: load_dataset("faces", split, profile="smoke") for split in SPLITS}


def numpy(ds):
    """Arrays of a split, DFP back in fractions of the face height (the dataset gives pixels: × image size)."""
    t = {k: v.numpy() for k, v in ds.tensors.items()}
    return t | {"identity": t["static"][:, 0], "expression": t["dynamic"][:, 0], "dfp": t["dfp"] / ds.info.size}


def clip_keys(ds):
    t = numpy(ds)
    return list(zip(t["identity"].tolist(), t["expression"].tolist(), t["take"].tolist()))


def all_clips(smoke):
    """Train and test together, keyed by (identity, expression, take)."""
    out = {}
    for split in ("train", "test"):
        t = numpy(smoke[split])
        for i, key in enumerate(clip_keys(smoke[split])):
            out[key] = {k: v[i] for k, v in t.items()}
    return out


# ------------------------------------------------------------------------------ embedded data

def test_registered_with_info(smoke):
    assert "faces" in DATASETS
    info = smoke["train"].info
    assert (info.name, info.kind, info.frames, info.channels) == ("faces", "video", T, 3)
    assert info.size == SMOKE["image_size"]
    assert info.static_labels == {"identity": SMOKE["identities"]}
    assert info.dynamic_labels == {"expression": 6}
    assert info.dfp == {"kind": "regress", "dim": 3}
    assert info.num_train == len(smoke["train"])
    assert len({ds.fingerprint for ds in smoke.values()}) == 1
    assert smoke["test"].summary["source"] == "embedded"
    assert smoke["test"].summary["clips"] == SMOKE["identities"] * 6 * SMOKE["takes"]


def test_tensors_shapes_dtypes_ranges(smoke):
    s = SMOKE["image_size"]
    for ds in smoke.values():
        t = numpy(ds)
        n = len(ds)
        assert t["x"].shape == (n, T, 3, s, s) and t["x"].dtype == np.uint8
        assert t["static"].shape == (n, 1) and t["static"].dtype == np.int64
        assert t["dynamic"].shape == (n, 1) and t["dynamic"].dtype == np.int64
        assert t["dfp"].shape == (n, T, 3) and t["dfp"].dtype == np.float32
        assert t["take"].shape == (n,) and t["take"].dtype == np.int64
        assert 0 <= t["identity"].min() and t["identity"].max() < SMOKE["identities"]
        assert 0 <= t["expression"].min() and t["expression"].max() < 6
        assert 0 <= t["take"].min() and t["take"].max() < SMOKE["takes"]
        assert np.isfinite(t["dfp"]).all() and 0 <= t["dfp"].min() and t["dfp"].max() < 0.3
        np.testing.assert_allclose(ds.tensors["dfp"].numpy(), t["dfp"] * s, rtol=1e-6)  # pixels
    batch = smoke["test"].batch([0, 1])
    assert batch["x"].dtype.is_floating_point and 0 <= batch["x"].min() and batch["x"].max() <= 1


def test_splits_by_clip_stratified(smoke):
    keys = {k: clip_keys(ds) for k, ds in smoke.items()}
    train, val, test = (set(keys[k]) for k in ("train", "val", "test"))
    n = SMOKE["identities"] * 6 * SMOKE["takes"]
    assert len(train) == len(keys["train"]) and len(test) == len(keys["test"])   # no clip twice
    assert not train & test and len(train | test) == n
    assert len(test) == round(n * 0.25)
    # every identity and every expression is in both train and test
    for split in ("train", "test"):
        t = numpy(smoke[split])
        assert set(t["identity"]) == set(range(SMOKE["identities"]))
        assert set(t["expression"]) == set(range(6))
    # val: ~10% of the train clips, a subset of train, every expression in it
    assert val < train and len(val) == round(len(train) * 0.1)
    assert set(numpy(smoke["val"])["expression"]) == set(range(6))


def test_split_clips_shares():
    """With 4 takes one per (identity, expression) pair goes to test; with 3 every pair but every 4th
    gives one, with 11 (the cpu and paper profiles) 2 or 3, with 1 take a quarter of the pairs; val is
    ~10% of train in every case."""
    for takes, per_pair in ((11, {2, 3}), (4, {1}), (3, {0, 1}), (2, {0, 1}), (1, {0, 1})):
        ident, expr = (np.repeat(a, takes) for a in np.meshgrid(np.arange(52), np.arange(6), indexing="ij"))
        ident, expr = ident.ravel(), expr.ravel()
        code = F.split_clips(ident, expr, seed=0)
        n = len(code)
        assert abs((code == 2).sum() - n / 4) <= 1
        assert abs((code == 1).sum() - (code <= 1).sum() / 10) <= 6
        tests = np.bincount(ident * 6 + expr, weights=code == 2).astype(int)
        assert set(tests) <= per_pair
        for i in range(52):
            if takes > 1:
                assert (code[ident == i] == 2).any() and (code[ident == i] <= 1).any()
        for e in range(6):
            assert (code[expr == e] == 2).any() and (code[expr == e] == 1).any()


def test_cpu_and_paper_profiles_have_the_size_of_the_seeds_mug():
    """The seed's MUG has 3,528 videos of 52 actors x 6 expressions; fewer clips overfit (faces-takes)."""
    for name in ("cpu", "paper"):
        d = PROFILES[name].data_for("faces")
        clips = d["identities"] * F.N_EXPRESSIONS * d["takes"]
        assert d["identities"] == 52 and abs(clips - 3528) / 3528 < 0.05, (name, clips)


def test_deterministic_from_seed(smoke):
    """A fresh generation repeats the cached one; an identity's clips do not depend on how many identities
    there are; another seed gives other faces."""
    clips = all_clips(smoke)
    size, seed = SMOKE["image_size"], SMOKE["seed"]
    again = F._generate(size, 1, SMOKE["takes"], T, seed)
    for n, key in enumerate(zip(again["identity"], again["expression"], again["take"])):
        np.testing.assert_array_equal(again["x"][n], clips[key]["x"])
        np.testing.assert_array_equal(again["dfp"][n], clips[key]["dfp"])
    other = F._generate(size, 1, 1, T, seed + 1)
    assert np.abs(other["x"][0].astype(int) - clips[(0, 0, 0)]["x"]).mean() > 5


def test_frame_zero_is_neutral_with_exact_labels(smoke):
    """Frame 0 of every clip is the neutral face: its DFP labels are the identity's neutral gaps."""
    clips = all_clips(smoke)
    for i in range(SMOKE["identities"]):
        neutral = F.gaps(F.identity_params(i, SMOKE["seed"]), NEUTRAL)
        for e in range(6):
            for k in range(SMOKE["takes"]):
                np.testing.assert_allclose(clips[(i, e, k)]["dfp"][0], neutral, rtol=1e-6)


def test_expressions_move_eyes_and_mouth(smoke):
    """At the apex, relative to frame 0: eyes wide for surprise/fear, narrowed for anger/disgust/happiness;
    the mouth open for surprise/fear/happiness/disgust, closed for anger and sadness."""
    t = numpy(smoke["train"])
    delta = t["dfp"][:, -1] - t["dfp"][:, 0]           # [N, 3]
    eyes, lip = delta[:, :2].mean(1), delta[:, 2]
    e = t["expression"]
    anger, disgust, happy, fear, sad, surprise = range(6)
    assert (eyes[np.isin(e, [surprise, fear])] > 0.02).all()
    assert (eyes[np.isin(e, [anger, disgust, happy])] < -0.01).all()
    assert (lip[e == surprise] > 0.07).all() and (lip[e == fear] > 0.03).all()
    assert (lip[np.isin(e, [happy, disgust])] > 0.02).all()
    assert (lip[np.isin(e, [anger, sad])] == 0).all()
    # the labels only grow from neutral to the apex (monotone onset, then held)
    assert (np.diff(np.abs(t["dfp"] - t["dfp"][:, :1]).sum(-1), axis=1) >= -1e-6).all()


def test_expression_is_in_the_motion_not_the_colours(smoke):
    """The apex-minus-neutral frame tells expressions apart (nearest class mean, train -> test), while
    the clip's mean colour does not."""
    tr, te = numpy(smoke["train"]), numpy(smoke["test"])

    def change(x):
        return (x[:, -3:].astype(np.float32).mean(1) - x[:, 0].astype(np.float32)).mean(1).reshape(len(x), -1)

    def colour(x):
        return x.astype(np.float32).mean(axis=(1, 3, 4))

    def nearest_mean(f_tr, f_te):
        means = np.stack([f_tr[tr["expression"] == c].mean(0) for c in range(6)])
        return (np.linalg.norm(f_te[:, None] - means[None], axis=-1).argmin(1) == te["expression"]).mean()

    assert nearest_mean(change(tr["x"]), change(te["x"])) > 0.65        # chance: 1/6
    assert nearest_mean(colour(tr["x"]), colour(te["x"])) < 0.35


def test_identity_is_static(smoke):
    """An identity's clips share its appearance: the mean colour of frame 0 (neutral) varies little
    within an identity compared with between identities."""
    t = numpy(smoke["train"])
    c = t["x"][:, 0].astype(np.float32).mean(axis=(2, 3))      # [N, 3]
    within = np.mean([c[t["identity"] == i].std(0).mean() for i in range(SMOKE["identities"])])
    between = np.stack([c[t["identity"] == i].mean(0) for i in range(SMOKE["identities"])]).std(0).mean()
    assert between > 2 * within


def _span(column: np.ndarray, colours, other, lo: float, hi: float) -> int:
    """Rows from the first to the last pixel of one image column, between rows lo and hi, that is nearer to
    one of `colours` than to `other` (0 if none)."""
    seg = column[int(lo):int(hi)].astype(np.float32)
    near = np.min([np.linalg.norm(seg - np.asarray(c, np.float32), axis=-1) for c in colours], axis=0)
    rows = np.flatnonzero(near < np.linalg.norm(seg - np.asarray(other, np.float32), axis=-1))
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


def test_dfp_labels_match_the_drawn_geometry(monkeypatch):
    """Known answer: on the canonical canvas, the eye's opening (sclera and iris pixels between the lids)
    at 1/3 and 2/3 of its width, and the mouth's opening (mouth and teeth pixels) at its centre, measured
    in pixels, equal the labels times the face height (to a pixel). The lash and lid lines are drawn in the
    skin's colour here."""
    iris, skin = (0, 0, 255), (190, 120, 80)       # far from the sclera, the teeth and the mouth
    p = F.identity_params(3, 11) | {"glasses": False, "beard": False, "iris": np.array(iris, np.float32),
                                    "skin": np.array(skin, np.float32)}
    monkeypatch.setattr(F, "LASH", skin)
    for e in range(6):
        au = F.APEX[e]
        img = F.draw_face(p, au, background=(0, 255, 0))
        label = F.gaps(p, au) * 2 * p["fb"]
        ey = p["eye_y"]
        eyes = []
        for ex in (p["cx"] - p["eye_dx"], p["cx"] + p["eye_dx"]):
            cols = [int(round(ex + dx)) for dx in (-p["ew"] / 3, p["ew"] / 3)]
            eyes.append(np.mean([_span(img[:, c], (F.SCLERA, iris, F.PUPIL), skin, ey - 20, ey + 20) for c in cols]))
        np.testing.assert_allclose(eyes, label[:2], atol=1.0)
        _, _, _, outer_up, outer_lo = F._mouth_curves(F._mouth(p, au), n=25)   # centre: index 12
        col = int(round(p["cx"]))
        opening = _span(img[:, col], (F.MOUTH_IN, F.TEETH), p["lip"], outer_up[12] - 1, outer_lo[12] + 2)
        if label[2] > 0:
            assert abs(opening - label[2]) <= 1.0, (e, opening, label[2])
        else:
            assert opening == 0


def test_cache_is_reused(smoke, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("generated again instead of loading the cache")
    monkeypatch.setattr(F, "_generate", fail)
    again = load_dataset("faces", "train", profile="smoke")
    np.testing.assert_array_equal(again.tensors["x"].numpy(), smoke["train"].tensors["x"].numpy())
    assert again.fingerprint == smoke["train"].fingerprint


def test_invalid_settings():
    with pytest.raises(ValueError, match="characters"):
        F.build_faces("train", SMOKE | {"characters": 3})
    with pytest.raises(ValueError, match="image_size=48"):
        F.build_faces("train", SMOKE | {"image_size": 48})
    with pytest.raises(ValueError, match="unknown split"):
        F.build_faces("dev", SMOKE)


# ------------------------------------------------------------------------------ real MUG

MUG_FRAMES = 16
H, W = 150, 200  # frame size of the fake MUG takes


def write_take(folder, identity, expression, n=MUG_FRAMES, place=(36, 11), background=180):
    """Frames of a drawn face going from neutral to the expression, saved as JPEGs (MUG's img_%04d.jpg)."""
    folder.mkdir(parents=True)
    p = F.identity_params(identity, 5)
    for t in range(n):
        frame = np.full((H, W, 3), background, np.uint8)
        face = F.draw_face(p, F.APEX[expression] * t / (n - 1))
        frame[place[1]:place[1] + F.R, place[0]:place[0] + F.R] = face
        cv2.imwrite(str(folder / f"img_{t:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def mug(tmp_path_factory):
    """subjects3/<001|007>/<anger|happiness>/take00<0|1>/ with 16 frames each, a neutral folder
    (ignored) and a take of 5 frames (skipped); subject 001 on a darker background than 007."""
    root = tmp_path_factory.mktemp("mug")
    for s, subject in enumerate(("007", "001")):
        for e in (0, 2):
            for k in range(2):
                write_take(root / "subjects3" / subject / F.EXPRESSIONS[e] / f"take{k:03d}", s, e,
                           background=(180, 90)[s])
    write_take(root / "subjects3" / "001" / "neutral" / "take000", 0, 0)
    write_take(root / "subjects3" / "001" / "surprise" / "take000", 0, 5, n=5)
    return root


def fake_landmarks(rgb, box):
    """68 points with known gaps: left eye (6 + 8) / 2 = 7, right eye 4, inner lips 10 (pixels)."""
    pts = np.zeros((68, 2), np.float32)
    for (a, b), d in zip(F.LEFT_EYE_PAIRS + F.RIGHT_EYE_PAIRS + (F.LIP_PAIR,), (6, 8, 4, 4, 10)):
        pts[a], pts[b] = (50, 40), (50, 40 + d)
    return pts


BOX = (60, 30, 100, 100)


def test_real_mug_loader(mug, cache, monkeypatch, caplog):
    """Clips, labels, splits, crops and DFP labels of the real-format loader, with the landmark model and
    the face detector replaced by known answers (subject 001's faces are 'not found': centre crop)."""
    monkeypatch.setattr(F, "landmark_fn", lambda: fake_landmarks)
    monkeypatch.setattr(F, "detect_face", lambda rgb: BOX if rgb[:5, :5].mean() > 135 else None)
    data = dict(image_size=32, frames=15, seed=0)
    with caplog.at_level(logging.WARNING, logger="benchmark.data.faces"):
        ds = {s: F.build_faces(s, data, data_dir=str(mug)) for s in SPLITS}
    assert "fewer than 15 frames" in caplog.text and "no face found" in caplog.text
    info = ds["train"].info
    assert info.static_labels == {"identity": 2} and info.dynamic_labels == {"expression": 6}
    assert info.dfp == {"kind": "regress", "dim": 3} and info.frames == 15 and info.size == 32
    assert ds["train"].summary == dict(source=str(mug / "subjects3"), clips=8, faces_without_detection=4,
                                       takes_skipped_short=1)
    keys = {s: clip_keys(d) for s, d in ds.items()}
    assert len(keys["train"]) == 6 and len(keys["test"]) == 2 and len(keys["val"]) == 1
    assert set(keys["val"]) < set(keys["train"]) and not set(keys["train"]) & set(keys["test"])
    everything = sorted(keys["train"] + keys["test"])
    # identity = index of the sorted subject ids (001 -> 0, 007 -> 1); anger 0, happiness 2; takes 0, 1
    assert everything == [(i, e, k) for i in (0, 1) for e in (0, 2) for k in (0, 1)]
    for split in ("train", "test"):
        t = numpy(ds[split])
        assert t["x"].shape == (len(t["x"]), 15, 3, 32, 32) and t["x"].dtype == np.uint8
        for n, (i, e, k) in enumerate(clip_keys(ds[split])):
            h = BOX[3] if i == 1 else min(H, W)           # the face box's height, or the centre crop's
            np.testing.assert_allclose(t["dfp"][n], np.tile([7 / h, 4 / h, 10 / h], (15, 1)), rtol=1e-5)
            # 15 of 16 frames, evenly: frame 0, the last (15), and the middle one (7.5, rounded to even) is frame 8
            subject = "001" if i == 0 else "007"
            files = sorted((mug / "subjects3" / subject / F.EXPRESSIONS[e] / f"take{k:03d}").iterdir())
            for t_idx, f_idx in ((0, 0), (7, 8), (14, 15)):
                frame = cv2.cvtColor(cv2.imread(str(files[f_idx])), cv2.COLOR_BGR2RGB)
                x0, y0, side = F.crop_box(BOX, frame.shape) if i == 1 else ((W - H) // 2, 0, H)
                expect = cv2.resize(frame[y0:y0 + side, x0:x0 + side], (32, 32), interpolation=cv2.INTER_AREA)
                np.testing.assert_array_equal(t["x"][n, t_idx].transpose(1, 2, 0), expect)

    # data_dir may also be the subjects3 folder itself; the converted arrays are cached
    monkeypatch.setattr(F, "_read_mug", lambda *a, **k: pytest.fail("MUG frames read again"))
    again = F.build_faces("test", data, data_dir=str(mug / "subjects3"))
    np.testing.assert_array_equal(again.tensors["x"].numpy(), ds["test"].tensors["x"].numpy())
    assert again.summary["faces_without_detection"] == 4


def test_crop_box():
    assert F.crop_box((60, 30, 100, 100), (150, 200)) == (50, 20, 120)      # 1.2x, centred
    assert F.crop_box((0, 0, 100, 100), (150, 200)) == (0, 0, 120)          # moved inside the image
    assert F.crop_box((10, 10, 180, 180), (150, 200)) == (25, 0, 150)       # at most the image's side


def test_landmark_gaps_known_answer():
    np.testing.assert_allclose(F.landmark_gaps(fake_landmarks(None, None), 50), [7 / 50, 4 / 50, 10 / 50])


def test_real_mug_with_dlib(mug, cache):
    """The real path: OpenCV's Haar cascade and dlib's 68-point predictor (optional extra [mug])."""
    pytest.importorskip("dlib")
    try:
        F.landmark_fn()
    except (ImportError, RuntimeError) as e:
        pytest.skip(str(e))
    data = dict(image_size=64, frames=15, seed=1)
    ds = F.build_faces("train", data, data_dir=str(mug))
    t = numpy(ds)
    assert t["x"].shape[1:] == (15, 3, 64, 64)
    assert np.isfinite(t["dfp"]).all() and (t["dfp"] >= 0).all() and (t["dfp"] < 1).all()
    # the summary counts the takes whose middle frame had no face, as the detector sees them
    missed = 0
    for subject in ("001", "007"):
        for e in (0, 2):
            for k in range(2):
                files = sorted((mug / "subjects3" / subject / F.EXPRESSIONS[e] / f"take{k:03d}").iterdir())
                middle = F._sample(files, 15)[7]
                missed += F.detect_face(cv2.cvtColor(cv2.imread(str(middle)), cv2.COLOR_BGR2RGB)) is None
    assert ds.summary["faces_without_detection"] == missed


def test_missing_dlib_is_a_clear_error(mug, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    F.landmark_fn.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[mug\]' \(dlib-bin, face-recognition-models\)"):
            F.build_faces("train", dict(image_size=32, frames=14, seed=0), data_dir=str(mug))
    finally:
        F.landmark_fn.cache_clear()


def test_bad_mug_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "landmark_fn", lambda: fake_landmarks)
    data = dict(image_size=32, frames=15, seed=0)
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        F.build_faces("train", data, data_dir=str(missing))
    assert str(missing) in str(err.value) and "subjects3/<subject id>/<expression>/take*/" in str(err.value)
    empty = tmp_path / "empty"
    (empty / "subjects3" / "001" / "anger").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no MUG clips") as err:
        F.build_faces("train", data, data_dir=str(empty))
    assert str(empty / "subjects3") in str(err.value)
    short = tmp_path / "short"
    write_take(short / "subjects3" / "001" / "fear" / "take000", 0, 3, n=4)
    with pytest.raises(FileNotFoundError, match="1 takes had fewer than 15 frames"):
        F.build_faces("train", data, data_dir=str(short))
    broken = tmp_path / "broken"
    write_take(broken / "subjects3" / "001" / "fear" / "take000", 0, 3)
    bad = broken / "subjects3" / "001" / "fear" / "take000" / "img_0000.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image") as err:
        F.build_faces("train", data, data_dir=str(broken))
    assert str(bad) in str(err.value)
