"""Per-request retrieval metrics, and their mean with a standard error.

Every metric returns one value per request, in request order, so callers can slice subsets and
compare methods request by request. A value of None means "not defined for this request" (recall
of a request with nothing relevant); mean_se leaves those out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def mean_se(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1 over sqrt(n)) of the defined values;
    the standard error is 0 below two values, the mean NaN with none."""
    xs = [v for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return math.nan, 0.0
    mean = sum(xs) / n
    if n < 2:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


def recall_at_k(
    retrieved: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int
) -> list[float | None]:
    """Share of a request's relevant items found in its top k; None when it has none relevant
    (it cannot be recalled or missed, so it must not pull the mean towards 0 or 1)."""
    _same_length(retrieved, relevant)
    out: list[float | None] = []
    for got, want in zip(retrieved, relevant):
        want = set(want)
        out.append(len(want & set(got[:k])) / len(want) if want else None)
    return out


def relevance_rate_at_k(
    retrieved: Sequence[Sequence[str]], grades: Sequence[dict[str, int]], k: int, good: int = 4
) -> list[float]:
    """Share of the top k whose grade is `good` (the paper's P_good). Unjudged items are not
    good, and the denominator is always k: returning fewer than k items counts the gap as misses."""
    _same_length(retrieved, grades)
    return [
        sum(1 for item in got[:k] if g.get(item) == good) / k for got, g in zip(retrieved, grades)
    ]


def ndcg_at_k(
    retrieved: Sequence[Sequence[str]], grades: Sequence[dict[str, int]], k: int
) -> list[float]:
    """nDCG@k with gain 2^(grade-1) - 1 (grade 1 and unjudged items gain 0) and a log2(rank+1)
    discount; the ideal ranks that query's judged items by grade. 0 when the ideal is 0."""
    _same_length(retrieved, grades)
    out = []
    for got, g in zip(retrieved, grades):
        dcg = _dcg([g.get(item, 0) for item in got[:k]])
        ideal = _dcg(sorted(g.values(), reverse=True)[:k])
        out.append(dcg / ideal if ideal > 0 else 0.0)
    return out


def _dcg(grades: Sequence[int]) -> float:
    return sum(_gain(g) / math.log2(rank + 1) for rank, g in enumerate(grades, start=1))


def _gain(grade: int) -> float:
    return 2.0 ** (grade - 1) - 1 if grade > 0 else 0.0


def _same_length(retrieved: Sequence, labels: Sequence) -> None:
    if len(retrieved) != len(labels):
        raise ValueError(f"{len(retrieved)} retrieved lists for {len(labels)} labelled requests")
