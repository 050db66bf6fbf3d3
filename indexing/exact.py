"""Exact (brute-force) inner-product top-k: the recall gate's retrieval, and the reference an ANN
index is measured against. A matrix product per block of queries; blocks are sized so the score
matrix stays within SCORES floats whatever the corpus."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Floats per block of scores (512 MB): each block reads every item vector once, so fewer, wider
# blocks ran 2,000 queries over 202k items ~25% faster than 128 MB ones on 2 cores.
SCORES = 1 << 27
# Consecutive items per group of the two-level top-k (_top_k). Top-100 of a 512 MB block on 2
# cores: over 1M items 0.11 s at 64 (0.14 at 32 and 128) against 0.35 s for torch.topk over
# whole rows; over 202k 0.26-0.29 s at 32-64 against 0.47-0.51 s.
GROUP = 64
# A block of whole rows holds at least WIDE queries, or the items go in chunks of CHUNK whose
# top-k merge. Over 1M items a block holds 134 queries, and a product that thin ran at 75
# GFLOP/s against 137 for 2,048 queries x 65,536 items (2 cores, AVX-512): top-100 of 10k random
# queries took 35-36 s whole and 25-27 s in chunks of 131,072; over 202k items (664 queries a
# block) 6.0-6.3 s whole and 7.1-9.3 s in chunks, the merges' cost with little to win.
WIDE = 256
CHUNK = 1 << 17


def top_k(
    query_vecs: np.ndarray, item_vecs: np.ndarray, k: int, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into item_vecs of the min(k, items) highest inner products per query, best
    first, and those products: two [queries, min(k, items)] arrays. On `device`: by default a
    GPU when torch sees one (the products and the top-k run there), else the CPU."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    k = min(k, len(item_vecs))
    items = torch.as_tensor(np.asarray(item_vecs, np.float32)).to(device)
    chunk = max(1, len(items) if SCORES // max(len(items), 1) >= WIDE else CHUNK)
    block = max(1, SCORES // chunk)
    rows, scores = [np.zeros((0, k), np.int64)], [np.zeros((0, k), np.float32)]
    # One score buffer for every block: a fresh 512 MB product per block spent as long on the
    # kernel faulting in zeroed pages as on the product (9.4k requests x 202k items: the
    # products took 7.1 s, then 3.7 s).
    buffer = torch.empty(min(block, len(query_vecs)), chunk, dtype=items.dtype, device=device)
    for lo in range(0, len(query_vecs), block):
        q = torch.as_tensor(np.asarray(query_vecs[lo : lo + block], np.float32)).to(device)
        values = torch.zeros(len(q), 0, dtype=items.dtype, device=device)
        indices = torch.zeros(len(q), 0, dtype=torch.int64, device=device)
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            product = torch.matmul(q, part.T, out=buffer[: len(q), : len(part)])
            v, i = _top_k(product, min(k, len(part)))
            if indices.shape[1]:  # the top k of both chunks' top k
                v, i = torch.cat([values, v], dim=1), torch.cat([indices, i + start], dim=1)
                top = v.topk(min(k, v.shape[1]), dim=1)
                v, i = top.values, i.gather(1, top.indices)
            values, indices = v, i
        rows.append(indices.cpu().numpy())
        scores.append(values.cpu().numpy())
    return np.concatenate(rows), np.concatenate(scores)


def _top_k(scores, k: int):
    """torch.topk(scores, k, dim=1) (values, indices; best first) in two levels: the maxima of
    each row's groups of GROUP consecutive entries, the k groups with the highest, then the
    top k of those groups' entries only. The same entries: a group outside the k highest has k
    groups above it whose maxima all beat its every entry, so none of its entries is in the top
    k. Torch's top-k reads a whole row per query; the maxima are one vectorised pass."""
    import torch

    n = scores.shape[1]
    whole = n // GROUP * GROUP  # the last n % GROUP entries join the candidates as they are
    if whole // GROUP <= k:
        return torch.topk(scores, k, dim=1)
    grouped = scores[:, :whole].view(len(scores), whole // GROUP, GROUP)
    best = grouped.amax(-1).topk(k, dim=1).indices  # [rows, k] groups
    within = torch.arange(GROUP, device=scores.device)
    candidates = grouped.gather(1, best[..., None].expand(-1, -1, GROUP)).flatten(1)
    columns = (best[..., None] * GROUP + within).flatten(1)
    if whole < n:
        tail = torch.arange(whole, n, device=scores.device).expand(len(scores), -1)
        candidates = torch.cat([candidates, scores[:, whole:]], dim=1)
        columns = torch.cat([columns, tail], dim=1)
    top = candidates.topk(k, dim=1)
    return top.values, columns.gather(1, top.indices)


def exact_top_k(
    query_vecs: np.ndarray, item_vecs: np.ndarray, item_ids: Sequence[str], k: int
) -> list[list[str]]:
    """Item ids of the k highest inner products per query, best first."""
    if len(item_ids) != len(item_vecs):
        raise ValueError(f"{len(item_ids)} item ids for {len(item_vecs)} item vectors")
    rows, _ = top_k(query_vecs, item_vecs, k)
    return [[item_ids[i] for i in row] for row in rows.tolist()]
