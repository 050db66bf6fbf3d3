"""Daily training: one day of mart_training_examples -> a new model version.

`train` is pure (in-memory tables in, unsaved Artifact out) so tests and benchmarks can call it;
`train_day` reads the warehouse, warm-starts from the previous artifact and saves models/vN.
"""

from __future__ import annotations

import copy
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ebr.settings import ModelConfig, Settings
from ebr.warehouse import reading
from indexing import exact

from . import features
from .artifact import Artifact, load_artifact
from .lexicon import vectors
from .model import MGDSPR, grow_from, retrieval_loss
from .optim import optimisers
from .title_queries import title_queries
from .vocab import PAD, UNK, Vocabs
from .workers import Group, join, started

# Every line names the stage, and the day when train_day runs it (logs are read per day and stage).
_CONTEXT: ContextVar[str] = ContextVar("training_log_context", default="stage=train")


class _InContext(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"{_CONTEXT.get()} {msg}", kwargs


log = _InContext(logging.getLogger(__name__))

ENCODE_BATCH = 1024  # rows per forward pass when encoding for validation (no gradients kept)
# Pretrained word rows (cfg.word_init "minilm") are this many times as long as the random rows
# they replace, so that the first clicks do not wash their directions out: CrowdFlower held-out
# relevance@10 was 0.36 at 1x, 0.45 at 4x, 0.42 at 10x and 0.44 at 25x (standard error 0.033).
PRETRAINED_WORD_SCALE = 4.0


def train(
    examples,
    corpus,
    cfg: ModelConfig,
    base: Artifact | None = None,
    seed: int = 0,
    validation=None,
    log_every: int = 50,
    device: str | None = None,
) -> Artifact:
    """Train on examples (mart_training_examples rows, oldest first) with negatives sampled from
    corpus (mart_item_corpus rows); warm-start from base when given. Returns an unsaved Artifact.

    Early stopping: after each epoch, Recall@cfg.validation_k of the validation rows (the
    training-example columns) over the corpus; training stops after cfg.patience epochs without
    improvement and the artifact holds the best epoch's weights. Without `validation`, the newest
    cfg.validation_share of examples is held out (when that is at least cfg.min_validation rows).

    device: the torch device to train on; by default cuda when torch sees one, else cpu.
    cfg.workers > 1 on a CPU trains on that many processes (training.workers), this one rank 0.
    """
    if len(examples) == 0 or len(corpus) == 0:
        raise ValueError(f"nothing to train on: {len(examples)} examples, {len(corpus)} items")
    examples = _arrow(examples)
    if validation is None:
        examples, validation = _hold_out(examples, cfg)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    args = (examples, corpus, cfg, base, seed, validation, log_every, device)
    if cfg.workers == 1 or device != "cpu":
        return _on_threads(cfg, device, _train, *args)
    with started(cfg.workers, args[:5]) as group:
        return _on_threads(cfg, device, _train, *args, group)


def _rank(store: str, rank: int, size: int, examples, corpus, cfg, base, seed) -> None:
    """A training rank after the first (training.rank): it trains its share and validates
    nothing; rank 0 returns the model."""
    group = join(store, rank, size)
    try:
        _on_threads(cfg, "cpu", _train, examples, corpus, cfg, base, seed, None, 0, "cpu", group)
    finally:
        torch.distributed.destroy_process_group()


def _on_threads(cfg: ModelConfig, device: str, fn, *args):
    """fn(*args) on cfg.threads intra-op threads, deterministic on a CPU; the caller's settings
    back after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    try:
        # A rerun of a day must train the same model. On more than one CPU thread some kernels
        # sum in whichever order the threads finish: 2-thread runs of the same 6,000 medium
        # examples ended at a different model each time, and at one with this on, at 0.8-0.9x
        # the examples/s (772-773 against 865-957); on one thread it changes neither (585-609
        # against 557-592). Not on a GPU: there it needs CUBLAS_WORKSPACE_CONFIG.
        torch.use_deterministic_algorithms(deterministic or torch.device(device).type == "cpu")
        return fn(*args)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(
    examples, corpus, cfg, base, seed, validation, log_every, device, group: Group | None = None
) -> Artifact:
    examples, request_of, round_of = training_rows(examples, corpus, cfg, seed)
    clicks = len(examples) - len(round_of)
    torch.manual_seed(seed)  # model init
    gen = torch.Generator().manual_seed(seed)  # shuffling, negatives, mixing weights

    # The day's new ids and tokens are appended to the base vocabularies (a copy: base stays valid).
    vocabs = copy.deepcopy(base.vocabs) if base else Vocabs()
    # Clicked items first: with cfg.item_ids "clicked" they are the ones the corpus finds ids for.
    # Title queries' items grow the vocabulary only as the corpus does: an item no one clicked
    # keeps no id row then (PAD), and its title queries train its title alone.
    real = features.clicked(examples.slice(0, clicks), vocabs, grow=True)
    titled = features.clicked(examples.slice(clicks), vocabs, grow=cfg.item_ids == "corpus")
    clicked = np.concatenate([real, np.where(titled == UNK, PAD, titled)])
    items = features.items(corpus, vocabs, cfg, grow=True)
    requests = features.by_request(examples, request_of, vocabs, cfg, grow=True)
    if cfg.item_ids == "clicked":
        # The behaviour sequences' items gained id rows after the corpus was read: read it again,
        # so that training reaches the rows inference will add to those items' titles.
        items = features.items(corpus, vocabs, cfg, grow=False)
    positives = features.positives(examples, clicked, items)
    pos_keys, item_keys = _identities(positives, items)
    # Validation rows are read like inference requests: they never grow the vocabularies.
    has_validation = validation is not None and len(validation) > 0
    held_out = _Validation.of(validation, items, vocabs, cfg) if has_validation else None

    model = MGDSPR(cfg, vocabs.sizes())
    if base:
        grow_from(model, base.model.state_dict())
    if cfg.word_init == "minilm":
        _pretrained_words(model, vocabs.word.tokens, len(base.vocabs.word) if base else UNK + 1)
    model.to(device).train()
    if group is not None:
        group.same_start(model)
    opts = optimisers(model, cfg.lr)
    arithmetic = precision(cfg, device)
    per_epoch = [epoch_rows(round_of, clicks, e) for e in range(cfg.epochs)]
    log.info(
        "training on %d examples + %d title queries an epoch (%d held out), %d items, "
        "%d parameters, %s, %s",
        clicks,
        len(per_epoch[0]) - clicks,
        len(held_out) if held_out else 0,
        len(items),
        _params(model),
        device,
        arithmetic,
    )

    steps = _StepLog(log_every)
    losses, recalls, best, best_state = [], [], None, None  # best: index into recalls
    start, train_seconds = time.perf_counter(), 0.0
    for epoch in range(cfg.epochs):
        tick = time.perf_counter()
        losses.append(
            _epoch(
                model,
                opts,
                requests,
                request_of,
                per_epoch[epoch],
                positives,
                items,
                (pos_keys, item_keys),
                cfg,
                gen,
                device,
                getattr(torch, arithmetic),
                steps,
                group,
            )
        )
        epoch_seconds = time.perf_counter() - tick
        train_seconds += epoch_seconds
        recall = held_out.recall(model, items, cfg.validation_k, device) if held_out else None
        log.info(
            "epoch %d/%d loss %.4f validation recall@%d %s %.0f examples/s %.1f s elapsed",
            epoch + 1,
            cfg.epochs,
            losses[-1],
            cfg.validation_k,
            "-" if recall is None else f"{recall:.4f}",
            clicks / epoch_seconds,
            time.perf_counter() - start,
        )
        stop = False
        if recall is not None:
            recalls.append(recall)
            if best is None or recall > recalls[best]:
                best = epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best >= cfg.patience:
                log.info(
                    "early stop: no validation gain for %d epochs, keeping epoch %d",
                    epoch - best,
                    best + 1,
                )
                stop = True
        if stop if group is None else group.from_first(stop):
            break
    if group is not None:
        group.check_equal(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - start

    metrics = {
        "loss_per_epoch": losses,
        "examples": clicks,  # the day's training rows, without the title queries
        "title_queries": len(per_epoch[0]) - clicks,  # an epoch
        "epochs": len(losses),  # run, at most cfg.epochs
        # The day's examples per second of training: title queries are work on top of them.
        "examples_per_s": clicks * len(losses) / train_seconds if train_seconds > 0 else 0.0,
        # Every row trained per second, title queries too: the work the towers did.
        "rows_per_s": sum(map(len, per_epoch[: len(losses)])) / train_seconds
        if train_seconds > 0
        else 0.0,
        "seconds": seconds,
        "params": _params(model),
        "precision": arithmetic,  # the towers' arithmetic while training (cfg.precision resolved)
        "workers": 1 if group is None else group.size,  # processes that trained (cfg.workers)
        "vocab_sizes": vocabs.sizes(),
        "validation_examples": len(held_out) if held_out else 0,
        "validation_recall_per_epoch": recalls,  # Recall@cfg.validation_k; empty without validation
        # The epoch whose weights are returned, counted from 1 as in the log; None without
        # validation (the last epoch's weights are returned then).
        "best_epoch": None if best is None else best + 1,
        "stopped_early": len(losses) < cfg.epochs,
    }
    meta = {"version": 0, "ds": "", "parent": base.version if base else None, "metrics": metrics}
    return Artifact(model.cpu().eval(), vocabs, cfg, meta)


def training_rows(examples, corpus, cfg: ModelConfig, seed: int):
    """(rows, request_of, round_of): the examples (oldest first, with request_id), then
    cfg.epochs rounds of title queries (training.title_queries); each row's request, a request's
    clicks sharing one (its features read and its user tower run once, `_epoch`) and each title
    query a request of its own; and each title query's epoch."""
    examples = _arrow(examples)
    asked = features.request_index(examples)
    if cfg.title_queries == 0:
        return examples, asked, np.zeros(0, np.int64)
    rows, round_of = title_queries(examples, _arrow(corpus), cfg.title_queries, seed, cfg.epochs)
    titles = asked.max(initial=-1) + 1 + np.arange(len(round_of))
    return rows, np.concatenate([asked, titles]), round_of


def epoch_rows(round_of: np.ndarray, clicks: int, epoch: int) -> np.ndarray:
    """The rows epoch trains: every click and that epoch's round of title queries."""
    return np.concatenate([np.arange(clicks), clicks + np.flatnonzero(round_of == epoch)])


def _epoch(
    model: MGDSPR,
    opts: list[torch.optim.Optimizer],
    requests: features.Requests,
    request_of: np.ndarray,
    rows: np.ndarray,
    positives: features.Items,
    items: features.Items,
    keys: tuple[np.ndarray, np.ndarray],
    cfg: ModelConfig,
    gen: torch.Generator,
    device: str,
    dtype: torch.dtype,
    steps: _StepLog,
    group: Group | None = None,
) -> float:
    """One pass over the rows (positives, and their requests by request_of) in batches of
    `batches`; returns the mean training loss. keys: the positives' and the corpus items'
    identities (`_identities`). With a group, this rank trains its share of every batch against
    a pool of the whole batch's positives (`Group.whole`); every draw (gen's, and the
    Transformer unit's from torch's) is the whole batch's, on every rank alike, so the ranks
    train the model one process does."""
    n, n_neg = len(rows), min(cfg.sampled_negatives, len(items))
    log_q = None
    if cfg.loss == "softmax" and cfg.sampling_correction == "log_q":
        log_q = pool_log_q(
            keys[0][rows],
            max(keys[0].max(), keys[1].max()) + 1,
            min(cfg.batch_size, n),
            n_neg,
            len(items),
        ).to(device)
    total = 0.0
    for batch in batches(rows, request_of, cfg.batch_size, gen):
        sampled = torch.randint(len(items), (n_neg,), generator=gen).tolist()
        asked = np.unique(request_of[batch])
        # Without personalisation the tower reads no user id: dropping one would only move the
        # generator, and with it every later draw.
        dropped = asked[:0]
        if cfg.user_id_dropout > 0 and cfg.personalised:
            dropped = asked[(torch.rand(len(asked), generator=gen) < cfg.user_id_dropout).numpy()]
        share, weight = (slice(0, len(batch)), 1.0) if group is None else group.share(len(batch))
        idx = batch[share]
        mine, row_request = np.unique(request_of[idx], return_inverse=True)
        # The Transformer unit's dropout drawn for all the batch's requests, as one process does.
        kept = None if group is None else model.unit_kept(len(asked))
        if kept is not None:
            kept = kept[np.searchsorted(asked, mine)]
        req = requests.batch(mine)
        req.user[torch.from_numpy(np.isin(mine, dropped))] = UNK
        req = req.to(device)
        row_request_t = torch.from_numpy(row_request).to(device)
        pos = positives.batch(idx).to(device)
        neg = items.batch(sampled).to(device)
        pos_keys = torch.from_numpy(keys[0][batch]).to(device)
        neg_keys = torch.from_numpy(keys[1][sampled]).to(device)
        pos_dropped = _dropped(len(batch), cfg.item_id_dropout, gen)[share]
        neg_dropped = _dropped(n_neg, cfg.item_id_dropout, gen)
        # The towers' forward (and so their backward) in `dtype`'s arithmetic: see precision().
        with torch.autocast(torch.device(device).type, dtype, enabled=dtype != torch.float32):
            pos_vecs = model.item_tower(_drop_ids(pos, pos_dropped))
            neg_vecs = model.item_tower(_drop_ids(neg, neg_dropped))
            # Gathered before the user tower, whose cost differs between the ranks' shares: the
            # ranks meet here after equal work, and the gather's backward runs after the user
            # tower's (autograd takes the newest nodes first), so they wait for each other once
            # a step (10,000 medium examples, 2 ranks: rank 0 spent 0.27 s in this gather, and
            # 0.46 s in one placed after the user tower).
            if group is not None:  # in float32, as the loss reads them
                pos_vecs = group.whole(pos_vecs.float(), len(batch))
            user = model.user_tower(req, kept)[row_request_t]  # once per request, then per row
        # The loss in float32: bfloat16 keeps 8 bits of mantissa, so logits near 30 would be
        # rounded to 0.25, coarser than the gaps between hard negatives.
        loss = retrieval_loss(
            user.float(),
            pos_vecs.float(),
            pos_keys,
            neg_vecs.float(),
            neg_keys,
            cfg,
            gen,
            None if log_q is None else log_q[torch.cat([pos_keys, neg_keys])],
            torch.from_numpy(request_of[batch]).to(device),
            share.start,
        )
        _step(model, opts, loss * weight, group)
        value = loss.item()
        total += value * len(batch) * weight
        steps.add(value, len(batch))
    return (total if group is None else group.total(total)) / n


def _step(model, opts, loss: torch.Tensor, group: Group | None) -> None:
    """One optimiser step on loss's gradient, summed over the group's ranks when there is one."""
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if group is not None:
        group.sum_gradients(model)
    for opt in opts:
        opt.step()


def batches(
    rows: np.ndarray, request_of: np.ndarray, size: int, gen: torch.Generator
) -> list[np.ndarray]:
    """rows cut into batches of `size` after shuffling their requests (request_of[row]): a
    request's rows stay together, so a batch runs the user tower once for each of its requests
    (medium synthetic day 30: 97,752 clicks of 49,143 requests), and only a request cut by a
    batch's end runs twice."""
    distinct, at = np.unique(request_of[rows], return_inverse=True)
    rank = np.empty(len(distinct), np.int64)
    rank[torch.randperm(len(distinct), generator=gen).numpy()] = np.arange(len(distinct))
    order = rows[np.argsort(rank[at], kind="stable")]
    return [order[i : i + size] for i in range(0, len(order), size)]


def precision(cfg: ModelConfig, device: str) -> str:
    """cfg.precision with "auto" resolved for device: bfloat16 where its matrix units take it.
    bfloat16 asked for on a CPU without bfloat16 kernels is refused by name: oneDNN has no LSTM
    for it there ("could not create a primitive descriptor"), and its products would be
    emulated (0.9 GFLOP/s on an AVX2-only AMD EPYC, against 139 in float32)."""
    kind = torch.device(device).type
    if cfg.precision == "bfloat16" and kind == "cpu" and not cpu_has_bfloat16():
        raise ValueError(
            "ModelConfig.precision 'bfloat16' (EBR_PRECISION) needs a CPU with bfloat16 kernels "
            f"(AVX-512 BF16 or AMX); this one runs {torch.backends.cpu.get_cpu_capability()}: "
            "set 'auto' or 'float32'"
        )
    if cfg.precision != "auto":
        return cfg.precision
    if kind == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = bool(torch.cpu.get_capabilities().get("amx_bf16"))
    return "bfloat16" if native else "float32"


def cpu_has_bfloat16() -> bool:
    """Whether torch's oneDNN has bfloat16 kernels on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pool_log_q(
    positives: np.ndarray, keys: int, batch: int, sampled: int, corpus: int
) -> torch.Tensor:
    """[keys]: the log of each item's expected count in a step's softmax pool, for
    cfg.sampling_correction "log_q", by item identity (`_identities`: positives are their keys;
    not by id row, which items without one share). The pool is the batch's positives, drawn
    from the epoch's, and `sampled` uniform draws from the corpus: an item is in it
    batch * its share of the positives + sampled / corpus times."""
    counts = np.bincount(positives, minlength=keys).astype(np.float64)
    return torch.from_numpy(np.log(batch * counts / len(positives) + sampled / corpus)).float()


def _identities(positives: features.Items, items: features.Items) -> tuple[np.ndarray, np.ndarray]:
    """One integer per item_id for the positives and the corpus items, equal where their item_id
    is: the loss finds copies of a row's own item in its pool by these, not by id rows, which
    the items without one (PAD) share."""
    keys = pa.chunked_array([items.keys, positives.keys.cast(pa.string())], pa.string())
    codes = keys.combine_chunks().dictionary_encode().indices.to_numpy().astype(np.int64)
    return codes[len(items) :], codes[: len(items)]


def _dropped(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Which of n items lose their id row, each with probability p (no draw when p is 0)."""
    if p == 0:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=gen) < p


