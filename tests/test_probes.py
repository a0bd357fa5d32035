"""Probes of factors from z_f and z_{1:T} on synthetic latents whose answers are known."""
import math

import numpy as np
import pytest
import torch

from metrics.probes import (fold_ids, leakage_score, majority_accuracy, probe_accuracy, probe_matrix, probe_report,
                            purity_score)
from models.base import Latents

N, T = 160, 6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The probes' matrices are tiny: extra threads only add overhead (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _labels(classes, seed, n=N):
    return torch.randint(0, classes, (n,), generator=_gen(seed))


def _embed(y, classes, dim, seed, noise=0.1):
    """A random embedding of the labels plus small noise: a latent that copies the factor. The class points are
    rows of a random rotation (dim >= classes), 2 apart: every class is a vertex of their hull, which a linear
    probe needs to tell it apart, and none is within noise of another."""
    g = _gen(seed)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    return 2 ** 0.5 * rotation[:classes][y] + noise * torch.randn(len(y), dim, generator=g)


def _noise(*shape, seed):
    return torch.randn(*shape, generator=_gen(seed))


@pytest.fixture(scope="module")
def toy():
    """skin (static, 6 classes) and action (dynamic, 9), independent; z_f copies skin, z_t action (every frame)."""
    skin, action = _labels(6, 1), _labels(9, 2)
    zf = torch.cat([_embed(skin, 6, 8, 3), _noise(N, 4, seed=4)], 1)
    zt = _embed(action, 9, 10, 5)[:, None].expand(N, T, 10) + 0.1 * _noise(N, T, 10, seed=6)
    return {"skin": skin, "action": action}, zf, zt


def test_a_copied_factor_is_read_and_an_independent_one_is_not(toy):
    factors, zf, _ = toy
    half = N // 2
    assert probe_accuracy(zf[:half], factors["skin"][:half], zf[half:], factors["skin"][half:]) > 97
    # action is independent of z_f: held-out accuracy stays near chance (1/9 = 11 %)
    assert probe_accuracy(zf[:half], factors["action"][:half], zf[half:], factors["action"][half:]) < 30
    # an MLP probe reads it as well
    assert probe_accuracy(zf[:half], factors["skin"][:half], zf[half:], factors["skin"][half:], kind="mlp") > 97


def test_matrix_is_high_on_the_right_latent_and_near_chance_on_the_wrong_one(toy):
    factors, zf, zt = toy
    m = probe_matrix({"z_f": zf, "z_t": zt}, factors, n_classes={"skin": 6, "action": 9})
    assert m["skin"]["z_f"] > 97 and m["action"]["z_t"] > 97
    assert m["skin"]["z_t"] < 35 and m["action"]["z_f"] < 30
    chance = majority_accuracy(factors)
    static, dynamic = {"skin"}, {"action"}
    assert leakage_score(m, static, dynamic, chance) < 0.15
    assert purity_score(m, static, dynamic, chance) > 0.95


def test_leakage_is_one_when_each_latent_copies_the_other_kind(toy):
    factors, zf, zt = toy
    # swapped: z_f holds the action, z_{1:T} the skin colour
    swapped = {"z_f": zt[:, 0], "z_t": zf[:, None].expand(N, T, zf.shape[1])}
    m = probe_matrix(swapped, factors)
    chance = majority_accuracy(factors)
    assert leakage_score(m, {"skin"}, {"action"}, chance) > 0.95
    assert purity_score(m, {"skin"}, {"action"}, chance) < 0.15
    # only the dynamic factor, copied into z_f as well as z_t: full leakage
    m = probe_matrix({"z_f": zt[:, 0], "z_t": zt}, {"action": factors["action"]})
    assert leakage_score(m, set(), {"action"}, majority_accuracy({"action": factors["action"]})) > 0.95


def test_every_frame_of_z_t_is_seen():
    """A static factor that leaks into one frame of z_{1:T} only is still found (z_{1:T} is flattened)."""
    skin = _labels(6, 7)
    zt = _noise(N, T, 8, seed=8)
    zt[:, 3] += 3 * _embed(skin, 6, 8, 9)
    m = probe_matrix({"z_t": zt}, {"skin": skin})
    assert m["skin"]["z_t"] > 85  # chance: 1/6


def test_chance_is_the_majority_rate_of_skewed_labels():
    """The smaller digit of a random pair is 0 about 19 % of the time, not 10 %: the probe's chance level
    follows the label frequencies, so an uninformative latent does not count as leakage."""
    pairs = torch.randint(0, 10, (2000, 2), generator=_gen(10))
    digit1 = pairs.min(1).values
    chance = majority_accuracy({"digit1": digit1})["digit1"]
    assert 16 < chance < 22
    m = {"digit1": {"z_f": 100.0, "z_t": chance}}
    assert leakage_score(m, {"digit1"}, set(), {"digit1": chance}) == 0
    assert leakage_score(m, {"digit1"}, set(), {"digit1": 10.0}) > 0.05  # what 1/n_classes would have said
    # a factor with one class left in the evaluated sequences says nothing
    assert math.isnan(leakage_score({"a": {"z_f": 100.0, "z_t": 100.0}}, {"a"}, set(), {"a": 100.0}))


