"""How separable the classes are in a body's feature space, before any head is trained.

Two numbers and a picture, all in torch (no scikit-learn for three small algorithms):

* **k-NN accuracy**: each validation image takes the majority class of its k nearest
  training images by cosine similarity.  Cosine, because pooled ReLU features differ in
  scale from photo to photo (exposure, object size) more than in direction; k = 5, odd so
  two classes never tie, and small beside a class's size (tens to hundreds of photos) so
  it measures neighbourhoods, not class frequencies.  Ties among more classes go to the
  class whose neighbours are closer.  It needs no training at all: it is the feature
  space's own answer.
* **Linear-probe accuracy**: a multinomial logistic regression on the standardised
  training features (L-BFGS to convergence, L2 penalty ``PROBE_L2`` on the weights), scored on
  validation.  It is what a frozen run's linear head can reach at best, found without
  epochs, learning rates or augmentation.  The penalty keeps the weights finite when the
  classes are linearly separable (1280 features, a few hundred photos: they usually are).
* **PCA map**: the two directions of largest variance of all points, train and val.
  Linear and deterministic, so a straight boundary on the map is one a linear head could
  draw, and the same features give the same map in every session.  t-SNE and UMAP were
  left out on purpose: they would need scikit-learn or umap-learn (with numba) for one
  picture, take longer than the 10 s budget on 2 cores for a few hundred points with
  their usual settings, and their clusters can appear in random features too
  (perplexity artefacts), which is exactly the comparison this page makes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

K = 5
PROBE_L2 = 1e-2          # on standardised features; chosen on ants/bees and Fashion-MNIST, see probe_accuracy
PROBE_MAX_ITER = 200


def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
                 k: int = K) -> float:
    """Share of validation images whose k nearest training images (cosine) vote their class."""
    _check(train, train_labels, val, val_labels)
    k = min(k, len(train))
    sims = torch.from_numpy(F.normalize(val.double(), dim=1).numpy() @ F.normalize(train.double(), dim=1).numpy().T)
    top, idx = sims.topk(k, dim=1)
    classes = int(max(train_labels.max(), val_labels.max())) + 1
    # One vote per neighbour, plus a thousandth of its similarity: breaks ties, never a majority.
    votes = torch.zeros(len(val), classes, dtype=torch.float64)
    votes.scatter_add_(1, train_labels[idx], 1.0 + 1e-3 * top)
    return float((votes.argmax(1) == val_labels).double().mean())


def probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
                   l2: float = PROBE_L2) -> float:
    """Validation accuracy of a logistic regression fitted on the training features.

    Standardised with the training mean and spread (so one penalty suits every
    architecture's feature scale); deterministic (zero start, full-batch L-BFGS, ``_lbfgs``).  On
    ants/bees, MobileNetV2 (ImageNet), the accuracy changes by under a point for penalties
    from 1e-3 to 1e-1; 1e-2 sits in the middle."""
    _check(train, train_labels, val, val_labels)
    mean, std = train.double().mean(0), train.double().std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # scale-free: a random body's features are ~1e-9
    z, zv = ((train.double() - mean) / std).numpy(), ((val.double() - mean) / std).numpy()
    classes = int(max(train_labels.max(), val_labels.max())) + 1
    onehot = np.eye(classes)[train_labels.numpy()]
    zt = np.ascontiguousarray(z.T)
    d = z.shape[1]

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = flat[:-classes].reshape(d, classes), flat[-classes:]
        logits = _times(z, w) + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        loss = -np.log(np.maximum((p * onehot).sum(1), 1e-300)).mean() + 0.5 * l2 * float((w * w).sum())
        g = (p - onehot) / len(z)
        return loss, np.concatenate([(_times(zt, g) + l2 * w).ravel(), g.sum(0)])
    flat = _lbfgs(loss_and_grad, np.zeros(d * classes + classes))
    w, b = flat[:-classes].reshape(d, classes), flat[-classes:]
    return float(((_times(zv, w) + b).argmax(1) == val_labels.numpy()).mean())


def _lbfgs(fg, x: np.ndarray, max_iter: int = PROBE_MAX_ITER, memory: int = 10, gtol: float = 1e-6) -> np.ndarray:
    """Minimise a smooth convex ``fg(x) -> (f, gradient)`` by L-BFGS with a backtracking
    (Armijo) line search, all in NumPy.

    Not torch.optim.LBFGS: its thousands of small vector products are torch (BLAS) calls
    spread over the thread pool, and with other jobs on the 2 cores each one waited for a
    core (6 s for a 5-class probe, 0.3 s here); the loss and gradient are one matrix-vector
    product per class for the same reason.  The problem is strictly convex (the L2 term),
    so any convergent method reaches the same optimum and the same predictions."""
    f, g = fg(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(max_iter):
        if np.abs(g).max() < gtol:
            break
        q, alphas = g.copy(), []
        for s, y, rho in reversed(steps):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        if steps:
            s, y, _ = steps[-1]
            q *= float(s @ y) / float(y @ y)
        else:
            q /= max(np.abs(g).sum(), 1.0)  # a cautious first step, as torch's L-BFGS takes
        for (s, y, rho), a in zip(steps, reversed(alphas)):
            q += s * (a - rho * float(y @ q))
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not downhill (never for a convex problem, but cheap to guard): steepest descent
            direction, slope = -g, -float(g @ g)
        t = 1.0
        while True:
            f_new, g_new = fg(x + t * direction)
            if f_new <= f + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = t * direction, g_new - g
        if float(y @ s) > 1e-12:
            steps = (steps + [(s, y, 1.0 / float(y @ s))])[-memory:]
        done = abs(f - f_new) <= 1e-12 * max(1.0, abs(f))
        x, f, g = x + s, f_new, g_new
        if done:
            break
    return x


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for a ``b`` of a few columns, column by column: a few hundred small matrix
    products cost 4-10 s instead of 0.2 when other jobs held the 2 cores (BLAS spreads each
    over its threads, and each thread waits for a core); matrix-vector products do not."""
    return np.stack([a @ np.ascontiguousarray(b[:, c]) for c in range(b.shape[1])], 1)


def _top_axes(x: np.ndarray, k: int = 2, oversample: int = 10, iters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(d x k axes, k variances) of centred ``x``, largest first: randomized subspace
    iteration (Halko et al. 2011) with a fixed seed, so the same points give the same map.

    Only matrix products and QRs of n x (k + oversample) matrices, in NumPy: a full SVD or
    ``eigh`` of 400 x 1280 took 3-14 s in torch and numpy alike on the 2-core machine while
    other jobs held the cores (multi-threaded LAPACK waits for a core at every step);
    this takes a few hundredths of a second, and agrees with the exact axes to 1e-6 here."""
    n, d = x.shape
    r = max(1, min(k + oversample, n, d))
    xt = np.ascontiguousarray(x.T)
    q = np.linalg.qr(_times(x, np.random.default_rng(0).standard_normal((d, r))))[0]
    for _ in range(iters):
        q = np.linalg.qr(_times(xt, q))[0]
        q = np.linalg.qr(_times(x, q))[0]
    _, s, vt = np.linalg.svd(_times(xt, q).T, full_matrices=False)
    return vt[:k].T, s[:k] ** 2


def pca_2d(points: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(n x 2 coordinates, share of the variance each axis explains).  Signs are fixed
    (the largest loading of each axis is positive) so a map does not flip between runs."""
    if len(points) < 2:
        raise ValueError(f"a map needs at least 2 images, got {len(points)}")
    x = points.double().numpy()
    x = x - x.mean(0)
    axes, var = _top_axes(x, 2)
    total = float((x * x).sum())
    share = [float(v / total) if total > 0 else 0.0 for v in var]
    axes = axes * np.sign(axes[np.abs(axes).argmax(0), range(axes.shape[1])])
    coords = x @ axes
    if coords.shape[1] < 2:  # all points on a line (or one point repeated)
        coords = np.concatenate([coords, np.zeros((len(x), 2 - coords.shape[1]))], 1)
        share += [0.0] * (2 - len(share))
    return torch.from_numpy(coords).float(), share


def measure(feats, k: int = K) -> dict:
    """k-NN and linear-probe accuracy, and the PCA map of train and val together
    (``features.Features``); the map's rows are train first, then val."""
    import time
    t0 = time.perf_counter()
    knn = knn_accuracy(feats.train, feats.train_labels, feats.val, feats.val_labels, k)
    probe = probe_accuracy(feats.train, feats.train_labels, feats.val, feats.val_labels)
    coords, share = pca_2d(torch.cat([feats.train, feats.val]))
    return {"knn_acc": knn, "linear_probe_acc": probe, "k": k, "num_train": len(feats.train),
            "num_val": len(feats.val), "dims": int(feats.train.shape[1]), "pca": coords, "pca_variance": share,
            "seconds": time.perf_counter() - t0}


def _check(train, train_labels, val, val_labels) -> None:
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"separability needs training and validation images (got {len(train)} and {len(val)})")
    if len(train) != len(train_labels) or len(val) != len(val_labels):
        raise ValueError("features and labels differ in length")
