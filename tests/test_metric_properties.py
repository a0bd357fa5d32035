"""Property-based tests (hypothesis) of every public metric function: any valid input gives a number in its
range, and a bad one — NaN/inf, empty, wrong shape, labels out of range — a ValueError naming the argument."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metrics.classification import accuracy, multi_label_accuracy
from metrics.generation import inception_score, inter_entropy, intra_entropy, label_kl
from metrics.verification import equal_error_rate, speaker_trials

FAST = settings(max_examples=60, deadline=None)
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@st.composite
def probs(draw, n=None, c=None):
    n = n or draw(st.integers(1, 30))
    c = c or draw(st.integers(2, 12))
    logits = draw(arrays(np.float64, (n, c), elements=finite))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@st.composite
def scored(draw):
    p = draw(probs())
    t = draw(arrays(np.int64, p.shape[0], elements=st.integers(0, p.shape[1] - 1)))
    return p, t


def _poison(a, draw_value):
    a = a.copy()
    a.flat[0] = draw_value
    return a


@FAST
@given(scored())
def test_accuracy_is_the_hit_rate(pt):
    p, t = pt
    acc = accuracy(p, t)
    assert 0.0 <= acc <= 1.0 and math.isclose(acc, float(np.mean(p.argmax(1) == t)))
    assert multi_label_accuracy([p, p], [t, t]) == pytest.approx(acc)


@FAST
@given(scored(), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_accuracy_rejects_non_finite_scores(pt, bad):
    p, t = pt
    with pytest.raises(ValueError, match="probs_or_logits"):
        accuracy(_poison(p, bad), t)


@FAST
@given(scored(), st.integers(1, 5))
def test_accuracy_rejects_labels_out_of_range(pt, beyond):
    p, t = pt
    t = t.copy()
    t[0] = p.shape[1] - 1 + beyond
    with pytest.raises(ValueError, match="targets: class labels out of range"):
        accuracy(p, t)
    with pytest.raises(ValueError, match="targets"):
        accuracy(p, t[:-1] if len(t) > 1 else np.zeros(2))


def test_accuracy_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.zeros((0, 3)), np.zeros(0))


@FAST
@given(probs())
def test_generation_scores_are_in_range(p):
    c = p.shape[1]
    h_yx, h_y, is_ = intra_entropy(p), inter_entropy(p), inception_score(p)
    assert -1e-9 <= h_yx <= math.log(c) + 1e-9 and -1e-9 <= h_y <= math.log(c) + 1e-9
    assert 1.0 - 1e-6 <= is_ <= c + 1e-6
    assert label_kl(p, p) == pytest.approx(0.0, abs=1e-6)


@FAST
@given(probs(), st.sampled_from([np.nan, np.inf, -1.0]))
def test_generation_scores_reject_bad_probabilities(p, bad):
    q = _poison(p, bad)
    for fn in (intra_entropy, inter_entropy, inception_score):
        with pytest.raises(ValueError, match="probs"):
            fn(q)
    with pytest.raises(ValueError, match="gen_probs"):
        label_kl(q, p)
    with pytest.raises(ValueError, match="real_probs"):
        label_kl(p, q)


def test_generation_scores_reject_logits_empty_and_wrong_shape():
    with pytest.raises(ValueError, match="probs: row 0 sums to"):
        intra_entropy(np.array([[2.0, 3.0]]))
    with pytest.raises(ValueError, match="probs: empty"):
        inception_score(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="probs: expected a 2-D"):
        inter_entropy(np.ones(4) / 4)


@st.composite
def trials(draw):
    n = draw(st.integers(2, 60))
    s = draw(arrays(np.float64, n, elements=finite))
    y = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    y[0], y[1] = 0, 1  # both classes present
    return s, y


@FAST
@given(trials())
def test_eer_is_a_rate_and_flips_with_the_scores(sy):
    s, y = sy
    eer = equal_error_rate(s, y)
    assert 0.0 <= eer <= 1.0
    if len(np.unique(s)) == len(s):  # no ties: perfect separation both ways is 0, a sign flip mirrors it
        assert equal_error_rate(np.where(y == 1, 1.0, -1.0), y) == 0.0


@FAST
@given(trials(), st.sampled_from([np.nan, np.inf]))
def test_eer_rejects_bad_trials(sy, bad):
    s, y = sy
    with pytest.raises(ValueError, match="scores: contains NaN or inf"):
        equal_error_rate(_poison(s, bad), y)
    with pytest.raises(ValueError, match="labels: must be binary"):
        equal_error_rate(s, _poison(y, 2))
    with pytest.raises(ValueError, match="lengths differ"):
        equal_error_rate(s, y[:-1])
    with pytest.raises(ValueError, match="labels: only one class"):
        equal_error_rate(s, np.zeros_like(y))


@FAST
@given(st.integers(2, 12), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_speaker_trials_are_all_unordered_pairs(n, d, seed):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, d)) + 0.1
    ids = rng.integers(0, 3, n)
    scores, labels = speaker_trials(e, ids)
    assert len(scores) == len(labels) == n * (n - 1) // 2
    assert np.all(np.abs(scores) <= 1 + 1e-9)
    with pytest.raises(ValueError, match="speaker_ids"):
        speaker_trials(e, ids[:-1])
    with pytest.raises(ValueError, match="embeddings: zero-norm"):
        speaker_trials(np.vstack([np.zeros(d), e]), np.r_[0, ids])
