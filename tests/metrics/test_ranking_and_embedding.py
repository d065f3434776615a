"""AUCPR, Recall@k and NMI against scikit-learn and brute-force references."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, normalized_mutual_info_score

from adaloss.metrics import (
    AUCPR,
    METRICS,
    NMI,
    RecallAt1,
    RecallAt4,
    RecallAtK,
    average_precision,
    create_metric,
    kmeans,
    nmi,
    normalized_mutual_info,
    recall_at_k,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- average precision


def test_average_precision_hand_computed_tie() -> None:
    # one threshold at 0.5 (both tied rows: P=1/2, R=1/2), one at 0.2 (P=2/3, R=1)
    scores = torch.tensor([0.5, 0.5, 0.2])
    target = torch.tensor([1, 0, 1])
    expected = 0.5 * 0.5 + 0.5 * (2 / 3)
    assert average_precision(scores, target).item() == pytest.approx(expected, abs=1e-15)
    assert average_precision_score(target.numpy(), scores.numpy()) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_binary_average_precision_matches_sklearn_with_ties(seed: int) -> None:
    g = _gen(seed)
    scores = torch.randint(0, 12, (301,), generator=g).double() / 4  # many ties
    target = torch.randint(0, 2, (301,), generator=g)
    expected = average_precision_score(target.numpy(), scores.numpy())
    assert average_precision(scores, target).item() == pytest.approx(expected, abs=1e-12)
    assert average_precision(scores.unsqueeze(1), target).item() == pytest.approx(expected, abs=1e-12)


def test_binary_average_precision_two_columns_ranks_by_positive_class_probability() -> None:
    g = _gen(5)
    logits = torch.randn(200, 2, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 2, (200,), generator=g)
    p1 = logits.softmax(dim=1)[:, 1].numpy()
    expected = average_precision_score(target.numpy(), p1)
    assert average_precision(logits, target).item() == pytest.approx(expected, abs=1e-12)
    probs = logits.softmax(dim=1)
    assert average_precision(probs, target, from_logits=False).item() == pytest.approx(expected, abs=1e-12)


def test_binary_average_precision_edge_cases() -> None:
    scores = torch.tensor([0.3, 0.1, 0.9])
    assert average_precision(scores, torch.tensor([1, 1, 1])).item() == 1.0
    assert average_precision(scores, torch.tensor([0, 0, 1])).item() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: "No positive class found in y_true"
        expected = average_precision_score([0, 0, 0], scores.numpy())
    assert average_precision(scores, torch.tensor([0, 0, 0])).item() == expected == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_macro_average_precision_matches_sklearn_one_hot(seed: int) -> None:
    g = _gen(seed)
    n, c = 400, 6
    scores = torch.randint(0, 8, (n, c), generator=g).double() / 8  # ties within each column
    target = torch.randint(0, c, (n,), generator=g)
    one_hot = F.one_hot(target, c).numpy()
    expected = average_precision_score(one_hot, scores.numpy(), average="macro")
    assert average_precision(scores, target, from_logits=False).item() == pytest.approx(expected, abs=1e-12)


def test_macro_average_precision_from_logits_ranks_by_softmax_probability() -> None:
    g = _gen(7)
    logits = torch.randn(300, 10, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 10, (300,), generator=g)
    one_hot = F.one_hot(target, 10).numpy()
    expected = average_precision_score(one_hot, logits.softmax(dim=1).numpy(), average="macro")
    assert average_precision(logits, target).item() == pytest.approx(expected, abs=1e-12)
    # raw logits rank samples differently from their probabilities: a different (wrong) value
    raw = average_precision_score(one_hot, logits.numpy(), average="macro")
    assert raw != pytest.approx(expected, abs=1e-6)
    assert average_precision(logits, target, from_logits=False).item() == pytest.approx(raw, abs=1e-12)


def test_macro_average_precision_absent_class_counts_zero_like_sklearn() -> None:
    g = _gen(8)
    scores = torch.rand(50, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (50,), generator=g)  # class 3 never occurs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = average_precision_score(F.one_hot(target, 4).numpy(), scores.numpy(), average="macro")
        per_class = average_precision_score(F.one_hot(target, 4).numpy(), scores.numpy(), average=None)
    assert per_class[3] == 0.0
    assert average_precision(scores, target, from_logits=False).item() == pytest.approx(expected, abs=1e-12)


def test_aucpr_accumulates_like_one_shot() -> None:
    g = _gen(9)
    logits = torch.randn(257, 10, generator=g)
    target = torch.randint(0, 10, (257,), generator=g)
    m = create_metric("aucpr", task="classification")
    assert isinstance(m, AUCPR) and AUCPR.higher_is_better and AUCPR.task == "classification"
    for s in range(0, 257, 50):
        m.update(logits[s : s + 50], target[s : s + 50])
    assert m.compute() == pytest.approx(average_precision(logits, target).item(), abs=1e-12)
    m.reset()
    with pytest.raises(RuntimeError, match="AUCPR.compute\\(\\) called before any update"):
        m.compute()


def test_average_precision_bad_inputs_name_the_argument() -> None:
    scores = torch.rand(5, 3)
    with pytest.raises(ValueError, match=r"`target` to be \(N,\) labels with N = 5.*got shape \(4,\)"):
        average_precision(scores, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="`target` to hold integer class indices.*float32"):
        average_precision(scores, torch.zeros(5))
    with pytest.raises(ValueError, match=r"`target` to be class indices in \[0, 3\).*from 0 to 3"):
        average_precision(scores, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"`target` to be in \{0, 1\}.*\[0, 2\]"):
        average_precision(torch.rand(3), torch.tensor([0, 2, 0]))
    with pytest.raises(ValueError, match="`prediction` to be finite"):
        average_precision(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`prediction` to be \(N,\) or \(N, C\).*\(2, 2, 2\)"):
        average_precision(torch.rand(2, 2, 2), torch.tensor([0, 1]))
    m = AUCPR()
    m.update(scores, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"`prediction` rows of shape \(3,\).*got \(4,\)"):
        m.update(torch.rand(2, 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- Recall@k


def _brute_force_recall(x: torch.Tensor, labels: torch.Tensor, k: int, cosine: bool) -> float:
    n = x.shape[0]
    hits = 0
    for i in range(n):
        dists = []
        for j in range(n):
            if j == i:
                continue
            if cosine:
                d = 1 - float(torch.dot(x[i], x[j]) / (x[i].norm() * x[j].norm()))
            else:
                d = float((x[i] - x[j]).pow(2).sum().sqrt())
            dists.append((d, j))
        dists.sort()
        hits += any(int(labels[j]) == int(labels[i]) for _, j in dists[:k])
    return hits / n


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_recall_at_k_matches_brute_force(distance: str) -> None:
    g = _gen(10)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)  # continuous: no distance ties
    labels = torch.randint(0, 6, (60,), generator=g)
    ks = [1, 2, 4, 8]
    expected = [_brute_force_recall(x, labels, k, distance == "cosine") for k in ks]
    got = recall_at_k(x, labels, ks, distance=distance)
    assert got.tolist() == pytest.approx(expected, abs=1e-15)
    blocked = recall_at_k(x, labels, ks, distance=distance, block_size=7)
    assert torch.equal(blocked, got)
    for k, e in zip(ks, expected):
        single = recall_at_k(x, labels, k, distance=distance)
        assert single.dim() == 0 and single.item() == pytest.approx(e, abs=1e-15)


def test_recall_at_k_excludes_the_query_but_not_its_duplicates() -> None:
    x = torch.tensor([[0.0], [0.0], [10.0], [10.1]])
    labels = torch.tensor([0, 0, 1, 2])
    # rows 0 and 1 find each other; rows 2 and 3 find each other (different labels)
    assert recall_at_k(x, labels, 1).item() == 0.5


def test_recall_at_k_metric_accumulates_and_is_registered() -> None:
    g = _gen(11)
    x = torch.randn(150, 8, generator=g)
    labels = torch.randint(0, 10, (150,), generator=g)
    for k in (1, 2, 4, 8):
        m = create_metric(f"recall@{k}", task="embedding")
        assert isinstance(m, RecallAtK) and m.k == k and m.name == f"recall@{k}"
        assert m.higher_is_better and m.task == "embedding"
        for s in range(0, 150, 40):
            m.update(x[s : s + 40], labels[s : s + 40])
        assert m.compute() == pytest.approx(recall_at_k(x, labels, k).item(), abs=1e-12)
    cos = RecallAt4(distance="cosine")
    cos.update(x, labels)
    assert cos.compute() == pytest.approx(recall_at_k(x, labels, 4, distance="cosine").item(), abs=1e-12)
    with pytest.raises(TypeError, match="RecallAtK is the base class"):
        RecallAtK()


def test_recall_at_k_bad_inputs_name_the_argument() -> None:
    x = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 0, 1, 2])
    with pytest.raises(ValueError, match=r"`k` to be at most N - 1 = 4.*got 5"):
        recall_at_k(x, labels, 5)
    with pytest.raises(ValueError, match="`k` to be a positive integer, but got 0"):
        recall_at_k(x, labels, [1, 0])
    with pytest.raises(ValueError, match=r"`labels` to be \(N,\) with N = 5.*\(4,\)"):
        recall_at_k(x, labels[:4], 1)
    with pytest.raises(TypeError, match="`labels` to hold integer class labels"):
        recall_at_k(x, labels.float(), 1)
    with pytest.raises(ValueError, match=r"`embeddings` to be \(N, D\).*\(5,\)"):
        recall_at_k(x[:, 0], labels, 1)
    with pytest.raises(ValueError, match=r"Expected `distance` to be one of \['cosine', 'euclidean'\].*'l1'"):
        recall_at_k(x, labels, 1, distance="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`block_size` to be a positive integer"):
        recall_at_k(x, labels, 1, block_size=0)
    with pytest.raises(ValueError, match="`distance`"):
        RecallAt1(distance="manhattan")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- NMI and k-means


@pytest.mark.parametrize("seed", range(4))
def test_normalized_mutual_info_matches_sklearn(seed: int) -> None:
    g = _gen(seed)
    a = torch.randint(0, 7, (300,), generator=g)
    b = (a + torch.randint(0, 3, (300,), generator=g)) % 5  # dependent on a
    expected = normalized_mutual_info_score(a.numpy(), b.numpy())
    assert normalized_mutual_info(a, b) == pytest.approx(expected, abs=1e-12)
    c = torch.randint(100, 140, (300,), generator=g)  # many small clusters, non-contiguous values
    assert normalized_mutual_info(a, c) == pytest.approx(normalized_mutual_info_score(a.numpy(), c.numpy()), abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0, 0, 1, 1], [1, 1, 0, 0]),
        ([0, 0, 0, 0], [0, 1, 2, 3]),
        ([3, 3, 3], [7, 7, 7]),
        ([0, 1, 2, 3], [0, 1, 2, 3]),
        ([0, 0, 1, 1], [0, 1, 0, 1]),
        ([0, 1, 1, 2, 2, 2], [5, 5, 4, 4, 4, 4]),
    ],
)
def test_normalized_mutual_info_limit_cases_match_sklearn(a: list[int], b: list[int]) -> None:
    assert normalized_mutual_info(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_normalized_mutual_info_bad_inputs() -> None:
    with pytest.raises(ValueError, match="`labels_a` and `labels_b` to have the same length, but got 3 and 2"):
        normalized_mutual_info([0, 1, 1], [0, 1])
    with pytest.raises(TypeError, match="`labels_b` to hold integer labels"):
        normalized_mutual_info([0, 1], [0.5, 1.0])


def _blobs(n_per: int, n_classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    centres = torch.randn(n_classes, dim, generator=g) * spread
    labels = torch.arange(n_classes).repeat_interleave(n_per)
    x = centres[labels] + torch.randn(n_per * n_classes, dim, generator=g)
    perm = torch.randperm(labels.numel(), generator=g)
    return x[perm], labels[perm]


def test_nmi_is_one_on_well_separated_blobs() -> None:
    x, labels = _blobs(40, 12, 16, spread=30.0, seed=12)
    assert nmi(x, labels).item() == 1.0
    m = create_metric("nmi", task="embedding")
    assert isinstance(m, NMI) and NMI.higher_is_better and NMI.task == "embedding"
    for s in range(0, labels.numel(), 100):
        m.update(x[s : s + 100], labels[s : s + 100])
    assert m.compute() == 1.0


def test_nmi_metric_accumulates_like_one_shot_and_is_deterministic() -> None:
    x, labels = _blobs(30, 8, 6, spread=2.0, seed=13)  # overlapping: NMI well below 1
    one_shot = nmi(x, labels).item()
    assert 0.2 < one_shot < 0.99
    assert nmi(x, labels).item() == one_shot
    m = NMI()
    m.update(x[:100], labels[:100])
    m.update(x[100:], labels[100:])
    assert m.compute() == one_shot


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_inertia_close_to_sklearn(seed: int) -> None:
    x, _ = _blobs(50, 10, 8, spread=3.0, seed=20 + seed)
    ours = kmeans(x, 10, n_init=3, seed=seed)
    theirs = KMeans(10, n_init=3, random_state=seed).fit(x.numpy())
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=0.03)
    # the reported inertia and labels belong to the returned centres
    d = torch.cdist(x.double(), ours.centers.double()).pow(2)
    assert torch.equal(d.argmin(dim=1), ours.labels)
    assert ours.inertia == pytest.approx(float(d.min(dim=1).values.sum()), rel=1e-4)


def test_kmeans_duplicates_and_k_equal_n() -> None:
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 4 + [[5.0, 5.0]] * 3)
    result = kmeans(x, 3)
    assert result.inertia == 0.0
    assert normalized_mutual_info(result.labels, [0] * 5 + [1] * 4 + [2] * 3) == 1.0
    y = torch.randn(7, 3, generator=_gen(3))
    assert sorted(kmeans(y, 7).labels.tolist()) == list(range(7))


def test_kmeans_bad_inputs() -> None:
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="`n_clusters` to be at most N = 5 points, but got 6"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="`n_init` to be a positive integer, but got 0"):
        kmeans(x, 2, n_init=0)
    with pytest.raises(ValueError, match=r"`x` to be \(N, D\) points"):
        kmeans(x[:, 0], 2)


# ----------------------------------------------------------------------------- registry


def test_directions_and_tasks_of_all_metrics() -> None:
    expected = {
        "error": (False, "classification"),
        "balanced_error": (False, "classification"),
        "mse": (False, "regression"),
        "aucpr": (True, "classification"),
        "balanced_aucpr": (True, "classification"),
        "recall@1": (True, "embedding"),
        "recall@2": (True, "embedding"),
        "recall@4": (True, "embedding"),
        "recall@8": (True, "embedding"),
        "nmi": (True, "embedding"),
    }
    assert {n: (c.higher_is_better, c.task) for n, c in METRICS.items()} == expected


def test_create_metric_task_mismatch_and_unknown_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"Metric 'recall@1' is for embedding, but the task is classification; "
        r"metrics for classification: \['aucpr', 'balanced_aucpr', 'balanced_error', 'error'\]",
    ):
        create_metric("recall@1", task="classification")
    with pytest.raises(ValueError, match=r"metrics for embedding: \['nmi', 'recall@1', 'recall@2', 'recall@4', 'recall@8'\]"):
        create_metric("aucpr", task="embedding")
    with pytest.raises(ValueError, match="but got 'recal@4'. Did you mean 'recall@4'"):
        create_metric("recal@4")
    with pytest.raises(ValueError, match=r"Expected `task` to be one of \['classification', 'embedding', 'regression'\], but got 'embeding'"):
        create_metric("nmi", task="embeding")  # type: ignore[arg-type]
