"""Cluster speaker-window embeddings into speakers (numpy, scipy and scikit-learn only).

Follows FunASR's CAM++ cluster backend (`funasr/models/campplus/cluster_backend.py`), rebuilt on
library primitives:

* affinity: cosine similarity kept only to each window's nearest neighbours (FunASR's p-pruning,
  p = 0.022, at least 6 neighbours) via `sklearn.neighbors.kneighbors_graph`, symmetrised;
* speaker count: the largest eigengap of the normalized graph Laplacian
  (`scipy.sparse.csgraph.laplacian`), searched over 1..max(max_speakers, 16) and then clamped to
  [min_speakers, max_speakers];
* labels: k-means (`sklearn.cluster.KMeans`, fixed seed) on the row-normalized spectral embedding;
* short audio (N <= long_threshold): dense affinity and `scipy.linalg.eigh` on the few smallest
  eigenvalues; long audio (N > long_threshold): the same spectral method on a sparse kNN graph with
  at most LONG_NEIGHBOURS neighbours per window and `scipy.sparse.linalg.eigsh`, so memory grows
  as N * 64 rather than N * N (three hours of audio, ~14400 windows: about 2 s on two CPU cores
  and 300 MB). Not used for long audio: FunASR's UMAP + HDBSCAN (needs umap-learn, which this model
  does not import) and sklearn's kNN-connectivity average linkage, which measures the distance
  between two clusters only along kNN edges: between speakers that is the closest pair of windows,
  so whole speakers chain together while stray windows stay singletons at the top of the tree
  (ARI ~0 on three synthetic speakers where the spectral method scores 1.0);
* then, when the count was estimated: windows of tiny clusters (< min_cluster_fraction of all
  windows) go to the nearest remaining centroid, and clusters whose centroids' cosine similarity
  exceeds merge_threshold (FunASR's 0.78) are merged, never below min_speakers.

A given num_speakers is honoured exactly (capped at the number of windows). Labels are numbered by
first appearance, so the first window's speaker is 0. Everything is deterministic.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from sklearn.cluster import KMeans
from sklearn.neighbors import kneighbors_graph
from sklearn.preprocessing import normalize

# speakers at most when a request names no bound (pipeline and transcribe: their `default_max_speakers`)
DEFAULT_MAX_SPEAKERS = 8

PRUNE_FRACTION = 0.022    # FunASR's pval: keep the 2.2 % most similar windows of each window
MIN_NEIGHBOURS = 6        # FunASR: at least 6 entries per row survive pruning
LONG_NEIGHBOURS = 64      # neighbour cap on the sparse (long audio) graph
SEARCH_MAX = 16           # eigengaps are searched up to max(max_speakers, SEARCH_MAX), then clamped
SEED = 0


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def validate_speaker_options(num_speakers, min_speakers, max_speakers) -> None:
    """Raise ValueError unless the per-request speaker options are usable."""
    if num_speakers is not None:
        if not _is_int(num_speakers):
            raise ValueError(f"num_speakers must be an integer, got {num_speakers!r}")
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be at least 1, got {num_speakers}")
    for name, value in (("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if not _is_int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if min_speakers > max_speakers:
        raise ValueError(f"min_speakers ({min_speakers}) must not exceed max_speakers ({max_speakers})")


def _validate_embeddings(embeddings) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must have rank 2 [windows, dim], got shape {list(x.shape)}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if x.shape[0] and x.shape[1] == 0:
        raise ValueError("embeddings have zero dimensions")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def _affinity(xn: np.ndarray, neighbours: int) -> scipy.sparse.csr_matrix:
    """Cosine similarity to each window's nearest neighbours, symmetrised (FunASR's p-pruning)."""
    # rows are unit vectors, so euclidean neighbours are cosine neighbours and cos = 1 - d^2 / 2;
    # sklearn's euclidean search is chunked (metric="cosine" takes ~13x the memory at 14400 windows)
    graph = kneighbors_graph(xn, neighbours, mode="distance", metric="euclidean", include_self=False)
    # a tiny floor keeps every window connected to its neighbours even where cosine is <= 0
    graph.data = np.maximum(1.0 - 0.5 * graph.data ** 2, 1e-6)
    return (0.5 * (graph + graph.T)).tocsr()


def _spectrum(xn: np.ndarray, count: int, dense: bool) -> tuple[np.ndarray, np.ndarray]:
    """The `count` smallest eigenvalues (ascending) and eigenvectors of the normalized Laplacian."""
    n = xn.shape[0]
    prune = max(MIN_NEIGHBOURS, int(np.ceil(PRUNE_FRACTION * n)))
    if dense or count >= n - 1:
        affinity = _affinity(xn, min(n - 1, prune)).toarray()
        laplacian = csgraph.laplacian(affinity, normed=True)
        return scipy.linalg.eigh(laplacian, subset_by_index=[0, count - 1])
    affinity = _affinity(xn, min(n - 1, prune, LONG_NEIGHBOURS))
    laplacian = csgraph.laplacian(affinity, normed=True)
    # the smallest eigenvalues of L are the largest of 2I - L (the spectrum lies in [0, 2]),
    # which ARPACK finds quickly; a fixed start vector makes the result deterministic
    shifted = (2.0 * scipy.sparse.identity(n, format="csr") - laplacian).tocsr()
    try:
        values, vectors = eigsh(shifted, k=count, which="LA", v0=np.ones(n), tol=1e-8)
    except ArpackNoConvergence:
        values, vectors = eigsh(shifted, k=count, which="LA", v0=np.ones(n), tol=1e-5, maxiter=100 * n)
    values = 2.0 - values
    order = np.argsort(values, kind="stable")
    return values[order], vectors[:, order]


def _eigengap_count(values: np.ndarray) -> int:
    """k maximizing lambda[k+1] - lambda[k] (1-based) over the eigenvalues available."""
    if values.shape[0] < 2:
        return 1
    return int(np.argmax(np.diff(values))) + 1


def _kmeans(points: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return np.zeros(points.shape[0], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on duplicate points: _split_to fixes the count
        return KMeans(n_clusters=k, n_init=10, random_state=SEED).fit_predict(points).astype(np.int64)


def _compact(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _centroids(xn: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, xn.shape[1]))
    np.add.at(sums, labels, xn)
    return normalize(sums)


def _split_to(labels: np.ndarray, k: int) -> np.ndarray:
    """Degenerate input only (identical embeddings): split the largest clusters in time order until
    there are k clusters."""
    labels = _compact(labels)
    count = int(labels.max()) + 1
    while count < k:
        sizes = np.bincount(labels)
        members = np.flatnonzero(labels == int(np.argmax(sizes)))
        labels[members[members.shape[0] // 2:]] = count
        count += 1
    return labels


def _merge_tiny(xn: np.ndarray, labels: np.ndarray, fraction: float, floor: int) -> np.ndarray:
    """Windows of clusters smaller than fraction * N join the nearest larger cluster (by cosine to its
    centroid); the largest tiny clusters are kept when needed to stay at `floor` clusters."""
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    keep = sizes >= fraction * labels.shape[0]
    for c in order[: max(floor, 1)]:
        keep[c] = True
    if keep.all():
        return labels
    kept = np.flatnonzero(keep)
    centroids = _centroids(xn, labels, sizes.shape[0])[kept]
    moved = ~keep[labels]
    labels = labels.copy()
    labels[moved] = kept[np.argmax(xn[moved] @ centroids.T, axis=1)]
    return _compact(labels)


def _merge_similar(xn: np.ndarray, labels: np.ndarray, threshold: float, floor: int) -> np.ndarray:
    """FunASR's merge_by_cos: merge the most similar pair of clusters while their centroids' cosine
    similarity exceeds threshold, never below `floor` clusters."""
    labels = labels.copy()
    while True:
        k = int(labels.max()) + 1
        if k <= max(floor, 1):
            return labels
        centroids = _centroids(xn, labels, k)
        similarity = np.triu(centroids @ centroids.T, 1) - np.tril(np.full((k, k), np.inf))
        i, j = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[i, j] <= threshold:
            return labels
        labels[labels == j] = i
        labels = _compact(labels)


def _by_first_appearance(labels: np.ndarray) -> np.ndarray:
    uniques, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(uniques.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniques.shape[0])
    return rank[inverse]


def cluster_speakers(embeddings: np.ndarray, num_speakers: int | None = None, min_speakers: int = 1,
                     max_speakers: int = DEFAULT_MAX_SPEAKERS, *, long_threshold: int = 1000, min_cluster_fraction: float = 0.02,
                     merge_threshold: float = 0.78) -> np.ndarray:
    """Speaker label of every window [N] (int64, 0..k-1, numbered by first appearance).

    num_speakers: exactly that many speakers (capped at N), min/max ignored. Otherwise the count is
    estimated and kept within [min_speakers, max_speakers] (and at most N).
    """
    validate_speaker_options(num_speakers, min_speakers, max_speakers)
    if not _is_int(long_threshold) or long_threshold < 1:
        raise ValueError(f"long_threshold must be a positive integer, got {long_threshold!r}")
    if not 0.0 <= min_cluster_fraction < 1.0:
        raise ValueError(f"min_cluster_fraction must be in [0, 1), got {min_cluster_fraction!r}")
    if not 0.0 < merge_threshold <= 1.0:
        raise ValueError(f"merge_threshold must be in (0, 1], got {merge_threshold!r}")
    x = _validate_embeddings(embeddings)
    n = x.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    xn = normalize(x)
    dense = n <= long_threshold

    if num_speakers is not None:
        k = min(int(num_speakers), n)
        if k == n:
            return np.arange(n, dtype=np.int64)
        values, vectors = _spectrum(xn, min(n - 1, max(k, SEARCH_MAX) + 1), dense)
        # embed in at least the estimated number of dimensions, so asking for fewer speakers than
        # are present merges whole speakers instead of cutting an arbitrary subspace
        dims = max(k, min(_eigengap_count(values), values.shape[0]))
        labels = _split_to(_kmeans(normalize(vectors[:, :dims]), k), k)
        return _by_first_appearance(labels)

    lo, hi = min(int(min_speakers), n), min(int(max_speakers), n)
    values, vectors = _spectrum(xn, min(n, max(hi, SEARCH_MAX) + 1), dense)
    estimate = _eigengap_count(values)
    k = int(np.clip(estimate, lo, hi))
    if k == n:
        labels = np.arange(n, dtype=np.int64)
    else:
        dims = max(k, min(estimate, values.shape[0]))
        labels = _split_to(_kmeans(normalize(vectors[:, :dims]), k), lo)
    labels = _merge_tiny(xn, _compact(labels), min_cluster_fraction, lo)
    labels = _merge_similar(xn, labels, merge_threshold, lo)
    return _by_first_appearance(labels)
