"""How useful the latent codes are: linear and nearest-neighbour probes and
clustering, with scikit-learn (``pip install 'pyrovae[probe]'``).

Typical use, on the posterior means::

    from .latents import encode_data
    train = encode_data(vae, splits.train[0])["mean"]
    test = encode_data(vae, splits.test[0])["mean"]
    scores = latent_probe(train, splits.train[1], test, splits.test[1])
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = ["latent_probe"]


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the latent probe needs scikit-learn: pip install 'pyrovae[probe]' (or pip install scikit-learn)"
        ) from None


def _as_arrays(codes, labels, split: str):
    codes = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if codes.ndim != 2:
        raise DataError(f"{split} codes must be a matrix (N, latent_dim), got shape {codes.shape}")
    if labels.shape != (len(codes),):
        raise DataError(f"{split} labels must have shape ({len(codes)},) to match the codes, got {labels.shape}")
    if len(codes) == 0:
        raise DataError(f"the {split} set is empty; the probe needs labelled {split} points")
    if (labels < 0).any():
        raise DataError(
            f"{int((labels < 0).sum())} {split} points have no label (-1); the probe needs a labelled data set"
        )
    if not np.isfinite(codes).all():
        raise DataError(f"the {split} codes hold NaN or inf values")
    return codes, labels


def latent_probe(train_codes, train_labels, test_codes, test_labels, k: int = 5, max_iter: int = 1000,
                 seed: int = 0, max_train: Optional[int] = None) -> Dict[str, float]:
    """Fit probes on ``train_codes`` ``(N, D)`` / ``train_labels`` ``(N,)`` and
    score them on the test pair (tensors or arrays; labels are integer classes).

    :returns: a dict of numbers in [0, 1]:

        - ``knn_accuracy``: test accuracy of a ``k``-nearest-neighbour classifier
          (Euclidean distance on the codes);
        - ``logreg_accuracy``: test accuracy of a multinomial logistic
          regression on standardised codes (L2, C = 1);
        - ``kmeans_nmi``: normalised mutual information between the test
          labels and k-means clusters of the test codes (as many clusters
          as classes, 10 restarts);
        - ``kmeans_purity``: the share of test points whose cluster's
          majority label is their own.

    :param int k: neighbours of the k-NN probe.
    :param int max_iter: iterations of the logistic regression solver.
    :param int seed: seeds k-means.
    :param int max_train: use only the first ``max_train`` training points (None: all).
    :raises DataError: for unlabelled points, mismatched shapes or fewer than two classes.

    Example::

        >>> import torch, pyrovae
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(3).repeat(40)                      # 3 classes, (120,)
        >>> codes = labels[:, None].float() * 4 + torch.randn(120, 2, generator=g)   # separable
        >>> scores = pyrovae.latent_probe(codes[:90], labels[:90], codes[90:], labels[90:])
        >>> sorted(scores)
        ['kmeans_nmi', 'kmeans_purity', 'knn_accuracy', 'logreg_accuracy']
        >>> scores["knn_accuracy"] > 0.9
        True
    """
    _sklearn()
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_tr, y_tr = _as_arrays(train_codes, train_labels, "training")
    x_te, y_te = _as_arrays(test_codes, test_labels, "test")
    if max_train is not None:
        x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]
    if x_tr.shape[1] != x_te.shape[1]:
        raise DataError(f"training codes have {x_tr.shape[1]} dimensions, test codes {x_te.shape[1]}")
    if len(np.unique(y_tr)) < 2:
        raise DataError("the training labels hold a single class; the probe needs at least two")
    if len(x_tr) < k:
        raise DataError(f"the k-NN probe needs at least k={k} training points, got {len(x_tr)}")

    knn = KNeighborsClassifier(n_neighbors=k).fit(x_tr, y_tr)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)).fit(x_tr, y_tr)
    n_clusters = min(len(np.unique(np.concatenate([y_tr, y_te]))), len(x_te))
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x_te)
    table = contingency_matrix(y_te, clusters)
    return {
        "knn_accuracy": float(knn.score(x_te, y_te)),
        "logreg_accuracy": float(logreg.score(x_te, y_te)),
        "kmeans_nmi": float(normalized_mutual_info_score(y_te, clusters)),
        "kmeans_purity": float(table.max(0).sum() / table.sum()),
    }
