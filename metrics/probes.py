"""Probes: how well each ground-truth factor can be read from z_f and from z_{1:T}.

A probe is a classifier trained on frozen latents (posterior means). A disentangled model puts each
static factor (identity, attributes, digits) in z_f only and each dynamic one (action, expression) in
z_{1:T} only, so the factor × latent accuracy matrix should be high on the "right" latent and at
chance on the "wrong" one. Scores are k-fold cross-validated on the evaluated sequences alone (no
second split needed), deterministic for a seed, and cheap on CPU: full-batch training on a few
hundred to a few thousand sequences, in float64.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ._arrays import as_numpy, check_finite

STATIC_LATENT, DYNAMIC_LATENT = "z_f", "z_t"  # the latent names probe_report uses and the scores read
KINDS = ("linear", "mlp")


# ------------------------------------------------------------------------------ validation

def _latent(z, name: str) -> np.ndarray:
    """Finite float64 [N, D] from latents [N, d] or [N, T, d] (flattened over time)."""
    a = as_numpy(z, name)
    if a.ndim < 2:
        raise ValueError(f"{name}: expected latents [N, d] or [N, T, d], got shape {a.shape}")
    if a.shape[0] == 0 or a[0].size == 0:
        raise ValueError(f"{name}: empty latents (shape {a.shape})")
    check_finite(a, name)
    return a.reshape(a.shape[0], -1)


def _labels(y, name: str, n: int, n_classes: int | None = None) -> np.ndarray:
    """int64 [n] class labels in [0, n_classes)."""
    a = as_numpy(y, name)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected 1-D class labels [N], got shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"{name}: {len(a)} labels for {n} latents; lengths must match")
    if len(a) == 0:
        raise ValueError(f"{name}: empty, no labels")
    check_finite(a, name)
    if np.any(a != np.round(a)):
        raise ValueError(f"{name}: non-integer class labels")
    if a.min() < 0 or (n_classes is not None and a.max() >= n_classes):
        raise ValueError(f"{name}: class labels out of range [0, {n_classes if n_classes is not None else 'inf'}) "
                         f"(min {int(a.min())}, max {int(a.max())})")
    return a.astype(np.int64)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {KINDS}")


# ------------------------------------------------------------------------------ one probe

def _standardize(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets scaled by the training set's per-feature mean and std, so that one L2 weight suits
    latents of any scale; a constant feature is left at 0."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def _fit_linear(x, y, n_classes: int, l2: float, steps: int):
    """Multinomial logistic regression by full-batch L-BFGS from zero weights (no randomness at all)."""
    w = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: z @ w + b


def _fit_mlp(x, y, n_classes: int, l2: float, steps: int, seed: int, hidden: int = 64):
    """One ReLU hidden layer, full-batch Adam for a fixed number of steps, initialised from `seed`."""
    g = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    params = [(torch.randn(d, hidden, generator=g, dtype=x.dtype) * (2.0 / d) ** 0.5).requires_grad_(),
              torch.zeros(hidden, dtype=x.dtype, requires_grad=True),
              (torch.randn(hidden, n_classes, generator=g, dtype=x.dtype) * (1.0 / hidden) ** 0.5).requires_grad_(),
              torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)]
    w1, b1, w2, b2 = params
    net = lambda z: torch.relu(z @ w1 + b1) @ w2 + b2  # noqa: E731
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y) + l2 * (w1.pow(2).sum() + w2.pow(2).sum())
        loss.backward()
        opt.step()
    return net


def _probe_hits(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                n_classes: int, kind: str, l2: float, steps: int | None, seed: int) -> int:
    """Number of test rows the probe trained on (x_train, y_train) gets right (inputs already validated)."""
    # fresh tensors from numpy: they are ordinary autograd leaves even when the caller is in inference
    # mode (the harness evaluates under torch.inference_mode), and float64 keeps the fit reproducible
    with torch.inference_mode(False), torch.enable_grad():
        xtr, xte = _standardize(torch.from_numpy(x_train), torch.from_numpy(x_test))
        ytr = torch.from_numpy(y_train)
        if kind == "linear":
            if xtr.shape[1] > xtr.shape[0]:
                # more features than rows (flattened z_{1:T}): the penalised optimum's weights lie in the span
                # of the training rows, so fitting in that basis is the same problem, with <= N features
                basis = torch.linalg.svd(xtr, full_matrices=False)[2].T
                xtr, xte = xtr @ basis, xte @ basis
            predict = _fit_linear(xtr, ytr, n_classes, l2, steps or 100)
        else:
            predict = _fit_mlp(xtr, ytr, n_classes, l2, steps or 300, seed)
        with torch.no_grad():
            return int((predict(xte).argmax(-1) == torch.from_numpy(y_test)).sum())


def probe_accuracy(z_train, y_train, z_test, y_test, kind: str = "linear", n_classes: int | None = None,
                   l2: float = 1e-3, steps: int | None = None, seed: int = 0) -> float:
    """Test accuracy (%) of a probe trained to read labels y from latents z.

    z_*: [N, d] or [N, T, d] (flattened to [N, T*d]); y_*: int class labels [N] in [0, n_classes)
    (default: the largest label seen + 1). Features are standardised on the training set.
    kind "linear": multinomial logistic regression, full-batch L-BFGS (`steps` iterations, default 100)
    from zero weights; "mlp": one hidden layer of 64 ReLUs, full-batch Adam (`steps`, default 300) from
    weights drawn with `seed`. `l2`: penalty on the weights (not the biases) added to the mean
    cross-entropy."""
    _check_kind(kind)
    xtr, xte = _latent(z_train, "z_train"), _latent(z_test, "z_test")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"z_test: {xte.shape[1]} features per row, z_train has {xtr.shape[1]}; shapes must match")
    ytr, yte = _labels(y_train, "y_train", len(xtr), n_classes), _labels(y_test, "y_test", len(xte), n_classes)
    n_classes = n_classes if n_classes is not None else int(max(ytr.max(), yte.max())) + 1
    return 100.0 * _probe_hits(xtr, ytr, xte, yte, n_classes, kind, l2, steps, seed) / len(xte)


# ------------------------------------------------------------------------------ cross-validation

def fold_ids(y, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Fold index [N] of every row, stratified by label: each class's rows, in a seeded random order, are
    dealt to the folds in turn (carrying on from class to class), so every fold holds about 1/folds of each
    class and the folds differ in size by at most one."""
    y = _labels(y, "y", len(as_numpy(y, "y")))
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds={folds!r}: expected an integer >= 2")
    if len(y) < folds:
        raise ValueError(f"folds={folds}: more folds than the {len(y)} sequences")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    ids = np.empty(len(y), np.int64)
    ids[order] = np.arange(len(y)) % folds
    return ids


