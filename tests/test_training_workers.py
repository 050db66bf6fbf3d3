"""Training on several processes (ModelConfig.workers): real ranks over torch.distributed's gloo."""

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from test_training import CFG, make_day, title_search
from torch import nn

from training.train import train
from training.workers import Group, join, started


def test_two_processes_train_a_model_that_finds_items_and_retrain_it_the_same():
    examples, corpus = make_day(seed=0)
    cfg = replace(CFG, workers=2, user_id_dropout=0.5, item_id_dropout=0.2)
    first, second = (train(examples, corpus, cfg, seed=0) for _ in range(2))
    # As the one-process model does (test_training): each item among the top 5 for its title.
    users, items = first.encode_requests(title_search(corpus)), first.encode_items(corpus)
    scores = users @ items.T
    assert ((scores > np.diag(scores)[:, None]).sum(1) < 5).all()
    assert first.metrics["workers"] == 2
    losses = first.metrics["loss_per_epoch"]
    assert len(losses) == cfg.epochs and losses[-1] < losses[0]
    for name, weights in first.model.state_dict().items():
        assert torch.equal(weights, second.model.state_dict()[name]), name


def test_two_processes_train_the_model_one_process_trains_to_float_rounding():
    """Each rank's pool holds the whole batch's positives, and every draw (negatives, id and
    unit dropout, mixing weights) is the batch's: only the order of float sums differs. With a
    pool of each rank's own positives and draws of its own, the first epoch's loss had read 4.14
    against 4.48."""
    examples, corpus = make_day(seed=0)
    cfg = replace(CFG, epochs=2, user_id_dropout=0.5, item_id_dropout=0.2)
    assert cfg.hard_negatives > 0 and cfg.transformer_unit_dropout > 0
    one, two = (train(examples, corpus, replace(cfg, workers=w), seed=0) for w in (1, 2))
    assert two.metrics["loss_per_epoch"] == pytest.approx(one.metrics["loss_per_epoch"], rel=1e-5)
    for name, weights in one.model.state_dict().items():
        assert torch.allclose(weights, two.model.state_dict()[name], atol=5e-3), name


@pytest.mark.parametrize("size", [2, 3])
def test_the_ranks_shares_cover_a_batch_once_and_weigh_to_one(size):
    for n in (1, 2, 7, 64):
        shares = [Group(rank, size).share(n) for rank in range(size)]
        assert sum(weight for _, weight in shares) == pytest.approx(1)
        if n < size:  # every rank trains the whole batch
            assert all(rows == slice(0, n) for rows, _ in shares)
            continue
        covered = np.concatenate([np.arange(n)[rows] for rows, _ in shares])
        assert covered.tolist() == list(range(n))  # contiguous, in rank order
        assert all(weight == (rows.stop - rows.start) / n for rows, weight in shares)


def test_rank_zero_validates_and_every_rank_stops_with_it():
    examples, corpus = make_day(seed=0)
    cfg = replace(CFG, workers=2, validation_share=0.2, patience=0, epochs=6)
    m = train(examples, corpus, cfg, seed=0).metrics
    # The other rank learnt each epoch's decision: had it trained on, rank 0 would wait forever.
    assert m["validation_examples"] == 120 and len(m["validation_recall_per_epoch"]) == m["epochs"]
    assert m["best_epoch"] == int(np.argmax(m["validation_recall_per_epoch"])) + 1


class _ExitsWhenLoaded:
    """Unpickled by a rank as sys.exit(3): a rank that dies before it joins."""

    def __reduce__(self):
        return sys.exit, (3,)


def test_a_rank_that_dies_before_joining_fails_the_training_instead_of_hanging_it():
    with pytest.raises(RuntimeError, match=r"exited before joining \(exit codes \[3\]\)"):
        with started(2, (_ExitsWhenLoaded(),)):
            pass


def test_a_rank_that_fails_while_training_fails_rank_zero():
    _, corpus = make_day(seed=0)
    # The rank joins, then cannot read "no table" as its examples.
    with pytest.raises(RuntimeError):
        with started(2, ("no table", corpus, CFG, None, 0)) as group:
            group.total(1.0)


def test_gradients_come_back_whole_from_the_packing_of_a_reduction(tmp_path):
    """On one rank the sum is the rank's own: what sum_gradients packs (each table's distinct
    rows and widths, dense gradients and their flags) it must unpack unchanged."""

    class Towers(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(10, 4, sparse=True)
            self.shops = nn.Embedding(7, 3, sparse=True)
            self.unread = nn.Embedding(5, 2, sparse=True)
            self.dense = nn.Linear(4, 3)
            self.unused = nn.Linear(2, 2)

    torch.manual_seed(0)
    model = Towers()
    words, shops = model.words(torch.tensor([1, 4, 1, 9])), model.shops(torch.tensor([6, 6, 0]))
    (model.dense(words).sum() + shops.pow(2).sum()).backward()
    expected = {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}
    join(str(tmp_path / "store"), 0, 1)
    try:
        Group(0, 1).sum_gradients(model)
    finally:
        dist.destroy_process_group()
    for name, p in model.named_parameters():
        if name.startswith("unused"):
            assert p.grad is None, name  # no rank reached it: Adam must skip it
        elif name == "unread.weight":
            assert p.grad.is_sparse and p.grad._nnz() == 0  # a table no row of the step read
        else:
            assert torch.equal(p.grad.to_dense(), expected[name]), name
    assert model.words.weight.grad.is_sparse and model.words.weight.grad._nnz() == 3
