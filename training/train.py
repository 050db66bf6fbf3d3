"""Daily training: one day of mart_training_examples -> a new model version.

`train` is pure (in-memory tables in, unsaved Artifact out) so tests and benchmarks can call it;
`train_day` reads the warehouse, warm-starts from the previous artifact and saves models/vN.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import duckdb
import torch

from ebr.settings import ModelConfig, Settings

from . import features
from .artifact import Artifact, load_artifact
from .model import MGDSPR, grow_from, retrieval_loss
from .vocab import Vocabs

log = logging.getLogger(__name__)


def train(
    examples,
    corpus,
    cfg: ModelConfig,
    base: Artifact | None = None,
    seed: int = 0,
    log_every: int = 50,
) -> Artifact:
    """Train on examples (mart_training_examples rows) with negatives sampled from corpus
    (mart_item_corpus rows); warm-start from base when given. Returns an unsaved Artifact."""
    if len(examples) == 0 or len(corpus) == 0:
        raise ValueError(f"nothing to train on: {len(examples)} examples, {len(corpus)} items")
    torch.manual_seed(seed)  # model init
    gen = torch.Generator().manual_seed(seed)  # shuffling, negatives, mixing weights

    # The day's new ids and tokens are appended to the base vocabularies (a copy: base stays valid).
    vocabs = copy.deepcopy(base.vocabs) if base else Vocabs()
    items = features.items(corpus, vocabs, cfg, grow=True)
    requests = features.requests(examples, vocabs, cfg, grow=True)
    positives = features.positives(examples, items, vocabs, grow=True)

    model = MGDSPR(cfg, vocabs.sizes())
    if base:
        grow_from(model, base.model.state_dict())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, n_neg = len(requests), min(cfg.sampled_negatives, len(items))
    log.info("training on %d examples, %d items, %d parameters, %s",
             n, len(items), _params(model), device)

    losses, step, start = [], 0, time.perf_counter()
    tick, seen, seen_at_tick, recent = start, 0, 0, []
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        epoch_loss = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            sampled = torch.randint(len(items), (n_neg,), generator=gen).tolist()
            req = requests.batch(idx).to(device)
            pos = positives.batch(idx).to(device)
            neg = items.batch(sampled).to(device)
            user = model.user_tower(req)
            loss = retrieval_loss(
                user, model.item_tower(pos), pos.item, model.item_tower(neg), neg.item, cfg, gen
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

            step, seen, value = step + 1, seen + len(idx), loss.item()
            epoch_loss += value * len(idx)
            recent.append(value)
            if step % log_every == 0:
                now = time.perf_counter()
                log.info("epoch %d step %d loss %.4f %.0f examples/s", epoch, step,
                         sum(recent) / len(recent), (seen - seen_at_tick) / (now - tick))
                tick, seen_at_tick, recent = now, seen, []
        losses.append(epoch_loss / n)
        log.info("epoch %d done: loss %.4f", epoch, losses[-1])
    seconds = time.perf_counter() - start

    metrics = {
        "loss_per_epoch": losses,
        "examples": n,
        "epochs": cfg.epochs,
        "examples_per_s": n * cfg.epochs / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "params": _params(model),
        "vocab_sizes": vocabs.sizes(),
    }
    meta = {"version": 0, "ds": "", "parent": base.version if base else None, "metrics": metrics}
    return Artifact(model.cpu().eval(), vocabs, cfg, meta)


def train_day(ds: str, settings: Settings, base: Path | None, version: int) -> Artifact:
    """Train on day ds (warm from the artifact folder base, if any) and save models/v{version}."""
    examples, corpus = _read_day(settings.warehouse, ds)
    parent = load_artifact(base) if base is not None else None
    log.info("ds=%s: v%d from %s", ds, version, f"v{parent.version}" if parent else "scratch")
    artifact = train(examples, corpus, settings.model, parent, settings.seed)
    return artifact.save(settings.models, version, ds)


def _read_day(warehouse: Path, ds: str):
    # Fixed order: the same day always yields the same vocab ids and batches (determinism).
    columns = ", ".join([*features.REQUEST_COLUMNS, "item_id"])
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        examples = con.sql(
            f"select {columns} from mart_training_examples where ds = cast(? as date) "
            "order by request_time, request_id, item_id",
            params=[ds],
        ).to_arrow_table()
        corpus = con.sql(
            "select item_id, title from mart_item_corpus where ds = cast(? as date) "
            "order by item_id",
            params=[ds],
        ).to_arrow_table()
    finally:
        con.close()  # other tasks (dbt) need the file: hold it no longer than the read
    return examples, corpus


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
