# SPDX-License-Identifier: Apache-2.0
import math
import sys

import numpy as np
import pytest
import torch

from pyro_probmix.graphs import FullGraph, Graph, KNNGraph, LabelKernelGraph, WeightedGraph

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def brute_knn(x, k, standardize=True):
    """Reference k-NN sets: float64, full distance matrix, argsort."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1)
    if standardize:
        std = x.std(0)
        x = x[:, std > 0] / std[std > 0]  # a constant column adds no distance
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    dist.fill_diagonal_(math.inf)
    return dist.argsort(1)[:, :k]


def same_sets(a, b):
    return torch.equal(a.sort(1).values, b.sort(1).values)


def pair_frequencies(graph, num_rows, draws_per_anchor):
    """Empirical P(partner = j | anchor = i) as a (num_rows, num_rows) matrix."""
    anchors = torch.arange(num_rows).repeat(draws_per_anchor)
    partners = graph.sample(anchors, num_rows)
    counts = torch.bincount(anchors * num_rows + partners, minlength=num_rows**2)
    return counts.reshape(num_rows, num_rows).double() / draws_per_anchor


def kernel_probs(labels, bandwidth):
    y = torch.as_tensor(labels, dtype=torch.float64).reshape(len(labels), -1)
    weights = torch.exp(-torch.cdist(y, y).square() / (2 * bandwidth**2))
    weights.fill_diagonal_(0)
    return weights / weights.sum(1, keepdim=True)


# ------------------------------------------------------------------------------------- KNNGraph


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_knn_matches_brute_force(k, chunk_size, dtype):
    torch.manual_seed(0)
    x = torch.randn(300, 4, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 5.0
    graph = KNNGraph(x.to(dtype), k=k, chunk_size=chunk_size)
    assert graph.neighbors.shape == (300, k)
    assert graph.neighbors.dtype == torch.int64
    assert same_sets(graph.neighbors, brute_knn(x, k))


def test_knn_of_float32_rows_closer_than_the_rounding_of_their_norms_is_exact():
    """20,000 rows of 1-D uniform data (the toy regression's input, at the size of a large UCI
    set): computed in float32, ||x_j||^2 - 2 q . x_j ranked the nearest rows by rounding noise
    and kept 91.8 % of the true 5 nearest neighbours while the graph reported recall 1.0."""
    from pyro_probmix.knn import neighbor_recall

    torch.manual_seed(0)
    x = torch.rand(20_000, 1) * 8 - 4
    graph = KNNGraph(x, k=5)
    rows = torch.arange(0, 20_000, 50)
    distance = (x[rows].double() - x.double().T).abs()  # exact differences, not the expansion
    distance[torch.arange(len(rows)), rows] = torch.inf
    exact = distance.topk(5, largest=False).indices
    assert graph.method == "exact" and neighbor_recall(x, rows, graph.neighbors[rows], exact) == 1.0


def test_knn_without_standardize_uses_raw_distances():
    torch.manual_seed(1)
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 100.0, 0.01])
    graph = KNNGraph(x, k=5, standardize=False, chunk_size=13)
    assert same_sets(graph.neighbors, brute_knn(x, 5, standardize=False))
    assert not same_sets(graph.neighbors, brute_knn(x, 5))  # standardising changes the graph


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_constant_column_adds_no_distance(dtype):
    torch.manual_seed(2)
    x = torch.randn(300, 4, dtype=torch.float64)
    x[:, 2] = 0.1  # its float32 std is a rounding residue, not 0
    graph = KNNGraph(x.to(dtype), k=5, chunk_size=7)
    assert same_sets(graph.neighbors, brute_knn(x, 5))


def test_knn_duplicates_are_neighbours_but_self_is_not():
    torch.manual_seed(3)
    x = torch.randn(50, 3)
    x[20] = x[10]
    x[31] = x[30]
    x[32] = x[30]
    graph = KNNGraph(x, k=2, chunk_size=7)
    rows = torch.arange(50).unsqueeze(1)
    assert (graph.neighbors != rows).all()
    assert graph.neighbors[10, 0] == 20 and graph.neighbors[20, 0] == 10
    assert set(graph.neighbors[30].tolist()) == {31, 32}
    assert set(graph.neighbors[31].tolist()) == {30, 32}
    assert set(graph.neighbors[32].tolist()) == {30, 31}


def test_knn_all_rows_equal():
    graph = KNNGraph(torch.ones(6, 2), k=5)
    assert (graph.neighbors.sort(1).values == torch.tensor([[j for j in range(6) if j != i] for i in range(6)])).all()


def test_knn_accepts_1d_and_numpy():
    graph = KNNGraph(np.array([0.0, 1.0, 3.0, 7.0, 7.5]), k=2)
    assert graph.neighbors.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert graph.num_nodes == 5


def test_graphs_accept_features_that_require_grad():
    x = torch.tensor([0.0, 1.0, 3.0, 7.0], requires_grad=True)
    assert KNNGraph(x, k=1).neighbors.flatten().tolist() == [1, 0, 1, 2]
    assert LabelKernelGraph(x, bandwidth=1.0).num_edges == 12  # largest excess 48 <= 2 ln(1e12)


def test_knn_partners_uniform_over_neighbours():
    torch.manual_seed(4)
    n, k, draws = 20, 3, 4000
    graph = KNNGraph(torch.randn(n, 2), k=k)
    freq = pair_frequencies(graph, n, draws)
    expected = torch.zeros(n, n, dtype=torch.float64)
    expected.scatter_(1, graph.neighbors, 1.0 / k)
    # std of one frequency is sqrt(1/3 * 2/3 / 4000) = 0.0075: 0.04 is > 5 sigma
    assert (freq - expected).abs().max() < 0.04


# ------------------------------------------------------------------------------------ FullGraph


@pytest.mark.parametrize("self_loops", [False, True])
def test_full_graph_frequencies(self_loops):
    torch.manual_seed(5)
    n, draws = 5, 20000
    freq = pair_frequencies(FullGraph(self_loops=self_loops), n, draws)
    if self_loops:
        expected = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    else:
        expected = (1 - torch.eye(n, dtype=torch.float64)) / (n - 1)
    # std of one frequency <= sqrt(0.25 * 0.75 / 20000) = 0.0031: 0.015 is > 4.5 sigma
    assert (freq - expected).abs().max() < 0.015
    if not self_loops:
        assert freq.diagonal().eq(0).all()


def test_full_graph_any_batch_size():
    graph = FullGraph()
    assert graph.num_nodes is None
    for n in (2, 3, 17):
        anchors = torch.arange(n).repeat(100)
        partners = graph.sample(anchors, n)
        assert ((partners >= 0) & (partners < n) & (partners != anchors)).all()
    assert graph.sample(torch.tensor([0, 1]), 2).tolist() == [1, 0]


# --------------------------------------------------------------------------- WeightedGraph


def test_weighted_graph_frequencies_unsorted_unequal():
    # unsorted edge list with unequal weights, an explicit self-loop 0 -> 0 and a repeated edge 2 -> 1
    edges = torch.tensor([[2, 0, 1, 0, 2, 1, 0, 2], [0, 1, 2, 2, 1, 0, 0, 1]])
    weights = torch.tensor([1.0, 3.0, 2.0, 1.0, 4.0, 0.5, 0.25, 1.0])
    graph = WeightedGraph(edges, weights)
    assert graph.num_nodes == 3 and graph.num_edges == 8
    assert graph.edges[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected.index_put_((edges[0], edges[1]), weights.double(), accumulate=True)
    expected /= expected.sum(1, keepdim=True)
    torch.manual_seed(6)
    freq = pair_frequencies(graph, 3, 20000)
    # std of one frequency <= sqrt(0.25 / 20000) = 0.0035: 0.015 is > 4 sigma
    assert (freq - expected).abs().max() < 0.015


def test_weighted_graph_default_weights_and_num_nodes():
    edges = np.array([[0, 0, 0, 0, 1, 2, 3], [1, 2, 3, 3, 0, 0, 0]])
    graph = WeightedGraph(edges, num_nodes=4)
    torch.manual_seed(7)
    freq = pair_frequencies(graph, 4, 20000)
    assert abs(freq[0, 3] - 0.5) < 0.015 and abs(freq[0, 1] - 0.25) < 0.015
    assert freq[1:, 0].eq(1).all()


def test_weighted_graph_deterministic_rows_at_large_indices():
    # anchor + u is rounded at large indices; a single out-edge must still always be taken
    n = 2**21
    sources = torch.arange(n)
    graph = WeightedGraph(torch.stack([sources, (sources + 1) % n]))
    anchors = torch.randint(n, (10000,))
    assert torch.equal(graph.sample(anchors, n), (anchors + 1) % n)


# ------------------------------------------------------------------------- LabelKernelGraph


@pytest.mark.parametrize(
    "labels, bandwidth",
    [
        ([0.0, 0.3, 0.5, 1.2, 2.0, 2.1], 0.5),
        ([[0.0, 1.0], [0.3, 0.2], [0.5, 0.5], [1.2, 0.0], [2.0, 1.5], [2.1, 1.0]], 0.8),
    ],
)
def test_label_kernel_frequencies(labels, bandwidth):
    labels = torch.tensor(labels)
    graph = LabelKernelGraph(labels, bandwidth)
    expected = kernel_probs(labels, bandwidth)
    torch.manual_seed(8)
    freq = pair_frequencies(graph, len(labels), 20000)
    # std of one frequency <= sqrt(0.25 / 20000) = 0.0035: 0.015 is > 4 sigma
    assert (freq - expected).abs().max() < 0.015
    assert freq.diagonal().eq(0).all()


def test_label_kernel_keeps_exact_weights():
    torch.manual_seed(9)
    labels = torch.randn(40, dtype=torch.float64)
    graph = LabelKernelGraph(labels, bandwidth=1.0)
    assert graph.num_edges == 40 * 39  # nothing below 1e-12 of the row maximum
    dense = torch.zeros(40, 40, dtype=torch.float64)
    dense[graph.edges[0], graph.edges[1]] = graph.weights
    dense /= dense.sum(1, keepdim=True)
    assert torch.allclose(dense, kernel_probs(labels, 1.0), rtol=1e-12, atol=0)


def test_label_kernel_truncates_negligible_edges():
    # weights relative to the row maximum: 0 -> 100 is exp(-4999.5), 2 -> 0 is exp(-99.5)
    graph = LabelKernelGraph(np.array([0.0, 1.0, 100.0]), bandwidth=1.0)
    assert graph.edges.tolist() == [[0, 1, 2], [1, 0, 1]]
    assert repr(graph) == "LabelKernelGraph(num_nodes=3, bandwidth=1.0, num_edges=3)"


def test_label_kernel_duplicates_are_partners():
    graph = LabelKernelGraph(torch.tensor([1.0, 1.0, 1.0, 9.0]), bandwidth=0.1)
    torch.manual_seed(10)
    freq = pair_frequencies(graph, 4, 5000)
    assert freq.diagonal().eq(0).all()
    assert (freq[:3, :3] + torch.eye(3, dtype=torch.float64) * 0.5 - 0.5).abs().max() < 0.04
    assert freq[3, :3].sum() == 1  # the isolated row still has partners


# --------------------------------------------------------------------------------- all graphs


GRAPHS = {
    "full": lambda: FullGraph(),
    "full_self_loops": lambda: FullGraph(self_loops=True),
    "knn": lambda: KNNGraph(torch.randn(30, 3), k=4),
    "label_kernel": lambda: LabelKernelGraph(torch.randn(30), bandwidth=0.3),
    "weighted": lambda: weighted_graph_without_self_loops(30),
}


def weighted_graph_without_self_loops(n):
    sources = torch.arange(n).repeat(2)
    targets = (sources + torch.randint(1, n, (2 * n,))) % n
    return WeightedGraph(torch.stack([sources, targets]), torch.rand(2 * n) + 0.1)


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("device", DEVICES)
def test_repeatable_dtype_and_device(name, device):
    torch.manual_seed(11)
    graph = GRAPHS[name]()
    assert isinstance(graph, Graph)
    anchors = torch.randint(30, (500,), device=device)
    torch.manual_seed(12)
    first = graph.sample(anchors, 30)
    torch.manual_seed(12)
    second = graph.sample(anchors, 30)
    assert torch.equal(first, second)
    assert first.dtype == torch.int64 and first.device == anchors.device and first.shape == (500,)
    assert ((first >= 0) & (first < 30)).all()
    if name != "full_self_loops":
        assert (first != anchors).all()
    torch.manual_seed(13)
    assert not torch.equal(first, graph.sample(anchors, 30))


@pytest.mark.parametrize("name", ["knn", "label_kernel", "weighted"])
@pytest.mark.parametrize("device", DEVICES)
def test_tables_copied_once_per_device(name, device):
    graph = GRAPHS[name]()
    anchors = torch.arange(30, device=device)
    graph.sample(anchors, 30)
    tables = graph._tables[anchors.device]
    graph.sample(anchors, 30)
    assert graph._tables[anchors.device] is tables
    assert all(table.device == anchors.device for table in tables)


@pytest.mark.parametrize("name", ["knn", "label_kernel", "weighted"])
def test_num_rows_mismatch(name):
    graph = GRAPHS[name]()
    assert graph.num_nodes == 30
    with pytest.raises(ValueError, match=r"built over the 30 training rows.*num_rows=31.*pyro\.plate\('data', 30"):
        graph.sample(torch.arange(4), 31)


# -------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: KNNGraph(torch.randn(5, 2), k=0), r"k must be an int with 1 <= k < N=5.*k=0"),
        (lambda: KNNGraph(torch.randn(5, 2), k=5), r"1 <= k < N=5.*k=5"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2.0), r"k must be an int.*k=2\.0"),
        (lambda: KNNGraph(torch.randn(5, 2), k=True), r"k must be an int.*k=True"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2, chunk_size=0), r"chunk_size must be None or an int >= 1"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2, standardize=1), r"standardize must be a bool"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2, method="ivf"), r"method must be 'auto', 'exact' or 'hnsw', got method='ivf'"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2, recall_target=0), r"recall_target must be a number in \(0, 1\], got recall_target=0"),
        (lambda: KNNGraph(torch.randn(5, 2), k=2, probes=0), r"probes must be an int >= 1, got probes=0"),
        (lambda: KNNGraph(torch.tensor([[1.0], [2.0], [math.nan], [3.0], [math.inf]]), k=1),
         r"features must be finite: 2 of 5 rows hold NaN or inf, the first is row 2"),
        (lambda: KNNGraph(torch.randn(1, 3), k=1), r"features must have shape .* N >= 2 rows.*\(1, 3\)"),
        (lambda: KNNGraph(torch.randn(2, 2, 2), k=1), r"features must have shape.*\(2, 2, 2\)"),
        (lambda: KNNGraph(torch.arange(6).reshape(3, 2), k=1), r"features must be a floating .*torch\.int64"),
        (lambda: KNNGraph([[0.0], [1.0]], k=1), r"features must be a floating tensor or numpy array.*list"),
        (lambda: LabelKernelGraph(torch.randn(5), bandwidth=0.0), r"bandwidth must be a finite number > 0.*0\.0"),
        (lambda: LabelKernelGraph(torch.randn(5), bandwidth=-1), r"bandwidth must be .* > 0.*-1"),
        (lambda: LabelKernelGraph(torch.randn(5), bandwidth=math.inf), r"bandwidth must be a finite"),
        (lambda: LabelKernelGraph(torch.tensor([0.0, math.nan, 1.0]), 1.0), r"labels must be finite: 1 of 3 .* row 1"),
        (lambda: LabelKernelGraph(torch.randn(100), 10.0, max_edges=1000), r"keeps more than max_edges=1000.*smaller bandwidth"),
        (lambda: WeightedGraph(torch.tensor([[0, 1], [1, 5]]), num_nodes=3), r"range\(num_nodes=3\), got node 5"),
        (lambda: WeightedGraph(torch.tensor([[0, -1], [1, 0]])), r"indices >= 0, got -1"),
        (lambda: WeightedGraph(torch.tensor([[0, 1, 3], [1, 0, 0]])), r"at least one out-edge.*1 have none: 2$"),
        (lambda: WeightedGraph(torch.tensor([[0, 1], [1, 0]]), num_nodes=9),
         r"range\(num_nodes=9\) needs at least one out-edge.*7 have none: 2, 3, 4, 5, 6, \.\.\."),
        (lambda: WeightedGraph(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 0.0])),
         r"weights must be finite and > 0: 1 of 2 are not, the first is weights\[1\]=0\.0"),
        (lambda: WeightedGraph(torch.tensor([[0, 1], [1, 0]]), torch.tensor([-2.0, math.nan])),
         r"2 of 2 are not, the first is weights\[0\]=-2\.0"),
        (lambda: WeightedGraph(torch.tensor([[0, 1], [1, 0]]), torch.ones(3)), r"weights must be a real tensor of shape \(E,\)=\(2,\)"),
        (lambda: WeightedGraph(torch.tensor([0, 1])), r"edges must be an integer tensor of shape \(2, E\).*\(2,\)"),
        (lambda: WeightedGraph(torch.tensor([[0.0, 1.0], [1.0, 0.0]])), r"edges must be an integer .*torch\.float32"),
        (lambda: WeightedGraph(torch.zeros(2, 0, dtype=torch.long)), r"E >= 1"),
        (lambda: FullGraph(self_loops="yes"), r"self_loops must be a bool"),
    ],
)
def test_bad_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_sample_arguments():
    with pytest.raises(ValueError, match=r"num_rows >= 2, got num_rows=1: a plate of one row cannot be paired"):
        FullGraph().sample(torch.tensor([0]), 1)
    with pytest.raises(ValueError, match=r"num_rows >= 1, got num_rows=0"):
        FullGraph(self_loops=True).sample(torch.tensor([], dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"anchors must be a LongTensor.*torch\.float32"):
        FullGraph().sample(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"num_rows must be an int, got num_rows=2\.0"):
        FullGraph().sample(torch.tensor([0, 1]), 2.0)


# ------------------------------------------------------------------ KNNGraph at scale (FAISS)


def brute_recall(x, rows, found, k):
    """Recall@k of ``found`` neighbours of ``rows``: float64 brute force, a tie counts as found."""
    x = torch.as_tensor(x, dtype=torch.float64)
    x = x / x.std(0, correction=0)
    dist = torch.cdist(x[rows], x).square()
    dist[torch.arange(len(rows)), rows] = math.inf
    kth = dist.sort(1).values[:, k - 1 : k]
    return float((dist.gather(1, found) <= kth).double().mean())


def test_knn_auto_is_exact_below_the_threshold():
    graph = KNNGraph(torch.randn(300, 3), k=5)
    assert (graph.method, graph.recall, graph.recall_probes, graph.probe_rows, graph.ef_search) == ("exact", 1.0, 0, None, None)
    assert repr(graph) == "KNNGraph(num_nodes=300, k=5)"


@pytest.mark.parametrize("method", ["hnsw", "auto"])
def test_knn_without_faiss_names_the_extra(method, monkeypatch):
    import pyro_probmix.graphs as graphs

    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    monkeypatch.setattr(graphs, "EXACT_MAX_ROWS", 20)  # so that "auto" needs FAISS at N=30
    needs = r"KNNGraph\(method='hnsw'\)" if method == "hnsw" else r"KNNGraph over N=30 > 20 rows .*method='exact'"
    with pytest.raises(ImportError, match=needs + r".* needs FAISS, an optional extra: pip install faiss-cpu \(or, in a checkout of pyro-probmix, pip install \"\.\[faiss\]\"\)"):
        KNNGraph(torch.randn(30, 3), k=2, method=method)
    assert KNNGraph(torch.randn(30, 3), k=2, method="exact").method == "exact"  # exact search needs no FAISS


def test_knn_hnsw_reports_its_measured_recall():
    pytest.importorskip("faiss")
    torch.manual_seed(14)
    x = torch.randn(3000, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0])
    state = torch.get_rng_state()
    graph = KNNGraph(x, k=5, method="hnsw", probes=800)
    assert torch.equal(torch.get_rng_state(), state)  # probe rows come from the graph's own generator
    assert graph.method == "hnsw" and graph.ef_search in (8, 12, 16, 24, 32, 48, 64, 128)
    assert graph.neighbors.shape == (3000, 5) and graph.neighbors.dtype == torch.int64
    assert (graph.neighbors != torch.arange(3000).unsqueeze(1)).all()
    assert graph.recall_probes == 800 and len(set(graph.probe_rows.tolist())) == 800
    assert graph.recall == pytest.approx(brute_recall(x, graph.probe_rows, graph.neighbors[graph.probe_rows], 5), abs=1e-12)
    assert graph.recall >= 0.99
    # over all rows, not only the probes: the probe estimate is within 4 standard errors
    everywhere = brute_recall(x, torch.arange(3000), graph.neighbors, 5)
    assert abs(everywhere - graph.recall) < 4 * math.sqrt(0.01 * 0.99 / 4000) + 1e-9
    assert repr(graph) == f"KNNGraph(num_nodes=3000, k=5, method='hnsw', recall={graph.recall:.4f})"
    partners = graph.sample(torch.arange(3000).repeat(3), 3000)
    assert (partners.view(3, 3000).T.unsqueeze(2) == graph.neighbors.unsqueeze(1)).any(2).all()


def test_knn_auto_uses_hnsw_above_the_threshold(monkeypatch):
    pytest.importorskip("faiss")
    import pyro_probmix.graphs as graphs

    monkeypatch.setattr(graphs, "EXACT_MAX_ROWS", 500)
    graph = KNNGraph(torch.randn(600, 2), k=3, probes=100)
    assert graph.method == "hnsw" and graph.recall_probes == 100


def test_knn_hnsw_warns_below_recall_target(monkeypatch):
    pytest.importorskip("faiss")
    import pyro_probmix.knn as knn

    monkeypatch.setattr(knn, "_EF_SEARCH_LADDER", (8,))
    torch.manual_seed(15)
    with pytest.warns(UserWarning, match=r"recall@5 0\.\d{4} < 1\.0000 \(recall_target=1\.0 plus two standard errors\) on 256 rows at its largest efSearch=8"):
        graph = KNNGraph(torch.randn(3000, 32), k=5, method="hnsw", recall_target=1.0, probes=200)
    assert graph.recall < 1.0


def test_knn_hnsw_searches_short_rows_exactly(monkeypatch):
    pytest.importorskip("faiss")
    import pyro_probmix.knn as knn

    search = knn._search

    def short_first_row(index, data, rows, k):  # FAISS returns -1 where it found fewer than k + 1
        found = search(index, data, rows, k)
        found[0, 1:] = -1
        return found

    monkeypatch.setattr(knn, "_search", short_first_row)
    torch.manual_seed(16)
    x = torch.randn(400, 3)
    graph = KNNGraph(x, k=4, method="hnsw", probes=50)
    assert (graph.neighbors >= 0).all()
    assert same_sets(graph.neighbors[:1], brute_knn(x, 4)[:1])


# ------------------------------------------------------------------------------ graphs of users
class _Returns(Graph):
    """A user's graph whose partners are given: for the checks of what ``_sample`` returns."""

    def __init__(self, partners):
        super().__init__()
        self.partners = partners

    def _sample(self, anchors, num_rows):
        return self.partners