def _drop_ids(batch: features.ItemBatch, dropped: torch.Tensor) -> features.ItemBatch:
    """The batch with its `dropped` id rows replaced by PAD (zero, no gradient): those items are
    scored by their titles alone, as cold items are. The loss still tells items apart by their
    identities (`_identities`)."""
    if not dropped.any():
        return batch
    return replace(batch, item=batch.item.masked_fill(dropped.to(batch.item.device), PAD))


class _StepLog:
    """The periodic step line: mean loss and throughput over the last log_every steps, in rows
    (examples and title queries alike: a step does not tell them apart)."""

    def __init__(self, log_every: int):
        self.log_every, self.step = log_every, 0
        self.losses: list[float] = []
        self.tick, self.seen = time.perf_counter(), 0

    def add(self, loss: float, examples: int) -> None:
        self.step, self.seen = self.step + 1, self.seen + examples
        self.losses.append(loss)
        if self.log_every and self.step % self.log_every == 0:  # 0: a rank that logs no steps
            now = time.perf_counter()
            log.info(
                "step %d loss %.4f %.0f rows/s",
                self.step,
                sum(self.losses) / len(self.losses),
                self.seen / (now - self.tick),
            )
            self.tick, self.seen, self.losses = now, 0, []


@dataclass
class _Validation:
    """Held-out rows: their requests (each once, however many of its clicks are held out), each
    row's request among them, and the corpus row of each row's item (-1 when not in the
    corpus)."""

    requests: features.Requests
    asked: np.ndarray  # [V] each row's request
    targets: torch.Tensor  # [V]

    @classmethod
    def of(cls, table, corpus: features.Items, vocabs: Vocabs, cfg: ModelConfig) -> _Validation:
        table = _arrow(table)
        asked = features.request_index(table)
        requests = features.by_request(table, asked, vocabs, cfg, grow=False)
        return cls(requests, asked, torch.from_numpy(features.corpus_rows(table, corpus)))

    def __len__(self) -> int:
        return len(self.targets)

    def recall(self, model: MGDSPR, items: features.Items, k: int, device: str) -> float:
        """Exact Recall@k: the share of rows whose item is among the k corpus items with the
        highest inner product with their request's user. Items outside the corpus are misses."""
        model.eval()
        with torch.no_grad():
            corpus = _encode_items(model, items, device)  # [N, d]
            order = self.requests.by_length()  # a count of hits: any order gives the same
            users = _encoded(model.user_tower, self.requests, order, device)
            # The gate's exact search, whose blocks bound the scores whatever the corpus: a
            # batch of 1,024 users against the large profile's million items had been a 4 GiB
            # score matrix, and the training stage's peak (8.5 GiB against the 8 GiB target).
            top, _ = exact.top_k(users.cpu().numpy(), corpus.cpu().numpy(), k, device)
        model.train()
        at = np.argsort(order)[self.asked]  # each row's request's place in `order`
        targets = self.targets.numpy()  # -1 (not in the corpus) never hits
        return int((top[at] == targets[:, None]).any(1).sum()) / len(self)


