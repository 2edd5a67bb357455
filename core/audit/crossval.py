"""Out-of-sample class probabilities for every photo: k-fold cross-validation of a linear
head on frozen pooled features (cleanlab's recipe, in torch and NumPy: no scikit-learn).

A photo's label is judged by a head that never saw it, so a bee filed under ants is
predicted from the other photos alone and gets little probability for "ants".  The
head is a multinomial logistic regression on standardised features, fitted by
full-batch L-BFGS from zero (deterministic), as ``core/inside/separability.py`` fits its
probe; that one returns an accuracy only, and its penalty (0.01) is chosen for clean
labels.  Here the penalty is much stronger, ``L2``: a head that can fit every training
label fits the flipped ones too, and then stops flagging them.

Calibration of ``L2`` (MobileNetV2, ImageNet, centre crops; 10% of the training labels
flipped at random, 5 seeds; recall of the flipped photos among the 2x-their-number
lowest self-confidences):

=============  ======  ======  ======  ======  ======  ======  ======
penalty        0.01    0.1     1       3       10      30      100
ants/bees      0.89    0.91    0.975   1.00    1.00    1.00    0.99
Fashion-MNIST  0.85    0.88    0.90    0.92    0.93    0.88    0.79
=============  ======  ======  ======  ======  ======  ======  ======

3 sits on the plateau of both; the folds are stratified and seeded.
"""
from __future__ import annotations

import numpy as np
import torch

L2 = 3.0
FOLDS = 5
MAX_ITER = 200


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


class LinearHead:
    """A fitted logistic regression: standardisation and weights, in float64."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, classes: int, l2: float = L2):
        self.mean, std = x.mean(0), x.std(0)
        self.std = np.where(std > 0, std, 1.0)  # a constant feature (a dead channel) stays 0
        z = (x - self.mean) / self.std
        onehot = np.eye(classes)[labels]
        d = z.shape[1]
        params = torch.zeros(d * classes + classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([params], lr=1, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            # NumPy einsum, single-threaded: torch's thread pools wait for a core at every
            # small product when other jobs hold the 2 cores (separability.py measured it).
            flat = params.detach().numpy()
            w, b = flat[:-classes].reshape(d, classes), flat[-classes:]
            p = _softmax(np.einsum("nd,dc->nc", z, w) + b)
            loss = -np.log(np.maximum((p * onehot).sum(1), 1e-300)).mean() + 0.5 * l2 * (w * w).sum()
            g = (p - onehot) / len(z)
            params.grad = torch.from_numpy(np.concatenate([(np.einsum("nd,nc->dc", z, g) + l2 * w).ravel(), g.sum(0)]))
            return torch.tensor(loss)
        opt.step(closure)
        flat = params.detach().numpy()
        self.w, self.b = flat[:-classes].reshape(d, classes), flat[-classes:]

    def proba(self, x: np.ndarray) -> np.ndarray:
        return _softmax(np.einsum("nd,dc->nc", (x - self.mean) / self.std, self.w) + self.b)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each photo: per class, a seeded shuffle dealt round-robin, so every fold
    holds each class in proportion (a fold without a class would never predict it)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        out[idx] = np.arange(len(idx)) % folds
    return out


def out_of_fold(train: torch.Tensor, labels: torch.Tensor, classes: int, seed: int = 0, folds: int = FOLDS,
                l2: float = L2, extra: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(n x classes probabilities of the training photos, each from the head fitted on the
    other folds; those of ``extra`` photos from a head fitted on all training photos, which
    never saw them either: the validation split).  With fewer photos than folds in some
    class, the folds shrink to what that class allows (at least 2)."""
    x, y = train.double().numpy(), labels.numpy().astype(np.int64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"cross-validation needs at least 2 labelled training photos (got {len(x)})")
    smallest = int(np.bincount(y, minlength=classes)[np.unique(y)].min())
    folds = max(2, min(folds, smallest))
    fold = stratified_folds(y, folds, seed)
    probs = np.zeros((len(x), classes))
    for k in range(folds):
        held = fold == k
        if held.all() or not held.any():
            continue
        probs[held] = LinearHead(x[~held], y[~held], classes, l2).proba(x[held])
    if extra is None or len(extra) == 0:
        return probs, None
    return probs, LinearHead(x, y, classes, l2).proba(extra.double().numpy())