def _factors(factors: dict, n: int, n_classes: dict | None) -> dict[str, np.ndarray]:
    if not factors:
        raise ValueError("factors: empty, need at least one label family")
    n_classes = n_classes or {}
    return {f: _labels(y, f"factors[{f!r}]", n, n_classes.get(f)) for f, y in factors.items()}


def probe_matrix(latents: dict, factors: dict, folds: int = 2, seed: int = 0, kind: str = "linear",
                 n_classes: dict | None = None, l2: float = 1e-3,
                 steps: int | None = None) -> dict[str, dict[str, float]]:
    """{factor: {latent: accuracy %}}: k-fold cross-validated probe accuracy of every factor from every latent.

    latents: name -> [N, d] or [N, T, d]; factors: name -> int labels [N] (the same N sequences).
    A [N, T, d] latent (z_{1:T}) is flattened to [N, T*d], so the probe sees every frame's code, not a
    time average: a conservative measure of what z_{1:T} reveals about a static factor (leakage is
    found if any frame, or a pattern across frames, carries it).
    Folds are stratified by the factor (`fold_ids`, seeded); each fold is scored by a probe fitted on the
    others, and the accuracy pools every held-out prediction. `n_classes`: factor -> number of classes
    (checked against the labels; default the largest label + 1). Other arguments: `probe_accuracy`."""
    _check_kind(kind)
    if not latents:
        raise ValueError("latents: empty, need at least one latent")
    xs = {name: _latent(z, f"latents[{name!r}]") for name, z in latents.items()}
    sizes = {name: len(x) for name, x in xs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"latents: different numbers of sequences {sizes}; lengths must match")
    n = next(iter(sizes.values()))
    ys = _factors(factors, n, n_classes)
    out = {}
    for f, y in ys.items():
        c = (n_classes or {}).get(f) or int(y.max()) + 1
        ids = fold_ids(y, folds, seed)
        out[f] = {}
        for name, x in xs.items():
            hits = sum(_probe_hits(x[ids != k], y[ids != k], x[ids == k], y[ids == k], c, kind, l2, steps, seed + k)
                       for k in range(folds))
            out[f][name] = 100.0 * hits / n
    return out


def majority_accuracy(factors: dict, folds: int = 2, seed: int = 0) -> dict[str, float]:
    """{factor: accuracy %} of always answering the training folds' most frequent class, on the folds of
    `probe_matrix`: the chance level of a probe that learns only the label frequencies. It is above
    100 / n_classes where labels are skewed (SMMNIST's digit1 is the smaller digit of a sorted pair: 0 is
    its most frequent value, ~19 %), which 100 / n_classes would count as leakage."""
    if not factors:
        raise ValueError("factors: empty, need at least one label family")
    n = len(as_numpy(next(iter(factors.values())), "factors"))
    out = {}
    for f, y in _factors(factors, n, None).items():
        ids = fold_ids(y, folds, seed)
        hits = sum(int((y[ids == k] == np.bincount(y[ids != k]).argmax()).sum()) for k in range(folds))
        out[f] = 100.0 * hits / n
    return out