def _encode_items(model: MGDSPR, items: features.Items, device: str) -> torch.Tensor:
    return _encoded(model.item_tower, items, range(len(items)), device)


def _encoded(tower, table: features.Items | features.Requests, rows, device: str) -> torch.Tensor:
    """tower over table's rows (in that order), ENCODE_BATCH at a time."""
    return torch.cat(
        [
            tower(table.batch(rows[i : i + ENCODE_BATCH]).to(device))
            for i in range(0, len(rows), ENCODE_BATCH)
        ]
    )


def carry_over(previous, held: int, examples, evening=None) -> pa.Table:
    """examples after the newest `held` rows of previous and then evening: the rows a model
    trained on previous held out for early stopping (its metrics["validation_examples"]), and
    the requests of its day after eval_start_hour (mart_eval_examples, `_read_evening`), which
    the gate and the canary judged it on; it learnt neither.

    Carried into the next day's training they are learnt a day late instead of never
    (docs/quality.md, "The held-out share, trained the day after"). The tables have the same
    columns, oldest row first.
    """
    previous, examples = _arrow(previous), _arrow(examples)
    held = min(held, len(previous))
    parts = [previous.slice(len(previous) - held)] if held else []
    parts += [_arrow(evening)] if evening is not None and len(evening) else []
    return pa.concat_tables([*parts, examples]) if parts else examples


