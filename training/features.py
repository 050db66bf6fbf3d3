"""Mart rows -> id lists -> padded id tensors.

Rows are tokenised and mapped to ids once (`requests`, `items`), column by column with pyarrow and
numpy (a Python loop per row costs more than the training step); `batch` then pads a set of rows
to the longest sequence among them (not to the configured maximum), so short histories stay cheap.
Vocabularies grow only when `grow` is set (training); at inference unknown tokens map to UNK.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from ebr.settings import ModelConfig

from . import text
from .text import ranges
from .vocab import PAD, UNK, Vocab, Vocabs

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
    """Titles stay ragged (item k's words are words[offsets[k] : offsets[k + 1]]): the item tower
    pools them with embedding_bag as they are, so no title is padded and no padding is masked
    (1.5x the item tower's items/s on the medium corpus, batching included)."""

    item: Tensor  # [N]
    words: Tensor  # [total title words] the items' title words, item after item
    offsets: Tensor  # [N] where each item's words start

    def to(self, device) -> ItemBatch:
        return ItemBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class Ragged:
    """Id lists stored flat, so batches pad them with array ops: list k is
    values[starts[k] : starts[k] + lens[k]]."""

    values: np.ndarray  # int32: ids of every list
    starts: np.ndarray  # int64 [lists]
    lens: np.ndarray  # int64 [lists]

    def pad(self, lists: np.ndarray) -> np.ndarray:
        """The lists indexed by `lists` (any shape), right-padded with PAD to the longest of them:
        [*lists.shape, longest] (at least 1 long, so an all-empty batch keeps a masked position)."""
        flat = lists.ravel()
        lens = self.lens[flat]
        out = np.full((len(flat), max(1, lens.max(initial=0))), PAD, dtype=np.int64)
        out[np.repeat(np.arange(len(flat)), lens), ranges(np.zeros_like(lens), lens)] = self.values[
            ranges(self.starts[flat], lens)
        ]
        return out.reshape(*lists.shape, out.shape[1])

    def flat(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lists indexed by `lists` one after another, and where each starts among them."""
        lens = self.lens[lists]
        values = self.values[ranges(self.starts[lists], lens)].astype(np.int64)
        return values, np.cumsum(lens) - lens


@dataclass
class Requests:
    user: np.ndarray  # [n]
    words: Ragged  # list r: row r's query words
    char1: Ragged
    char2: Ragged
    # Fixed slots: list r * past_slots + j is row r's j-th kept past query (oldest first; empty
    # past the row's count), so a batch's past queries are one pad of a [B, past_slots] grid.
    past: Ragged
    past_slots: int
    rt: Ragged
    st: Ragged
    lt: Ragged  # list r * len(LT_COLUMNS) + k: row r's LT_COLUMNS[k]

    def __len__(self) -> int:
        return len(self.user)

    def by_length(self) -> np.ndarray:
        """Row indices in order of their real-time plus short-term clicks: batches cut from it
        pad their behaviour lists to rows like their own rather than to the longest history of
        the table (encoding, where rows need no shuffling)."""
        return np.argsort(self.rt.lens + self.st.lens, kind="stable")

    def batch(self, rows: Sequence[int] | np.ndarray) -> RequestBatch:
        idx = np.asarray(rows, dtype=np.int64)
        past = self.past.pad(idx[:, None] * self.past_slots + np.arange(self.past_slots))
        # Trim the grid to the batch's last used slot: the slots after it hold no word and are
        # masked as empty queries anyway.
        used = np.flatnonzero((past != PAD).any(axis=(0, 2)))
        lt = self.lt.pad(idx[:, None] * len(LT_COLUMNS) + np.arange(len(LT_COLUMNS)))
        return RequestBatch(
            user=torch.from_numpy(self.user[idx].astype(np.int64)),
            words=torch.from_numpy(self.words.pad(idx)),
            char1=torch.from_numpy(self.char1.pad(idx)),
            char2=torch.from_numpy(self.char2.pad(idx)),
            past=torch.from_numpy(past[:, : used[-1] + 1 if len(used) else 1]),
            rt=torch.from_numpy(self.rt.pad(idx)),
            st=torch.from_numpy(self.st.pad(idx)),
            lt=torch.from_numpy(lt.reshape(len(idx), len(ATTRS), len(ACTIONS), lt.shape[-1])),
        )


@dataclass
class Items:
    item: np.ndarray  # [n] id rows of the item table; PAD where the item has none (see items)
    title: Ragged
    keys: pa.Array  # [n] item_id: what identifies the item (cold items share the PAD id row)

    def __len__(self) -> int:
        return len(self.item)

    def batch(self, rows: Sequence[int] | np.ndarray) -> ItemBatch:
        idx = np.asarray(rows, dtype=np.int64)
        words, offsets = self.title.flat(idx)
        item = self.item[idx].astype(np.int64)
        return ItemBatch(*map(torch.from_numpy, (item, words, offsets)))


def requests(table, vocabs: Vocabs, cfg: ModelConfig, grow: bool) -> Requests:
    """Rows with REQUEST_COLUMNS (mart_training_examples, mart_eval_examples, live requests)."""
    col = _columns(table)
    queries, at = _distinct(col("query"))
    P = cfg.past_queries
    # Encoded column by column in this order, so that new ids are handed out in it.
    user = _encode_values(vocabs.user, col("user_id"), grow)
    words = _encode(vocabs.word, text.word_lists(queries, cfg.max_words).take(at), grow)
    char1, char2 = text.char_lists(queries, cfg.max_chars)
    char1 = _encode(vocabs.char1, char1.take(at), grow)
    char2 = _encode(vocabs.char2, char2.take(at), grow)
    # Lists are oldest first: truncation keeps the most recent end.
    past = _last(col("past_queries"), P)
    past_words = _encode(vocabs.word, _words(past.flatten(), cfg.max_words), grow)
    rt = _encode(vocabs.item, _last(col("rt_items"), cfg.rt_len), grow)
    st = _encode(vocabs.item, _last(col("st_items"), cfg.st_len), grow)
    lt = [
        _encode(getattr(vocabs, attr), _last(col(f"lt_{action}_{attr}"), cfg.lt_len), grow)
        for attr in ATTRS
        for action in ACTIONS
    ]
    # Scatter each row's past queries into its fixed slots.
    count = np.diff(past.offsets.to_numpy())
    slots = ranges(np.arange(len(count)) * P, count)
    past_starts, past_lens = np.zeros(len(count) * P, np.int64), np.zeros(len(count) * P, np.int64)
    past_starts[slots], past_lens[slots] = past_words.starts, past_words.lens
    return Requests(
        user=user,
        words=words,
        char1=char1,
        char2=char2,
        past=Ragged(past_words.values, past_starts, past_lens),
        past_slots=P,
        rt=rt,
        st=st,
        lt=_interleave(lt),
    )


def by_request(
    table, request_of: np.ndarray, vocabs: Vocabs, cfg: ModelConfig, grow: bool
) -> Requests:
    """`requests` of each request numbered by request_of (each row's request, 0, 1, ...), read
    from its first row: a request's clicks share its features, so they are built once."""
    _, first = np.unique(request_of, return_index=True)
    return requests(table.take(first), vocabs, cfg, grow)


def request_index(table: pa.Table) -> np.ndarray:
    """Each row's request as a number, 0, 1, ... in order of first sight: rows with the same
    request_id (a request with several clicks; never null in the marts) share one. Without a
    request_id column every row is a request of its own."""
    if "request_id" not in table.column_names:
        return np.arange(table.num_rows)
    ids = table.column("request_id").combine_chunks()
    return ids.dictionary_encode().indices.to_numpy().astype(np.int64)


def items(table, vocabs: Vocabs, cfg: ModelConfig, grow: bool) -> Items:
    """Rows with item_id and title (mart_item_corpus).

    With cfg.item_ids "clicked" the corpus does not grow the item vocabulary (clicked items do:
    `clicked`, and the behaviour sequences of `requests`). An item the vocabulary lacks gets PAD,
    a zero row that no gradient reaches, so its title alone scores it: an id row that only ever
    met the item as a sampled negative would learn to bury it (the cold-start bias).
    """
    col = _columns(table)
    keys = pc.fill_null(col("item_id").cast(pa.string()), "")
    ids = _encode_values(vocabs.item, keys, grow and cfg.item_ids == "corpus", repeats=False)
    ids[ids == UNK] = PAD
    # Titles are not deduplicated first (as queries are): a corpus's titles hardly repeat.
    title = _encode(vocabs.word, text.word_lists(col("title"), cfg.max_words), grow)
    return Items(item=ids, title=title, keys=keys)


def clicked(table, vocabs: Vocabs, grow: bool) -> np.ndarray:
    """The item-table ids of the rows' item_id (training examples: clicked items)."""
    return _encode_values(vocabs.item, _columns(table)("item_id"), grow)


def corpus_rows(table, corpus: Items) -> np.ndarray:
    """The corpus row of each row's item_id, -1 where the item is not in the corpus."""
    rows = pc.index_in(_columns(table)("item_id").cast(pa.string()), value_set=corpus.keys)
    return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def positives(table, ids: np.ndarray, corpus: Items) -> Items:
    """The item of each training example (ids: `clicked`), with its title taken from the day's
    corpus (none when the item is not in it)."""
    r = corpus_rows(table, corpus)
    known = r >= 0
    title = corpus.title
    starts = np.where(known, title.starts[r], 0)
    keys = _columns(table)("item_id").cast(pa.string())
    return Items(ids, Ragged(title.values, starts, np.where(known, title.lens[r], 0)), keys)


def _columns(table):
    """Column reader (one pyarrow Array) for a pyarrow Table or RecordBatch, or a pandas
    DataFrame."""
    if not isinstance(table, (pa.Table, pa.RecordBatch)):
        table = pa.Table.from_pandas(table, preserve_index=False)

    def column(name: str) -> pa.Array:
        c = table.column(name)
        return c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c

    return column


def _encode_values(vocab: Vocab, tokens: pa.Array, grow: bool, repeats: bool = True) -> np.ndarray:
    """Vocabulary ids of tokens: one look-up per distinct token, in order of first sight (the
    order Vocab hands out new ids in). A missing token is "", which Vocab maps to UNK.
    Tokens that hardly repeat (a corpus's item ids) are looked up as they are: finding the
    distinct ones first would cost more than it saves. Without growing, tokens that outnumber
    the vocabulary are looked up in Arrow (Vocab.lookup)."""
    tokens = pc.fill_null(tokens.cast(pa.string()), "")
    if not grow and len(tokens) > len(vocab):
        return vocab.lookup(tokens)
    if not repeats:
        return np.array(vocab.encode(tokens.to_pylist(), grow), dtype=np.int32)
    distinct, at = _distinct(tokens)
    return np.array(vocab.encode(distinct.to_pylist(), grow), dtype=np.int32)[at]


def _encode(vocab: Vocab, lists: pa.ListArray, grow: bool) -> Ragged:
    """The vocabulary ids of each list's tokens."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    lens = np.diff(offsets)
    return Ragged(_encode_values(vocab, lists.flatten(), grow), offsets[:-1] - offsets[0], lens)


def _last(lists: pa.Array, keep: int) -> pa.ListArray:
    """Each list cut to its last `keep` elements (lists are oldest first)."""
    lists = lists.cast(pa.list_(pa.string()))  # an all-empty column arrives as list<null>
    offsets = lists.offsets.to_numpy().astype(np.int64)
    lens = np.minimum(np.diff(offsets), keep)
    kept = ranges(offsets[1:] - lens, lens)
    return pa.ListArray.from_arrays(pa.array(text.list_offsets(lens)), lists.values.take(kept))


def _distinct(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The distinct texts in order of first sight, and where each text is among them: a day's
    queries and past queries repeat a lot, so each distinct one is tokenised once (a corpus's
    titles do not: `items`). One hashing pass (unique, then index_in, hashed the texts twice:
    the medium corpus's title words took 1.4x as long)."""
    encoded = pc.dictionary_encode(texts, null_encoding="encode")  # a null is a value too
    return encoded.dictionary, encoded.indices.to_numpy()


def _words(texts: pa.Array, limit: int) -> pa.ListArray:
    distinct, at = _distinct(texts)
    return text.word_lists(distinct, limit).take(at)


def _interleave(parts: list[Ragged]) -> Ragged:
    """One Ragged whose list r * len(parts) + k is list r of parts[k] (all with the same lists)."""
    base = np.cumsum([0] + [len(p.values) for p in parts[:-1]])
    return Ragged(
        np.concatenate([p.values for p in parts]),
        np.stack([p.starts + b for p, b in zip(parts, base)], axis=1).ravel(),
        np.stack([p.lens for p in parts], axis=1).ravel(),
    )
