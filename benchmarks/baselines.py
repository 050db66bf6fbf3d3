"""Baselines measured in the same run as the stages, each in its own process (benchmarks.child):
the machine's matrix-multiply FLOP/s, exact search over the very vectors of the live collection,
the item encoder split into its Python and its matrix parts, training from scratch on all
history, the sequence lengths training really computes over, and serving latency."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from ebr.settings import Settings


def matmul_flops(
    training_threads: int = 1, n: int = 1024, windows: int = 12, window_s: float = 0.25
) -> dict:
    """float32 n x n matrix products on torch's default threads, timed in short windows: the
    best window is the machine's limit the encoder and training are compared with (a square
    product of this size is BLAS at its best; on a shared CPU the other windows lose time to
    other processes), the median what this run typically got. The same for bfloat16 under
    "bfloat16": the limit of training that runs its towers in it (ModelConfig.precision). Both
    again under "training_threads" on as many threads as training takes (ModelConfig.threads):
    the limit of the cores it runs on."""
    import torch

    def rates(dtype: torch.dtype) -> dict:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up: thread pool and caches
        seen = []
        for _ in range(windows):
            done, tick = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - tick) < window_s:
                a @ b
                done += 1
            seen.append(2 * n**3 * done / elapsed)
        return {"flops_per_s": max(seen), "median_flops_per_s": float(np.median(seen))}

    def measured() -> dict:
        return {
            **rates(torch.float32),
            "bfloat16": rates(torch.bfloat16),
            "n": n,
            "threads": torch.get_num_threads(),
        }

    out = measured()
    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads)
    try:
        out["training_threads"] = measured()
    finally:
        torch.set_num_threads(threads)
    return out


def _live(settings: Settings):
    """(the live collection's info, the artifact that built it)."""
    from indexing import store
    from training.artifact import load_artifact

    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
    if current is None:
        raise LookupError("no live collection: no day was promoted")
    return current, load_artifact(settings.models / f"v{current.model_version}")


def ann_vs_exact(settings: Settings, queries: int, k: int = 100) -> dict:
    """The live collection's ANN search (store.search: the index and ef the gate uses) against
    exact inner-product top-k by a torch matrix product over the vectors stored in it, for the
    first `queries` held-out requests of its day."""
    import torch

    from indexing import store
    from indexing.gate import read_eval

    current, artifact = _live(settings)
    requests = read_eval(current.ds, settings).slice(0, queries)
    vectors = artifact.encode_requests(requests)
    with store.connect(settings) as client:
        store.search_ids(client, current.name, vectors[:1], k)  # loads, warms the measured path
        ids, corpus = _stored_vectors(client, current.name)
        tick = time.perf_counter()
        ann = store.search_ids(client, current.name, vectors, k)
        ann_s = time.perf_counter() - tick
    tick = time.perf_counter()
    top = []
    # The stored vectors as stored (one wider, store.item_side) against the queries as searched.
    matrix, q = torch.from_numpy(corpus), torch.from_numpy(store.query_side(vectors))
    for i in range(0, len(q), 256):  # [256, N] scores at a time: bounded memory at 1M items
        top.append((q[i : i + 256] @ matrix.T).topk(min(k, len(ids)), dim=1).indices.numpy())
    exact_s = time.perf_counter() - tick
    exact = [[ids[j] for j in row] for row in np.concatenate(top)]
    recall = float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(ann, exact)]))
    return {
        "k": k,
        "queries": len(vectors),
        "corpus": len(ids),
        "recall": recall,
        "ann_queries_per_s": len(vectors) / ann_s,
        "exact_queries_per_s": len(vectors) / exact_s,
        "index": store.HNSW,
        "ef": store.ef(k),
    }


def _stored_vectors(client, name: str) -> tuple[list[str], np.ndarray]:
    ids, parts = [], []
    iterator = client.query_iterator(name, batch_size=16384, output_fields=["item_id", "embedding"])
    while rows := iterator.next():
        ids += [r["item_id"] for r in rows]
        parts.append(np.asarray([r["embedding"] for r in rows], dtype=np.float32))
    iterator.close()
    return ids, np.concatenate(parts)


def encoding_split(settings: Settings, sample: int) -> dict:
    """The item encoder on `sample` corpus rows of the live day, in its two parts: turning rows
    into id lists (Python: tokenising titles, vocabulary look-ups) and the tower's forward pass
    (torch), with the forward FLOPs per item to compare the latter with the machine's limit."""
    import torch

    from ebr import warehouse
    from training import features

    current, artifact = _live(settings)
    table = warehouse.query(
        settings,
        "select item_id, title from mart_item_corpus "
        "where ds = cast(? as date) order by item_id limit ?",
        [current.ds, sample],
    )
    tick = time.perf_counter()
    rows = features.items(table, artifact.vocabs, artifact.config, grow=False)
    featurise_s = time.perf_counter() - tick
    batches = [rows.batch(range(i, min(i + 1024, len(rows)))) for i in range(0, len(rows), 1024)]
    tick = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            artifact.model.item_tower(batch)
    forward_s = time.perf_counter() - tick
    d, title = artifact.dim, len(rows.title.values) / len(rows)
    # item-id row + tanh(W mean(title words)): the pooling adds, the d x d projection, the sum
    flops = title * d + 2 * d * d + d
    return {
        "items": len(rows),
        "featurise_items_per_s": len(rows) / featurise_s,
        "forward_items_per_s": len(rows) / forward_s,
        "flops_per_item": flops,
        "title_words": title,
    }