def _hold_out(examples: pa.Table, cfg: ModelConfig) -> tuple[pa.Table, pa.Table | None]:
    """(training rows, validation rows): the newest cfg.validation_share of examples, or None.

    Rows come oldest first, so the cut is in time, as the model will be used: on requests after
    the ones it learned from. A random split would let it validate on the past. (Rows of one
    request are adjacent, so at most one request straddles the cut.)
    """
    n_held = int(len(examples) * cfg.validation_share)
    if cfg.validation_share == 0:
        log.info("validation off (validation_share 0): training all %d epochs", cfg.epochs)
        return examples, None
    if n_held < cfg.min_validation:
        log.info(
            "no validation: the newest %g of %d examples is %d, fewer than %d; "
            "training all %d epochs",
            cfg.validation_share,
            len(examples),
            n_held,
            cfg.min_validation,
            cfg.epochs,
        )
        return examples, None
    cut = len(examples) - n_held
    return examples.slice(0, cut), examples.slice(cut)


def _arrow(table) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    return pa.Table.from_pandas(table, preserve_index=False)


def train_day(ds: str, settings: Settings, base: Path | None, version: int) -> Artifact:
    """Train on day ds (warm from the artifact folder base, if any) and save models/v{version}."""
    context = _CONTEXT.set(f"ds={ds} stage=train")
    try:
        examples, corpus = _read_day(settings.warehouse, ds)
        parent = load_artifact(base) if base is not None else None
        log.info("v%d from %s", version, f"v{parent.version}" if parent else "scratch")
        carried = 0
        # The rows of the parent's day it never learnt (carry_over), when that day is before
        # this one: a rerun of the parent's day reads its held-out rows as its own and judges
        # its evening, and a backfill behind the parent is not the day after it.
        if parent is not None and parent.ds < ds:
            today = len(examples)
            previous = _read_examples(settings.warehouse, parent.ds)
            evening = _read_evening(settings.warehouse, parent.ds)
            examples = carry_over(
                previous, parent.metrics["validation_examples"], examples, evening
            )
            carried = len(examples) - today
            log.info(
                "%d examples held out of %s and %d of its evening trained today",
                carried - len(evening),
                parent.ds,
                len(evening),
            )
        artifact = train(examples, corpus, settings.model, parent, settings.seed)
        artifact.metrics["carried_examples"] = carried  # of metrics["examples"]
        return artifact.save(settings.models, version, ds)
    finally:
        _CONTEXT.reset(context)