@pytest.mark.parametrize(
    "partners, message",
    [
        (torch.tensor([1, -1, 0]), r"returned partner -1 \(of anchor 1\), outside range\(num_rows=3\)"),
        (torch.tensor([1, 3, 0]), r"returned partner 3 \(of anchor 1\), outside range\(num_rows=3\)"),
        (torch.tensor([1.0, 2.0, 0.0]), "must return an integer tensor of partner rows, got dtype torch.float32"),
        (torch.tensor([1, 2]), r"partners of shape \(2,\) for anchors of shape \(3,\)"),
        ([1, 2, 0], "must return an integer tensor of partner rows, got list"),
    ],
)
def test_a_users_graph_that_returns_bad_partners_is_named(partners, message):
    """A -1 for "no neighbour" selected the last row, silently (a probe: every partner became
    row 7 of 8 on the full batch)."""
    with pytest.raises(ValueError, match=message):
        _Returns(partners).sample(torch.arange(3), num_rows=3)
    assert _Returns(torch.tensor([1, 2, 0], dtype=torch.int32)).sample(torch.arange(3), 3).dtype == torch.long


def test_sample_among_takes_a_bool_mask_of_the_rows():
    for graph in (FullGraph(), KNNGraph(torch.arange(4.0), k=2), WeightedGraph(torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]))):
        with pytest.raises(ValueError, match=r"allowed must be a bool tensor of shape \(num_rows,\)=\(4,\), got dtype torch.int64"):
            graph.sample_among(torch.arange(4), 4, torch.tensor([1, 1, 0, 0]))


def test_weighted_graph_rows_whose_weights_sum_past_the_float_range_keep_their_ratios():
    """Two weights of 1e308 summed to inf and sent all of the row's probability to its last edge."""
    graph = WeightedGraph(torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]]), torch.tensor([1e308, 1e308, 1.0, 1.0], dtype=torch.float64))
    torch.manual_seed(0)
    counts = torch.bincount(graph.sample(torch.zeros(4000, dtype=torch.long), 3), minlength=3)
    assert counts[0] == 0 and abs(int(counts[1]) - 2000) < 150  # 150 is 4.7 sd of Binomial(4000, 1/2)


@pytest.mark.parametrize("bandwidth", [1e-300, 1e300])
def test_label_kernel_bandwidths_whose_square_leaves_the_float_range_are_refused(bandwidth):
    """1e-300 gave NaN weights (an error about weights the user never passed), 1e300 an
    OverflowError from Python's float power."""
    with pytest.raises(ValueError, match="bandwidth must be a finite number > 0 whose 2 h\\^2"):
        LabelKernelGraph(torch.tensor([0.0, 1.0, 2.0]), bandwidth=bandwidth)