def padded_lengths(ds: str, settings: Settings, sample: int) -> dict:
    """Mean padded length of each sequence the model reads in training, as training batches
    them (training.train.batches: batches of batch_size rows, a request's clicks together, its
    lists read once and padded to the batch's longest request; titles are not padded: their mean
    length; the behaviour lists rt and st padded as model._by_length runs them, with their mean
    squares), and the requests per row in a batch, over `sample` of the day's examples spread
    over the day and an epoch's title queries (training.train.training_rows): the lengths
    training/flops.py counts FLOPs with, per row trained."""
    import torch

    from training import features
    from training.train import _read_day, batches, epoch_rows, training_rows
    from training.vocab import Vocabs

    from .steps import spread

    cfg, gen = settings.model, torch.Generator().manual_seed(0)
    examples, corpus = _read_day(settings.warehouse, ds)
    examples = spread(examples, sample)
    rows, request_of, round_of = training_rows(examples, corpus, cfg, settings.seed)
    vocabs = Vocabs()
    clicked = features.clicked(rows, vocabs, grow=True)
    items = features.items(corpus, vocabs, cfg, grow=True)
    requests = features.by_request(rows, request_of, vocabs, cfg, grow=True)
    positives = features.positives(rows, clicked, items)
    epoch = epoch_rows(round_of, examples.num_rows, 0)
    cut = batches(epoch, request_of, cfg.batch_size, gen)
    shapes, titles = [], []
    for idx in [b for b in cut if len(b) == cfg.batch_size] or cut[:1]:
        asked = np.unique(request_of[idx])
        b = requests.batch(asked)
        shapes.append(
            {
                "words": b.words.shape[1],
                "char1": b.char1.shape[1],
                "char2": b.char2.shape[1],
                "past": b.past.shape[1],
                "past_words": b.past.shape[2],
                **_grouped("rt", b.rt),
                **_grouped("st", b.st),
                "lt": b.lt.shape[3],
                "requests": len(asked) / len(idx),
            }
        )
        negatives = torch.randint(
            len(items), (min(cfg.sampled_negatives, len(items)),), generator=gen
        )
        # per example: its positive's title and its share of the batch's negatives' titles
        share = cfg.sampled_negatives / cfg.batch_size
        titles.append(
            (
                len(positives.batch(idx).words) / len(idx)
                + share * len(items.batch(negatives.numpy()).words) / len(negatives)
            )
            / (1 + share)
        )
    lengths = {key: float(np.mean([s[key] for s in shapes])) for key in shapes[0]}
    return {
        **lengths,
        "title": float(np.mean(titles)),
        "examples": examples.num_rows,
        "title_queries": len(epoch) - examples.num_rows,  # an epoch's
    }


def _grouped(name: str, ids) -> dict:
    """The mean and mean square of the positions each row of a behaviour list runs at: its
    length group's longest (model._by_length), 0 for a row without history, which is not run."""
    from training.model import _length_groups
    from training.vocab import PAD

    lengths = (ids != PAD).sum(1).numpy()
    runs = np.zeros(len(lengths))
    for group in _length_groups(lengths):
        runs[group] = lengths[group[-1]]
    return {name: float(runs.mean()), f"{name}_sq": float((runs**2).mean())}


def scratch_training(days: list[str], settings: Settings, sample: int | None) -> dict:
    """Training from scratch on every day so far (`sample` examples of each day when set, as
    the train stage took them), what a daily retrain without warm start would cost, against the
    train stage's one day."""
    from training.train import _read_day, train

    from .steps import spread

    parts, corpus = [], None
    for ds in days:
        examples, corpus = _read_day(settings.warehouse, ds)
        parts.append(spread(examples, sample))
    examples = pa.concat_tables(parts)
    tick = time.perf_counter()
    metrics = train(examples, corpus, settings.model, None, settings.seed).metrics
    return {
        "days": len(days),
        "examples": metrics["examples"],
        "epochs": metrics["epochs"],
        "examples_per_s": metrics["examples_per_s"],
        "seconds": time.perf_counter() - tick,
    }


def search_latency(settings: Settings, single: int, batch: int, batches: int, k: int) -> dict:
    """RetrievalClient latency on held-out requests of the live day: one query per call (user
    behaviour read from the warehouse, query encoded, alias searched), and `batch` requests per
    call (behaviour carried by the requests, as mart_eval_examples rows)."""
    from ebr.client import RetrievalClient
    from indexing.gate import read_eval

    current, _ = _live(settings)
    client = RetrievalClient(settings)
    requests = read_eval(current.ds, settings)
    users, queries = requests.column("user_id").to_pylist(), requests.column("query").to_pylist()
    client.search(queries[0], user_id=users[0], k=k)  # warm-up: model load, collection load
    one = []
    for j in range(min(single, len(users))):
        tick = time.perf_counter()
        client.search(queries[j], user_id=users[j], k=k)
        one.append(time.perf_counter() - tick)
    many, served = [], 0
    for j in range(batches):
        rows = requests.slice((j * batch) % max(1, len(users) - batch), batch)
        tick = time.perf_counter()
        client.search_requests(rows, k=k)
        many.append(time.perf_counter() - tick)
        served += rows.num_rows
    one_ms, many_ms = 1000 * np.asarray(one), 1000 * np.asarray(many)
    return {
        "k": k,
        "single": {
            "calls": len(one),
            "p50_ms": float(np.percentile(one_ms, 50)),
            "p99_ms": float(np.percentile(one_ms, 99)),
        },
        "batched": {
            "calls": len(many),
            "batch": min(batch, len(users)),
            "p50_ms": float(np.percentile(many_ms, 50)),
            "p99_ms": float(np.percentile(many_ms, 99)),
            "queries_per_s": served / sum(many),
        },
    }
