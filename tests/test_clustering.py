"""Speaker clustering (pure numpy/scipy/sklearn) on synthetic CAM++-like embeddings.

Speakers are random unit vectors in 192 dimensions (optionally sharing a common direction, so that
different speakers are not orthogonal, as with real embeddings); a window is its speaker's vector
plus Gaussian noise, and speakers talk in runs of windows. Noise 0.05 / 0.08 / 0.11 per dimension
gives a same-speaker window cosine of about 0.68 / 0.45 / 0.30.
"""
from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, completeness_score, homogeneity_score


from funasr_triton_models.diarize_cluster import cluster_speakers, validate_speaker_options

D = 192
LONG = 3000   # above the default long_threshold (1000): the sparse path


def windows(n_speakers: int, n: int, noise: float = 0.08, weights=None, shared: float = 0.3, seed: int = 0,
            mean_run: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [n, D] float32, true speaker of each window). `shared` is the cosine between two
    speakers' vectors; speaker ids in the truth are arbitrary (not by first appearance)."""
    rng = np.random.default_rng(seed)
    own = rng.standard_normal((n_speakers, D))
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    common = rng.standard_normal(D)
    common /= np.linalg.norm(common)
    voices = np.sqrt(shared) * common + np.sqrt(1.0 - shared) * own
    voices /= np.linalg.norm(voices, axis=1, keepdims=True)
    w = np.full(n_speakers, 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
    counts = np.floor(w / w.sum() * n).astype(int)
    counts[np.argmax(counts)] += n - counts.sum()
    runs = []
    for speaker, left in enumerate(counts):
        while left > 0:
            length = min(left, int(rng.geometric(1.0 / mean_run)))
            runs.append(np.full(length, speaker))
            left -= length
    truth = np.concatenate([runs[i] for i in rng.permutation(len(runs))])
    x = voices[truth] + noise * rng.standard_normal((n, D))
    return x.astype(np.float32), truth


def count(labels: np.ndarray) -> int:
    return len(np.unique(labels))


def assert_first_appearance(labels: np.ndarray) -> None:
    _, first = np.unique(labels, return_index=True)
    assert labels[0] == 0
    assert list(np.unique(labels)) == list(range(count(labels)))
    assert list(first) == sorted(first), "label i must first appear before label i + 1"


# ---- speaker count recovered when not given --------------------------------------------------

@pytest.mark.parametrize("noise", [0.05, 0.08, 0.11])
@pytest.mark.parametrize("n_speakers", range(1, 9))
def test_recovers_speaker_count_short(n_speakers, noise):
    x, truth = windows(n_speakers, 40 * n_speakers, noise, seed=n_speakers)
    labels = cluster_speakers(x)
    assert count(labels) == n_speakers
    assert adjusted_rand_score(truth, labels) >= 0.95
    assert_first_appearance(labels)


@pytest.mark.parametrize("n_speakers", [1, 2, 4, 8])
def test_recovers_speaker_count_long(n_speakers):
    x, truth = windows(n_speakers, LONG, 0.11, shared=0.5, seed=10 + n_speakers)
    labels = cluster_speakers(x)
    assert count(labels) == n_speakers
    assert adjusted_rand_score(truth, labels) >= 0.95
    assert_first_appearance(labels)


@pytest.mark.parametrize("n_speakers", [1, 2])
def test_twenty_windows(n_speakers):
    x, truth = windows(n_speakers, 20, 0.08, seed=3)
    labels = cluster_speakers(x)
    assert count(labels) == n_speakers
    assert adjusted_rand_score(truth, labels) >= 0.95


@pytest.mark.parametrize("n", [300, LONG])
@pytest.mark.parametrize("weights", [[70, 20, 10], [50, 30, 15, 5]])
def test_imbalanced_speakers(n, weights):
    x, truth = windows(len(weights), n, 0.08, weights=weights, seed=n)
    labels = cluster_speakers(x)
    assert count(labels) == len(weights)
    assert adjusted_rand_score(truth, labels) >= 0.95


def test_long_path_agrees_with_short_path():
    x, truth = windows(4, 1200, 0.1, weights=[40, 30, 20, 10], seed=5)
    sparse = cluster_speakers(x)                        # 1200 > long_threshold = 1000
    dense = cluster_speakers(x, long_threshold=2000)
    assert count(sparse) == count(dense) == 4
    assert adjusted_rand_score(sparse, dense) >= 0.98
    assert adjusted_rand_score(truth, sparse) >= 0.95


# ---- num_speakers is first-class ---------------------------------------------------------------

@pytest.mark.parametrize("n", [150, LONG])
@pytest.mark.parametrize("asked", [1, 2, 3, 5])
def test_num_speakers_exact(n, asked):
    x, truth = windows(3, n, 0.08, seed=7)
    labels = cluster_speakers(x, num_speakers=asked)
    assert count(labels) == asked
    assert_first_appearance(labels)
    if asked == 3:
        assert adjusted_rand_score(truth, labels) >= 0.95
    elif asked < 3:   # fewer than present: whole speakers are merged, none is cut in two
        assert completeness_score(truth, labels) >= 0.95
    else:             # more than present: speakers are split, no cluster mixes two speakers
        assert homogeneity_score(truth, labels) >= 0.95


def test_num_speakers_ignores_bounds_and_merging():
    x, _ = windows(3, 150, 0.08, seed=8)
    assert count(cluster_speakers(x, num_speakers=5, min_speakers=1, max_speakers=3)) == 5
    assert count(cluster_speakers(x, num_speakers=2, min_speakers=3, max_speakers=8)) == 2
    # two voices with centroid cosine ~0.85 (> merge_threshold 0.78) stay apart when asked for
    close, _ = windows(2, 200, 0.03, shared=0.85, seed=9)
    assert count(cluster_speakers(close)) == 1
    assert count(cluster_speakers(close, num_speakers=2)) == 2
    assert count(cluster_speakers(close, merge_threshold=0.95)) == 2


def test_num_speakers_capped_at_window_count():
    x, _ = windows(2, 5, 0.08, seed=1)
    assert list(cluster_speakers(x, num_speakers=9)) == [0, 1, 2, 3, 4]
    assert list(cluster_speakers(x, num_speakers=1)) == [0] * 5


def test_num_speakers_exact_on_identical_embeddings():
    x = np.ones((30, D), dtype=np.float32)
    labels = cluster_speakers(x, num_speakers=3)
    assert count(labels) == 3
    assert_first_appearance(labels)
    assert count(cluster_speakers(x)) == 1
    assert count(cluster_speakers(x, min_speakers=2)) == 2


# ---- bounds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [200, LONG])
def test_max_speakers_caps_the_estimate(n):
    x, truth = windows(5, n, 0.08, seed=11)
    labels = cluster_speakers(x, max_speakers=3)
    assert count(labels) == 3
    assert completeness_score(truth, labels) >= 0.95   # whole speakers merged


@pytest.mark.parametrize("n", [100, LONG])
def test_min_speakers_raises_the_estimate(n):
    x, _ = windows(1, n, 0.08, seed=12)
    assert count(cluster_speakers(x, min_speakers=2)) == 2
    assert count(cluster_speakers(x, min_speakers=4, max_speakers=4)) == 4


def test_bounds_always_honoured():
    rng = np.random.default_rng(0)
    for trial in range(12):
        truth_k = int(rng.integers(1, 9))
        lo = int(rng.integers(1, 7))
        hi = int(rng.integers(lo, 9))
        n = truth_k * int(rng.integers(20, 40))
        x, _ = windows(truth_k, n, float(rng.choice([0.05, 0.11])), seed=100 + trial)
        k = count(cluster_speakers(x, min_speakers=lo, max_speakers=hi))
        assert lo <= k <= hi, (truth_k, lo, hi, k)
        assert k == min(max(truth_k, lo), hi), (truth_k, lo, hi, k)


def test_bounds_capped_at_window_count():
    x, _ = windows(2, 3, 0.08, seed=2)
    assert list(cluster_speakers(x, min_speakers=5, max_speakers=8)) == [0, 1, 2]


# ---- numbering, tiny clusters, determinism, edges -------------------------------------------------

def test_numbering_by_first_appearance():
    x, truth = windows(4, 160, 0.05, seed=4)
    labels = cluster_speakers(x)
    assert_first_appearance(labels)
    order = list(dict.fromkeys(truth.tolist()))     # true speakers in order of first appearance
    mapping = {t: labels[np.flatnonzero(truth == t)[0]] for t in order}
    assert [mapping[t] for t in order] == [0, 1, 2, 3]
    assert order != sorted(order)                   # the truth ids themselves are not in that order


@pytest.mark.parametrize("n", [300, LONG])
def test_tiny_cluster_merged_when_estimating(n):
    x, truth = windows(3, n, 0.05, weights=[70, 29, 1], shared=0.0, seed=13)
    labels = cluster_speakers(x)
    assert count(labels) == 2
    assert np.bincount(labels).min() >= 0.02 * n
    major = truth != np.argmin(np.bincount(truth))
    assert adjusted_rand_score(truth[major], labels[major]) >= 0.99
    # the same windows are kept as their own cluster when they may not be merged
    assert count(cluster_speakers(x, min_speakers=3)) == 3
    assert count(cluster_speakers(x, num_speakers=3)) == 3


@pytest.mark.parametrize("n", [150, LONG])
def test_deterministic(n):
    x, _ = windows(3, n, 0.11, weights=[60, 30, 10], seed=14)
    first = cluster_speakers(x)
    assert np.array_equal(first, cluster_speakers(x.copy()))
    assert np.array_equal(first, cluster_speakers(x.astype(np.float64)))
    assert np.array_equal(cluster_speakers(x, num_speakers=4), cluster_speakers(x.copy(), num_speakers=4))


def test_empty_and_single_window():
    empty = cluster_speakers(np.zeros((0, D), dtype=np.float32))
    assert empty.shape == (0,) and empty.dtype.kind == "i"
    one = cluster_speakers(np.ones((1, D), dtype=np.float32), num_speakers=3, min_speakers=2)
    assert one.tolist() == [0] and one.dtype.kind == "i"


def test_result_dtype_and_shape():
    x, _ = windows(2, 50, 0.08)
    labels = cluster_speakers(x)
    assert labels.shape == (50,) and labels.dtype == np.int64


# ---- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    (dict(num_speakers=0), "num_speakers must be at least 1"),
    (dict(num_speakers=-2), "num_speakers must be at least 1"),
    (dict(num_speakers=2.0), "num_speakers must be an integer"),
    (dict(num_speakers=True), "num_speakers must be an integer"),
    (dict(min_speakers=0), "min_speakers must be at least 1"),
    (dict(max_speakers=0), "max_speakers must be at least 1"),
    (dict(min_speakers=4, max_speakers=3), r"min_speakers \(4\) must not exceed max_speakers \(3\)"),
    (dict(min_speakers=None), "min_speakers must be an integer"),
    (dict(max_speakers="8"), "max_speakers must be an integer"),
])
def test_invalid_options(options, message):
    x, _ = windows(2, 40, 0.08)
    with pytest.raises(ValueError, match=message):
        cluster_speakers(x, **options)
    full = dict(num_speakers=None, min_speakers=1, max_speakers=8) | options
    with pytest.raises(ValueError, match=message):
        validate_speaker_options(full["num_speakers"], full["min_speakers"], full["max_speakers"])


def test_valid_options_pass():
    validate_speaker_options(None, 1, 8)
    validate_speaker_options(3, 1, 1)          # num_speakers is not checked against the bounds
    validate_speaker_options(np.int64(2), np.int32(2), 2)


@pytest.mark.parametrize("embeddings,message", [
    (np.zeros(D, dtype=np.float32), "rank 2"),
    (np.zeros((2, 3, D), dtype=np.float32), "rank 2"),
    (np.full((4, D), np.nan, dtype=np.float32), "NaN"),
    (np.where(np.eye(4, D) > 0, np.inf, 0.0), "NaN or infinite"),
    (np.array([["a"] * D] * 3), "numeric"),
])
def test_invalid_embeddings(embeddings, message):
    with pytest.raises(ValueError, match=message):
        cluster_speakers(embeddings)


@pytest.mark.parametrize("options", [dict(long_threshold=0), dict(min_cluster_fraction=1.0),
                                     dict(min_cluster_fraction=-0.1), dict(merge_threshold=0.0),
                                     dict(merge_threshold=1.5)])
def test_invalid_tuning(options):
    x, _ = windows(2, 40, 0.08)
    with pytest.raises(ValueError):
        cluster_speakers(x, **options)