def test_folds_are_stratified_and_seeded():
    y = _labels(5, 11, 103)
    ids = fold_ids(y, folds=3, seed=0)
    assert sorted(np.bincount(ids)) == [34, 34, 35]
    for c in range(5):  # every class split about evenly across the folds
        counts = np.bincount(ids[y.numpy() == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(ids, fold_ids(y, folds=3, seed=0))
    assert not np.array_equal(ids, fold_ids(y, folds=3, seed=1))


def test_same_seed_same_numbers(toy):
    factors, zf, zt = toy
    latents = {"z_f": zf + _noise(*zf.shape, seed=12), "z_t": zt}  # some probes imperfect, so folds matter
    a = probe_matrix(latents, factors, seed=3)
    assert a == probe_matrix(latents, factors, seed=3)
    half = N // 2
    mlp = lambda: probe_accuracy(latents["z_f"][:half], factors["skin"][:half], latents["z_f"][half:],  # noqa: E731
                                 factors["skin"][half:], kind="mlp", seed=3)
    assert mlp() == mlp()
    assert majority_accuracy(factors, seed=3) == majority_accuracy(factors, seed=3)


def test_report_names_and_inference_mode():
    """probe_report reads the harness layout (static/dynamic label columns per batch, Latents per batch) and
    works on tensors made under torch.inference_mode, as the evaluation makes them."""
    static, dynamic = {"skin": 6, "top": 6}, {"action": 9}
    n = 96
    labels = {f: _labels(c, 20 + i, n) for i, (f, c) in enumerate({**static, **dynamic}.items())}
    with torch.inference_mode():
        zf = torch.cat([_embed(labels["skin"], 6, 6, 30), _embed(labels["top"], 6, 6, 31)], 1)
        zt = _embed(labels["action"], 9, 9, 32)[:, None].expand(n, T, 9).contiguous()
        posteriors = [Latents(zf[i:i + 32], zf[i:i + 32], zf[i:i + 32], zt[i:i + 32], zt[i:i + 32], zt[i:i + 32])
                      for i in range(0, n, 32)]
        batches = [{"static": torch.stack([labels["skin"], labels["top"]], 1)[i:i + 32],
                    "dynamic": labels["action"][i:i + 32, None]} for i in range(0, n, 32)]
        out = probe_report(posteriors, batches, static, dynamic)
    assert set(out) == {"probe_skin_z_f", "probe_skin_z_t", "probe_top_z_f", "probe_top_z_t", "probe_action_z_f",
                        "probe_action_z_t", "probe_leakage", "probe_purity"}
    assert out["probe_skin_z_f"] > 95 and out["probe_top_z_f"] > 95 and out["probe_action_z_t"] > 95
    assert out["probe_leakage"] < 0.2 and out["probe_purity"] > 0.9
    with pytest.raises(ValueError, match="posteriors"):
        probe_report(posteriors[:2], batches, static, dynamic)


@pytest.mark.parametrize("call, match", [
    (lambda: probe_accuracy(torch.ones(4), [0, 1, 0, 1], torch.ones(4, 2), [0, 1, 0, 1]), "z_train"),
    (lambda: probe_accuracy(torch.ones(4, 2), [0, 1, 0], torch.ones(4, 2), [0, 1, 0, 1]), "y_train.*lengths"),
    (lambda: probe_accuracy(torch.ones(4, 2), [0, 1, 0, 1], torch.ones(4, 3), [0, 1, 0, 1]), "z_test"),
    (lambda: probe_accuracy(torch.ones(4, 2), [0, 1, 0, 1], torch.ones(4, 2), [0, 1, 0, 5], n_classes=2), "y_test.*range"),
    (lambda: probe_accuracy(torch.ones(4, 2), [0, -1, 0, 1], torch.ones(4, 2), [0, 1, 0, 1]), "y_train.*range"),
    (lambda: probe_accuracy(torch.tensor([[0.0], [math.nan], [1.0], [2.0]]), [0, 1, 0, 1], torch.ones(4, 1),
                            [0, 1, 0, 1]), "z_train.*NaN"),
    (lambda: probe_accuracy(torch.ones(4, 2), [0, 1, 0, 1], torch.ones(4, 2), [0, 1, 0, 1], kind="svm"), "kind"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2), "z_t": torch.ones(5, 2, 2)}, {"a": [0, 1, 0, 1]}), "latents.*lengths"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2)}, {"a": [0, 1, 0]}), r"factors\['a'\].*lengths"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2)}, {"a": [0, 1, 2, 1]}, n_classes={"a": 2}), r"factors\['a'\].*range"),
    (lambda: probe_matrix({"z_f": torch.full((4, 2), math.nan)}, {"a": [0, 1, 0, 1]}), r"latents\['z_f'\].*NaN"),
    (lambda: probe_matrix({}, {"a": [0, 1, 0, 1]}), "latents"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2)}, {}), "factors"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2)}, {"a": [0, 1, 0, 1]}, folds=1), "folds"),
    (lambda: probe_matrix({"z_f": torch.ones(4, 2)}, {"a": [0, 1, 0, 1]}, folds=5), "folds"),
    (lambda: leakage_score({"a": {"z_f": 90.0, "z_t": 10.0}}, {"a"}, {"a"}, {"a": 10.0}), "both"),
    (lambda: leakage_score({"a": {"z_f": 90.0}}, {"a"}, set(), {"a": 10.0}), r"matrix\['a'\].*z_t"),
    (lambda: leakage_score({"a": {"z_f": 90.0, "z_t": 10.0}}, {"a", "b"}, set(), {"a": 10.0}), "matrix.*'b'"),
    (lambda: leakage_score({"a": {"z_f": 90.0, "z_t": 10.0}}, {"a"}, set(), {}), "chance"),
    (lambda: leakage_score({"a": {"z_f": 90.0, "z_t": 110.0}}, {"a"}, set(), {"a": 10.0}), "percentage"),
    (lambda: leakage_score({}, set(), set(), {}), "no factors"),
    (lambda: fold_ids([], folds=2), "y: empty"),
])
def test_bad_input_is_a_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
