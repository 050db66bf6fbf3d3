"""Mart rows -> id lists -> padded id tensors.

Rows are tokenised and mapped to ids once (`requests`, `items`); `batch` then pads a set of rows
to the longest sequence among them (not to the configured maximum), so short histories stay cheap.
Vocabularies grow only when `grow` is set (training); at inference unknown tokens map to UNK.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from ebr.settings import ModelConfig

from . import text
from .vocab import PAD, Vocabs

ATTRS = ("item", "shop", "leaf", "brand")  # long-term attributes, each with its own table
ACTIONS = ("click", "cart", "purchase")
LT_COLUMNS = tuple(f"lt_{action}_{attr}" for attr in ATTRS for action in ACTIONS)
REQUEST_COLUMNS = ("user_id", "query", "rt_items", "st_items", *LT_COLUMNS, "past_queries")


@dataclass
class RequestBatch:
    user: Tensor  # [B]
    words: Tensor  # [B, W] query words
    char1: Tensor  # [B, C1]
    char2: Tensor  # [B, C2]
    past: Tensor  # [B, P, W] words of each past query
    rt: Tensor  # [B, Lrt] item ids, oldest first
    st: Tensor  # [B, Lst] item ids, oldest first
    lt: Tensor  # [B, len(ATTRS), len(ACTIONS), Llt]

    def to(self, device) -> RequestBatch:
        return RequestBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class ItemBatch:
    item: Tensor  # [N]
    title: Tensor  # [N, T] title words

    def to(self, device) -> ItemBatch:
        return ItemBatch(self.item.to(device), self.title.to(device))


@dataclass
class Requests:
    user: list[int]
    words: list[list[int]]
    char1: list[list[int]]
    char2: list[list[int]]
    past: list[list[list[int]]]
    rt: list[list[int]]
    st: list[list[int]]
    lt: list[list[list[int]]]  # per row the LT_COLUMNS lists, in that order

    def __len__(self) -> int:
        return len(self.user)

    def batch(self, idx: Sequence[int]) -> RequestBatch:
        def pick(rows):
            return [rows[i] for i in idx]

        return RequestBatch(
            user=torch.tensor(pick(self.user), dtype=torch.long),
            words=_pad2(pick(self.words)),
            char1=_pad2(pick(self.char1)),
            char2=_pad2(pick(self.char2)),
            past=_pad3(pick(self.past)),
            rt=_pad2(pick(self.rt)),
            st=_pad2(pick(self.st)),
            lt=_pad3(pick(self.lt)).view(len(idx), len(ATTRS), len(ACTIONS), -1),
        )


@dataclass
class Items:
    item: list[int]
    title: list[list[int]]

    def __len__(self) -> int:
        return len(self.item)

    def batch(self, idx: Sequence[int]) -> ItemBatch:
        return ItemBatch(
            torch.tensor([self.item[i] for i in idx], dtype=torch.long),
            _pad2([self.title[i] for i in idx]),
        )


def requests(table, vocabs: Vocabs, cfg: ModelConfig, grow: bool) -> Requests:
    """Rows with REQUEST_COLUMNS (mart_training_examples, mart_eval_examples, live requests)."""
    col = _columns(table)
    queries = col("query")
    grams = [text.char_ngrams(q) for q in queries]

    def words(q: str) -> list[int]:
        return vocabs.word.encode(text.words(q)[: cfg.max_words], grow)

    # Lists are oldest first: truncation keeps the most recent end.
    lt_lists = {(attr, action): col(f"lt_{action}_{attr}") for attr in ATTRS for action in ACTIONS}
    return Requests(
        user=vocabs.user.encode(col("user_id"), grow),
        words=[words(q) for q in queries],
        char1=[vocabs.char1.encode(g1[: cfg.max_chars], grow) for g1, _ in grams],
        char2=[vocabs.char2.encode(g2[: cfg.max_chars], grow) for _, g2 in grams],
        past=[[words(p) for p in ps[-cfg.past_queries :]] for ps in col("past_queries")],
        rt=[vocabs.item.encode(s[-cfg.rt_len :], grow) for s in col("rt_items")],
        st=[vocabs.item.encode(s[-cfg.st_len :], grow) for s in col("st_items")],
        lt=[
            [
                getattr(vocabs, attr).encode(lt_lists[attr, action][r][-cfg.lt_len :], grow)
                for attr in ATTRS
                for action in ACTIONS
            ]
            for r in range(len(queries))
        ],
    )


def items(table, vocabs: Vocabs, cfg: ModelConfig, grow: bool) -> Items:
    """Rows with item_id and title (mart_item_corpus)."""
    col = _columns(table)
    return Items(
        item=vocabs.item.encode(col("item_id"), grow),
        title=[vocabs.word.encode(text.words(t)[: cfg.max_words], grow) for t in col("title")],
    )


def positives(table, corpus: Items, vocabs: Vocabs, grow: bool) -> Items:
    """The item of each training example, with its title taken from the day's corpus."""
    title_of = dict(zip(corpus.item, corpus.title))
    ids = vocabs.item.encode(_columns(table)("item_id"), grow)
    return Items(ids, [title_of.get(i, []) for i in ids])


def _columns(table):
    """Column reader for a pyarrow Table or RecordBatch, or a pandas DataFrame."""
    if not isinstance(table, (pa.Table, pa.RecordBatch)):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return lambda name: table.column(name).to_pylist()


# Padded tensors are at least 1 long so that an all-empty batch still has a (masked) position.
def _pad2(rows: list[list[int]]) -> Tensor:
    out = np.full((len(rows), max(1, max(map(len, rows), default=0))), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _pad3(rows: list[list[list[int]]]) -> Tensor:
    depth = max(1, max(map(len, rows), default=0))
    width = max(1, max((len(s) for r in rows for s in r), default=0))
    out = np.full((len(rows), depth, width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        for j, s in enumerate(r):
            out[i, j, : len(s)] = s
    return torch.from_numpy(out)