def _read_day(warehouse: Path, ds: str):
    """(examples, corpus) of day ds."""
    examples = _read_examples(warehouse, ds)
    with reading(warehouse) as con:  # dbt needs the file next: hold it no longer than the read
        corpus = con.sql(
            "select item_id, title from mart_item_corpus where ds = cast(? as date) "
            "order by item_id",
            params=[ds],
        ).to_arrow_table()
    return examples, corpus


def _read_examples(warehouse: Path, ds: str) -> pa.Table:
    return _read_rows(warehouse, "mart_training_examples", ds)


def _read_evening(warehouse: Path, ds: str) -> pa.Table:
    """Day ds's evaluation requests as training rows: one a positive, as the training mart has."""
    return _read_rows(warehouse, EVENING_ROWS, ds)


# mart_eval_examples's requests with one row per clicked, carted or bought item (clicked_items).
EVENING_ROWS = "(select *, unnest(clicked_items) as item_id from mart_eval_examples)"


def _read_rows(warehouse: Path, relation: str, ds: str) -> pa.Table:
    # Fixed order: the same day always yields the same vocab ids and batches (determinism).
    columns = ", ".join(["request_id", *features.REQUEST_COLUMNS, "item_id"])
    with reading(warehouse) as con:
        return con.sql(
            f"select {columns} from {relation} where ds = cast(? as date) "
            "order by request_time, request_id, item_id",
            params=[ds],
        ).to_arrow_table()


def _pretrained_words(model: MGDSPR, tokens: list[str], first: int) -> None:
    """Word-table rows from id `first` on (those this training adds) start from training.lexicon
    where it knows the word, PRETRAINED_WORD_SCALE times as long on average as the random rows
    they replace."""
    new = tokens[first - (UNK + 1) :]  # token k has id k + 2 (after PAD and UNK)
    if not new:
        return
    with torch.no_grad():
        rows = model.emb["word"].get_parameter("weight")[first:]
        length = PRETRAINED_WORD_SCALE * rows.norm(dim=1).mean().item()
        found, known = vectors(new, rows.shape[1], length)
        rows[torch.from_numpy(known)] = torch.from_numpy(found[known]).to(rows)
    log.info("%d of %d new words start from pretrained vectors", known.sum(), len(new))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