# ------------------------------------------------------------------------------ summary scores

def _normalised(matrix: dict, static: set, dynamic: set, chance: dict, wrong: bool) -> float:
    static, dynamic = set(static), set(dynamic)
    if static & dynamic:
        raise ValueError(f"static/dynamic: families {sorted(static & dynamic)} are in both")
    if not static | dynamic:
        raise ValueError("static/dynamic: no factors given")
    scores = []
    for f in sorted(static | dynamic):
        if f not in matrix:
            raise ValueError(f"matrix: no row for factor {f!r} (rows: {sorted(matrix)})")
        if f not in chance:
            raise ValueError(f"chance: no chance level for factor {f!r}")
        latent = (DYNAMIC_LATENT if f in static else STATIC_LATENT) if wrong else \
                 (STATIC_LATENT if f in static else DYNAMIC_LATENT)
        if latent not in matrix[f]:
            raise ValueError(f"matrix[{f!r}]: no accuracy from latent {latent!r} (has {sorted(matrix[f])})")
        acc, c = float(matrix[f][latent]), float(chance[f])
        if not (np.isfinite(acc) and 0.0 <= acc <= 100.0):
            raise ValueError(f"matrix[{f!r}][{latent!r}]: accuracy {acc} is not a percentage in [0, 100]")
        if not (np.isfinite(c) and 0.0 <= c <= 100.0):
            raise ValueError(f"chance[{f!r}]: {c} is not a percentage in [0, 100]")
        if c == 100.0:  # one class in the evaluated sequences: nothing to read, the factor says nothing
            continue
        scores.append(max(0.0, (acc - c) / (100.0 - c)))
    return float(np.mean(scores)) if scores else float("nan")


def leakage_score(matrix: dict, static: set, dynamic: set, chance: dict) -> float:
    """Leakage in [0, 1]: the mean over factors of the wrong latent's chance-normalised probe accuracy,
    max(0, (acc - chance) / (100 - chance)), the wrong latent being z_t for a static factor and z_f for a
    dynamic one. 0: no factor is readable above chance from the latent that should not hold it; 1: every
    factor is read perfectly from it. `matrix`: `probe_matrix` with latents named "z_f" and "z_t";
    `chance`: factor -> chance accuracy % (`majority_accuracy`, or 100 / n_classes for balanced labels); a
    factor at chance 100 (a single class present) is left out, and NaN returned if no factor is left."""
    return _normalised(matrix, static, dynamic, chance, wrong=True)


def purity_score(matrix: dict, static: set, dynamic: set, chance: dict) -> float:
    """The counterpart of `leakage_score` on the right latent (z_f for static factors, z_t for dynamic
    ones), in [0, 1]: 1 when every factor is read perfectly from where it belongs."""
    return _normalised(matrix, static, dynamic, chance, wrong=False)


def probe_report(posteriors: list, batches: list[dict], static_labels: dict, dynamic_labels: dict,
                 folds: int = 2, seed: int = 0, kind: str = "linear") -> dict[str, float]:
    """Probe metrics of an evaluation: `probe_<factor>_z_f` and `probe_<factor>_z_t` (accuracy %),
    `probe_leakage` (`leakage_score`) and `probe_purity` (`purity_score`), chance = `majority_accuracy`.

    posteriors: per batch, objects with `zf_mean` [B, d_zf] and `zt_mean` [B, T, d_zt] (`models.base.Latents`);
    batches: the matching dicts with `static` [B, S] and `dynamic` [B, D] label columns in the order of
    `static_labels` / `dynamic_labels` (family -> number of classes, a dataset's info)."""
    if len(posteriors) != len(batches):
        raise ValueError(f"posteriors: {len(posteriors)} batches of latents for {len(batches)} batches of labels; "
                         "lengths must match")
    latents = {STATIC_LATENT: torch.cat([p.zf_mean.detach().float().cpu() for p in posteriors]),
               DYNAMIC_LATENT: torch.cat([p.zt_mean.detach().float().cpu() for p in posteriors])}
    factors = {}
    for key, families in (("static", static_labels), ("dynamic", dynamic_labels)):
        for i, f in enumerate(families):
            factors[f] = torch.cat([b[key][:, i].cpu() for b in batches])
    n_classes = {**static_labels, **dynamic_labels}
    matrix = probe_matrix(latents, factors, folds, seed, kind, n_classes)
    chance = majority_accuracy(factors, folds, seed)
    out = {f"probe_{f}_{z}": acc for f, row in matrix.items() for z, acc in row.items()}
    out["probe_leakage"] = leakage_score(matrix, set(static_labels), set(dynamic_labels), chance)
    out["probe_purity"] = purity_score(matrix, set(static_labels), set(dynamic_labels), chance)
    return out
