"""Embedding and k-means selection of pseudo inputs (METHOD.md §3).

Inputs (or, as in the reference, instruction + input: `embed_text="full_prompt"`) are embedded with a
sentence encoder and L2-normalised; k-means (scikit-learn, fixed seed) groups them, each cluster gets a
quota of round(memory · |cluster| / N), and the members nearest to their centroid are taken. The
selected rows come out as the reference's `kmeans_self.py` writes them: cluster by cluster, nearest to
the centroid first (the order the released "first 20 %" hardness rule picks from).

Rounding can miss `memory` by a few rows: `quota="reference"` keeps the plain rounding as the reference
does; `quota="exact"` settles the difference by largest remainder, so the quotas sum to min(memory, N).
"""
from __future__ import annotations

import importlib

import numpy as np

from .errors import SersError


def embedder_path(source: str, package: str | None, path: str | None) -> str:
    """Where the sentence encoder lives: a package that carries one, or a local path / hub id."""
    if source == "package":
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise SersError(f"embedder.package: Python package {package!r} is not installed") from None
        return str(module.get_model_path())
    if not path:
        raise SersError("embedder.path: required when embedder.source is 'path'")
    return path


EMBED_TEXTS = ("input", "full_prompt")


def text_to_embed(row: dict, embed_text: str) -> str:
    """What k-means sees of a row: its input, or its full prompt (instruction + input)."""
    if embed_text not in EMBED_TEXTS:
        raise SersError(f"selection.embed_text: {embed_text!r} is not one of {', '.join(EMBED_TEXTS)}")
    return row[embed_text]


def load_embedder(model_path: str, device: str = "cpu", max_seq_length: int | None = None):
    """The sentence encoder, reading up to `max_seq_length` tokens (capped at its position table):
    sentence-transformers' own default for MiniLM is 256, which cuts long inputs such as `pos`."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(model_path, device=device, trust_remote_code=False)
    if max_seq_length:
        positions = getattr(encoder[0].auto_model.config, "max_position_embeddings", max_seq_length)
        encoder.max_seq_length = min(max_seq_length, positions)
    return encoder


def embed_texts(encoder, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised sentence embeddings, float32 [N, D]."""
    if not texts:
        return np.zeros((0, encoder.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                         show_progress_bar=False)
    return emb.astype(np.float32)


QUOTAS = ("exact", "reference")


def cluster_quotas(sizes: list[int], memory: int, rule: str = "exact") -> list[int]:
    """round(memory·|c|/N) per cluster, capped by the cluster size; with rule "exact", fixed up to sum to
    min(memory, N); with "reference", left as rounded (Python's round, half to even, as the reference)."""
    if rule not in QUOTAS:
        raise SersError(f"selection.quota: {rule!r} is not one of {', '.join(QUOTAS)}")
    total = sum(sizes)
    target = min(memory, total)
    exact = [memory * s / total for s in sizes]
    quotas = [min(s, int(round(e))) for s, e in zip(sizes, exact)]
    if rule == "reference":
        return quotas
    # Settle rounding by largest remainder (add) or smallest remainder (remove), within cluster sizes.
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - quotas[i], reverse=True)
    while sum(quotas) < target:
        for i in by_remainder:
            if quotas[i] < sizes[i] and sum(quotas) < target:
                quotas[i] += 1
    while sum(quotas) > target:
        for i in reversed(by_remainder):
            if quotas[i] > 0 and sum(quotas) > target:
                quotas[i] -= 1
    return quotas


def select_by_kmeans(embeddings: np.ndarray, n_clusters: int, memory: int, seed: int,
                     quota: str = "exact") -> tuple[list[int], dict]:
    """Indices of the selected rows in cluster order, nearest to the centroid first, and a summary;
    keeps all rows (in file order) when there are ≤ memory."""
    n = len(embeddings)
    if n <= memory:
        return list(range(n)), {"n_input": n, "n_selected": n, "kept_all": True,
                                "note": f"{n} rows ≤ memory {memory}: all kept, no clustering"}
    k = min(n_clusters, n)
    from sklearn.cluster import KMeans  # here: the embed and filter jobs import this module too

    km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(embeddings)
    labels = km.labels_
    sizes = [int((labels == c).sum()) for c in range(k)]
    quotas = cluster_quotas(sizes, memory, quota)
    chosen: list[int] = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        dist = np.linalg.norm(embeddings[members] - km.cluster_centers_[c], axis=1)
        nearest = members[np.lexsort((members, dist))][: quotas[c]]  # ties broken by index
        chosen.extend(int(i) for i in nearest)
    return chosen, {"n_input": n, "n_selected": len(chosen), "kept_all": False, "n_clusters": k,
                    "cluster_sizes": sizes, "quotas": quotas, "quota_rule": quota}
