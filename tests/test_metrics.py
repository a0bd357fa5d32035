"""Known answers, independent cross-checks and input validation for metrics/."""
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from metrics._arrays import as_numpy, check_probs
from metrics.classification import accuracy, multi_label_accuracy
from metrics.generation import inception_score, inter_entropy, intra_entropy, label_kl
from metrics.verification import equal_error_rate, speaker_trials


def dirichlet(n, c, seed=0, alpha=0.5):
    return np.random.default_rng(seed).dirichlet(np.full(c, alpha), size=n)


def bf16_exact_probs(n, c, seed=0):
    """Rows of multiples of 1/16 summing exactly to 1: exactly representable in bfloat16."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.multinomial(16, q) for q in rng.dirichlet(np.ones(c), size=n)]) / 16.0


# --------------------------------------------------------------- generation: known answers
@pytest.mark.parametrize("c", [2, 6, 9, 10])
def test_uniform_probs(c):
    p = np.full((50, c), 1.0 / c)
    assert intra_entropy(p) == pytest.approx(math.log(c))
    assert inter_entropy(p) == pytest.approx(math.log(c))
    assert inception_score(p) == pytest.approx(1.0)


@pytest.mark.parametrize("c", [2, 6, 9, 10])
def test_one_hot_spread_evenly(c):
    p = np.eye(c)[np.arange(7 * c) % c]
    assert intra_entropy(p) == pytest.approx(0.0, abs=1e-12)
    assert inter_entropy(p) == pytest.approx(math.log(c))
    assert inception_score(p) == pytest.approx(float(c))


def test_one_hot_single_class_has_no_diversity():
    p = np.eye(4)[np.zeros(10, dtype=int)]
    assert inter_entropy(p) == pytest.approx(0.0, abs=1e-12)
    assert inception_score(p) == pytest.approx(1.0)


def test_return_types_are_python_floats():
    p = dirichlet(5, 3)
    for v in (intra_entropy(p), inter_entropy(p), inception_score(p), label_kl(p, p),
              accuracy(p, [0, 1, 2, 0, 1]), equal_error_rate([0.1, 0.9], [0, 1])):
        assert type(v) is float


def test_label_kl_identical_is_zero():
    p = dirichlet(100, 6)
    assert label_kl(p, p) == pytest.approx(0.0, abs=1e-12)
    one_hot = np.eye(6)[np.arange(12) % 6]
    assert label_kl(one_hot, one_hot) == pytest.approx(0.0, abs=1e-12)


def test_label_kl_hand_example():
    gen = np.array([[0.5, 0.5], [1.0, 0.0]])
    real = np.array([[0.25, 0.75], [0.5, 0.5]])
    # row 0: .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3); row 1: 1·ln(1/.5) + 0·log0 = ln 2
    assert label_kl(gen, real) == pytest.approx((0.5 * math.log(4 / 3) + math.log(2)) / 2)


def test_label_kl_real_zero_is_clipped_finite():
    v = label_kl([[0.5, 0.5]], [[1.0, 0.0]])
    assert math.isfinite(v)
    assert v == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-12)))


def test_entropy_ordering_concavity():
    p = dirichlet(200, 9, seed=3)
    assert inter_entropy(p) >= intra_entropy(p)
    assert inter_entropy(p) <= math.log(9) + 1e-12


# --------------------------------------------------------------- generation: independent checks
@pytest.mark.parametrize("seed,c", [(0, 2), (1, 6), (2, 9), (3, 10)])
def test_entropies_agree_with_scipy(seed, c):
    p = dirichlet(300, c, seed=seed)
    q = dirichlet(300, c, seed=seed + 100)
    assert intra_entropy(p) == pytest.approx(np.mean([scipy.stats.entropy(r) for r in p]), rel=1e-10)
    assert inter_entropy(p) == pytest.approx(scipy.stats.entropy(p.mean(axis=0)), rel=1e-10)
    ref_kl = np.mean([scipy.stats.entropy(a, b) for a, b in zip(p, q)])
    assert label_kl(p, q) == pytest.approx(ref_kl, rel=1e-10)


def _is_brute_force(p):
    n, c = p.shape
    pbar = [sum(p[i][k] for i in range(n)) / n for k in range(c)]
    total = 0.0
    for i in range(n):
        for k in range(c):
            if p[i][k] > 0:
                total += p[i][k] * math.log(p[i][k] / pbar[k])
    return math.exp(total / n)


@pytest.mark.parametrize("seed,c", [(0, 2), (1, 6), (2, 9), (3, 10)])
def test_inception_score_agrees_with_brute_force(seed, c):
    p = dirichlet(200, c, seed=seed, alpha=0.3)
    assert inception_score(p) == pytest.approx(_is_brute_force(p), rel=1e-10)
    p0 = bf16_exact_probs(200, c, seed=seed)  # contains exact zeros
    assert inception_score(p0) == pytest.approx(_is_brute_force(p0), rel=1e-10)


def test_inception_score_matches_entropy_identity():
    # mean_i KL(p_i || p̄) = H(y) − H(y|x) exactly
    p = dirichlet(100, 7, seed=9)
    assert math.log(inception_score(p)) == pytest.approx(inter_entropy(p) - intra_entropy(p), rel=1e-10)


# --------------------------------------------------------------- torch inputs
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_inputs_match_numpy(dtype):
    p = bf16_exact_probs(64, 8, seed=1)
    q = 0.5 * bf16_exact_probs(64, 8, seed=2) + 0.5 / 8  # multiples of 1/32, no zeros: exact in bf16
    tp, tq = torch.tensor(p, dtype=dtype), torch.tensor(q, dtype=dtype)
    np.testing.assert_array_equal(tp.float().numpy(), p)
    for f in (intra_entropy, inter_entropy, inception_score):
        assert f(tp) == pytest.approx(f(p), rel=1e-12)
    assert label_kl(tp, tq) == pytest.approx(label_kl(p, q), rel=1e-12)

    targets = np.arange(64) % 8
    assert accuracy(tp, torch.tensor(targets)) == accuracy(p, targets)
    scores = np.random.default_rng(0).normal(size=200)
    labels = np.random.default_rng(1).integers(0, 2, size=200)
    ts = torch.tensor(scores, dtype=dtype)
    assert equal_error_rate(ts, torch.tensor(labels, dtype=torch.bool)) == \
        pytest.approx(equal_error_rate(ts.float().numpy(), labels))
    e = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    s_t, l_t = speaker_trials(e, torch.tensor([0, 0, 1, 1, 2, 2]))
    s_n, l_n = speaker_trials(e.float().numpy(), [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(s_t, s_n, rtol=1e-6)
    np.testing.assert_array_equal(l_t, l_n)


def test_torch_tensor_requiring_grad_is_accepted():
    t = torch.full((4, 2), 0.5, requires_grad=True)
    assert intra_entropy(t) == pytest.approx(math.log(2))


def test_as_numpy_variants():
    assert as_numpy([[1, 2], [3, 4]], "x").dtype == np.float64
    assert as_numpy(torch.tensor([1.5], dtype=torch.bfloat16), "x").tolist() == [1.5]
    assert as_numpy(torch.tensor([True, False]), "x").tolist() == [1.0, 0.0]
    assert as_numpy(np.arange(3, dtype=np.int32), "x").dtype == np.float64
    with pytest.raises(ValueError, match="x: cannot convert"):
        as_numpy(["a", "b"], "x")


# --------------------------------------------------------------- classification
def test_accuracy_known_answer_logits_and_probs_agree():
    logits = np.array([[2.0, 1.0, -1.0], [0.1, 0.3, 0.2], [-5.0, -6.0, -4.0], [0.0, 3.0, 1.0]])
    targets = np.array([0, 1, 0, 2])
    probs = scipy.special.softmax(logits, axis=1)
    assert accuracy(logits, targets) == pytest.approx(0.5)
    assert accuracy(probs, targets) == accuracy(logits, targets)
    assert accuracy(torch.tensor(logits), torch.tensor(targets)) == pytest.approx(0.5)
    assert accuracy(np.eye(5), np.arange(5)) == 1.0
    assert accuracy(np.eye(5), (np.arange(5) + 1) % 5) == 0.0


def test_multi_label_accuracy_hand_example():
    # three heads over 4 rows; per-head hits: [T,T,F,T], [T,T,T,F], [T,F,T,T] -> all correct only row 0
    head_a = np.eye(3)[[0, 1, 2, 0]]
    head_b = np.eye(2)[[1, 0, 1, 1]]
    head_c = np.eye(4)[[3, 2, 1, 0]]
    targets = [np.array([0, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([3, 0, 1, 0])]
    assert multi_label_accuracy([head_a, head_b, head_c], targets) == pytest.approx(0.25)
    targets[2] = np.array([3, 2, 1, 0])  # head c now always right: rows 0, 1
    assert multi_label_accuracy([head_a, head_b, head_c], targets) == pytest.approx(0.5)
    targets[0] = np.array([0, 1, 2, 0])  # head a now always right: rows 0, 1, 2
    assert multi_label_accuracy([head_a, head_b, head_c], targets) == pytest.approx(0.75)
    # one head reduces to plain accuracy
    assert multi_label_accuracy([head_a], [targets[0]]) == accuracy(head_a, targets[0])


def test_multi_label_accuracy_exact_hand_value():
    # two digit slots (SMMNIST): rows 0 and 2 correct in both, row 1 slot 2 wrong, row 3 slot 1 wrong
    slot1 = np.eye(10)[[3, 7, 1, 4]]
    slot2 = np.eye(10)[[5, 8, 2, 9]]
    t1 = np.array([3, 7, 1, 0])
    t2 = np.array([5, 0, 2, 9])
    assert multi_label_accuracy([slot1, slot2], [t1, t2]) == pytest.approx(0.5)


# --------------------------------------------------------------- verification
def test_eer_perfect_separation_is_zero():
    assert equal_error_rate([0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1]) == 0.0
    assert equal_error_rate(np.r_[np.zeros(50), np.ones(50)], np.r_[np.zeros(50), np.ones(50)]) == 0.0


def test_eer_fully_reversed_is_one():
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0


def test_eer_random_scores_is_half():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=20000), rng.integers(0, 2, size=20000)
    assert equal_error_rate(scores, labels) == pytest.approx(0.5, abs=0.02)


def test_eer_hand_example():
    # sorted by score: T T N T N N. At threshold 0.7: FAR = 1/3, FRR = 1/3.
    assert equal_error_rate([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0, 1, 0, 0]) == pytest.approx(1 / 3)


def test_eer_crossing_on_a_collinear_roc_segment():
    # sorted by score: T N N N T T. Accept score >= 4: FAR = 2/3, FRR = 2/3. That ROC point lies on a
    # straight segment that roc_curve(drop_intermediate=True) would drop, giving 5/6 instead.
    assert equal_error_rate([6, 5, 4, 3, 2, 1], [1, 0, 0, 0, 1, 1]) == pytest.approx(2 / 3)


def _eer_brute_force(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    best = None
    for t in np.r_[np.unique(scores), np.inf]:
        far = np.mean(neg >= t)  # non-targets accepted
        frr = np.mean(pos < t)   # targets rejected
        if best is None or abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    return best[1]


@pytest.mark.parametrize("seed,n,shift", [(0, 300, 1.0), (1, 500, 0.3), (2, 201, 2.5), (3, 400, 0.0)])
def test_eer_agrees_with_brute_force_sweep(seed, n, shift):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    scores = rng.normal(size=n) + shift * labels
    if seed == 3:
        scores = np.round(scores, 1)  # heavy ties
    assert equal_error_rate(scores, labels) == pytest.approx(_eer_brute_force(scores, labels), abs=1.0 / n)


def test_speaker_trials_hand_example():
    e = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    scores, labels = speaker_trials(e, ["spk_a", "spk_b", "spk_a"])
    # pair order (0,1), (0,2), (1,2)
    np.testing.assert_allclose(scores, [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-12)
    np.testing.assert_array_equal(labels, [0, 1, 0])
    assert labels.dtype.kind == "i"


def test_speaker_trials_pair_count_and_eer_end_to_end():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    ids = np.repeat(np.arange(5), 8)
    e = centres[ids] + 0.1 * rng.normal(size=(40, 16))
    scores, labels = speaker_trials(e, ids)
    assert scores.shape == labels.shape == (40 * 39 // 2,)
    assert labels.sum() == 5 * (8 * 7 // 2)
    assert np.all(np.abs(scores) <= 1 + 1e-12)
    assert equal_error_rate(scores, labels) < 0.05
    shuffled = speaker_trials(rng.normal(size=(40, 16)), ids)
    assert equal_error_rate(*shuffled) > 0.3


# --------------------------------------------------------------- invalid inputs
@pytest.mark.parametrize("bad,match", [
    (np.array([0.5, 0.5]), "probs: expected a 2-D"),
    (np.zeros((0, 3)), "probs: empty"),
    (np.array([[0.5, np.nan]]), "probs: contains NaN"),
    (np.array([[0.5, np.inf]]), "probs: contains NaN or inf"),
    (np.array([[1.2, -0.2]]), "probs: row 0 has negative entries"),
    (np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.3, 0.4]]), r"probs: row 3 sums to 0.7, expected 1 \(pass probabilities, not logits\)"),
    (np.array([[2.0, 1.0]]), "not logits"),
])
def test_invalid_probs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        check_probs(bad, "probs")
    for f in (intra_entropy, inter_entropy, inception_score):
        with pytest.raises(ValueError, match=match):
            f(bad)


def test_check_probs_tolerance():
    p = np.array([[0.5, 0.5005]])
    assert check_probs(p, "p").shape == (1, 2)
    with pytest.raises(ValueError, match="p: row 0 sums to 1.002"):
        check_probs(np.array([[0.5, 0.502]]), "p")


def test_label_kl_invalid():
    with pytest.raises(ValueError, match="shapes .* differ"):
        label_kl(dirichlet(4, 3), dirichlet(5, 3))
    with pytest.raises(ValueError, match="shapes .* differ"):
        label_kl(dirichlet(4, 3), dirichlet(4, 2))
    with pytest.raises(ValueError, match="gen_probs: row 0 sums"):
        label_kl([[0.2, 0.2]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="real_probs: contains NaN"):
        label_kl([[0.5, 0.5]], [[np.nan, 0.5]])


@pytest.mark.parametrize("scores,targets,match", [
    (np.eye(3), [0, 1], "targets: shape .* lengths must match"),
    (np.eye(3)[0], [0], "ndim >= 2"),
    (np.zeros((0, 3)), np.zeros(0), "empty"),
    (np.array([[np.nan, 1.0]]), [0], "probs_or_logits: contains NaN"),
    (np.eye(2), [0.0, np.nan], "targets: contains NaN"),
    (np.eye(2), [0.5, 1.0], "targets: non-integer"),
    (np.eye(2), [0, 2], r"targets: class labels out of range \[0, 2\)"),
    (np.eye(2), [-1, 0], "out of range"),
])
def test_accuracy_invalid(scores, targets, match):
    with pytest.raises(ValueError, match=match):
        accuracy(scores, targets)


def test_multi_label_accuracy_invalid():
    with pytest.raises(ValueError, match="lengths must match"):
        multi_label_accuracy([np.eye(2), np.eye(2)], [[0, 1]])
    with pytest.raises(ValueError, match="empty"):
        multi_label_accuracy([], [])
    with pytest.raises(ValueError, match="different numbers of rows"):
        multi_label_accuracy([np.eye(2), np.eye(3)], [[0, 1], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"list_of_targets\[1\]: non-integer"):
        multi_label_accuracy([np.eye(2), np.eye(2)], [[0, 1], [0.5, 1]])


@pytest.mark.parametrize("scores,labels,match", [
    ([0.1, 0.2, 0.3], [1, 1, 1], "labels: only one class present; EER needs target and non-target trials"),
    ([0.1, 0.2], [0, 0], "only one class present"),
    ([0.1, 0.2, 0.3], [0, 1, 2], "labels: must be binary"),
    ([0.1, np.nan], [0, 1], "scores: contains NaN"),
    ([0.1, np.inf], [0, 1], "scores: contains NaN or inf"),
    ([0.1, 0.2, 0.3], [0, 1], "lengths must match"),
    ([], [], "scores: empty"),
    ([[0.1, 0.2]], [[0, 1]], "expected 1-D"),
])
def test_eer_invalid(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        equal_error_rate(scores, labels)


def test_eer_accepts_bool_labels():
    assert equal_error_rate([0.1, 0.9], np.array([False, True])) == 0.0


@pytest.mark.parametrize("emb,ids,match", [
    (np.ones(4), [0, 1, 0, 1], "embeddings: expected a 2-D"),
    (np.ones((1, 3)), [0], "at least 2 rows"),
    (np.ones((3, 2)), [0, 1], "speaker_ids: .* lengths must match"),
    (np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), [0, 1, 0], r"embeddings: zero-norm rows \[1\]"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), [0, 1], "embeddings: contains NaN"),
])
def test_speaker_trials_invalid(emb, ids, match):
    with pytest.raises(ValueError, match=match):
        speaker_trials(emb, ids)


# --------------------------------------------------------------- package hygiene
def test_metrics_do_not_import_harness_modules():
    code = ("import sys, metrics, metrics.classification, metrics.generation, metrics.verification; "
            "bad = [m for m in ('benchmark', 'mlflow', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__('pathlib').Path(__file__).parents[1]))
