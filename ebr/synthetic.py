"""A deterministic synthetic marketplace that writes landing days in the landing contract.

Items get titles from category vocabularies (brand, adjective, colour, material, noun, model
code); users keep stable category, brand and price preferences; each request's query is written
from a target item's attributes (partial terms, synonyms, typos); a lexical engine decides the
impressions; clicks follow relevance, preference and position; some clicks become carts and
purchases. The catalogue and the user base grow every day. Everything derives from
(seed, profile, day index), so any day can be regenerated alone and comes out identical.

Two generators draw that marketplace. tiny and small go request by request (their days stay
byte-identical for a seed, as tests and recorded figures rely on). medium and large (about 1M and
10M events a day) are drawn in vectorised chunks of requests written as Parquet row groups, so
time and memory stay bounded at any size; their lexical engine ranks a sample of the catalogue
instead of all of it (see _engine_sample).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# top category -> leaf -> (noun, synonyms)
CATALOGUE: dict[str, dict[str, tuple[str, ...]]] = {
    "electronics": {
        "headphones": ("headphones", "earphones", "headset"),
        "laptops": ("laptop", "notebook"),
        "phone_cases": ("phone case", "phone cover"),
        "chargers": ("charger", "power adapter"),
        "keyboards": ("keyboard",),
        "monitors": ("monitor", "display", "screen"),
        "speakers": ("speaker", "soundbar"),
    },
    "clothing": {
        "tshirts": ("t-shirt", "tee"),
        "jeans": ("jeans", "denim pants"),
        "dresses": ("dress", "gown"),
        "sneakers": ("sneakers", "trainers"),
        "jackets": ("jacket", "coat"),
        "hoodies": ("hoodie", "sweatshirt"),
    },
    "home": {
        "lamps": ("lamp", "light"),
        "pillows": ("pillow", "cushion"),
        "blenders": ("blender", "mixer"),
        "knives": ("knife set", "chef knife"),
        "towels": ("towel", "bath towel"),
        "mugs": ("mug", "cup"),
    },
    "sports": {
        "yoga_mats": ("yoga mat", "exercise mat"),
        "dumbbells": ("dumbbell", "weights"),
        "rackets": ("tennis racket", "racquet"),
        "bottles": ("water bottle", "flask"),
        "helmets": ("bike helmet", "cycling helmet"),
    },
    "beauty": {
        "lipsticks": ("lipstick", "lip color"),
        "shampoos": ("shampoo", "hair wash"),
        "creams": ("moisturizer", "face cream"),
        "perfumes": ("perfume", "fragrance"),
        "sunscreens": ("sunscreen", "spf lotion"),
    },
    "toys": {
        "puzzles": ("puzzle", "jigsaw"),
        "building": ("building blocks", "brick set"),
        "dolls": ("doll", "figure"),
        "board_games": ("board game", "family game"),
        "rc_cars": ("rc car", "remote control car"),
    },
}
BRANDS = {
    "electronics": ("sonix", "voltra", "pixelon", "nordwave", "ampere", "lumio"),
    "clothing": ("urbanline", "norde", "kaito", "velour", "riverstone", "mavi"),
    "home": ("casamia", "hearthly", "kitcha", "dormio", "lumina", "oakhill"),
    "sports": ("stridex", "peakfit", "aerion", "coreva", "trailix", "zenfit"),
    "beauty": ("belleza", "glowra", "purelle", "aurum", "silkea", "dermia"),
    "toys": ("funzo", "brickly", "tinytown", "playmo", "wonderkit", "jolly"),
}
ADJECTIVES = (
    "wireless",
    "premium",
    "classic",
    "portable",
    "compact",
    "deluxe",
    "slim",
    "eco",
    "pro",
    "vintage",
    "ultra",
    "soft",
    "waterproof",
    "lightweight",
    "smart",
)
COLOURS = (
    "black",
    "white",
    "red",
    "blue",
    "green",
    "grey",
    "pink",
    "navy",
    "beige",
    "gold",
    "silver",
    "purple",
)
MATERIALS = (
    "cotton",
    "leather",
    "steel",
    "bamboo",
    "silicone",
    "wool",
    "ceramic",
    "aluminium",
    "plastic",
    "linen",
)
LEAVES = [(top, leaf) for top, leaves in CATALOGUE.items() for leaf in leaves]
BLOCK = 1024  # items and users are generated in seeded blocks so any prefix is reproducible
# Lookup tables, so that a column of words is one take over a small vocabulary.
TOPS = tuple(CATALOGUE)
LEAF_TOP = np.array([TOPS.index(top) for top, _ in LEAVES])
BRAND_WORDS = [brand for top in TOPS for brand in BRANDS[top]]  # index: top * TIERS + tier
TIERS = 6  # brands per top category; the brand index doubles as price tier
EVENT_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("position", pa.int32()),
    ]
)
EVENT_TYPES = ("impression", "click", "cart", "purchase")


@dataclass(frozen=True)
class Profile:
    items: int  # catalogue size on day 0
    new_items_per_day: int
    users: int
    new_users_per_day: int
    requests_per_day: int
    shown: int = 10  # impressions per request
    shops_per_top: int = 12
    vectorised: bool = False  # the chunked generator (module docstring)


# About 11.9 events per request (10 impressions, clicks, carts, purchases): medium lands about
# 1M events a day over 200k items, large about 10M over 1M items.
PROFILES = {
    "tiny": Profile(
        items=300, new_items_per_day=20, users=150, new_users_per_day=20, requests_per_day=1200
    ),
    "small": Profile(
        items=2_000,
        new_items_per_day=100,
        users=1_500,
        new_users_per_day=100,
        requests_per_day=8_000,
    ),
    "medium": Profile(
        items=200_000,
        new_items_per_day=2_000,
        users=100_000,
        new_users_per_day=2_000,
        requests_per_day=85_000,
        vectorised=True,
    ),
    "large": Profile(
        items=1_000_000,
        new_items_per_day=10_000,
        users=800_000,
        new_users_per_day=10_000,
        requests_per_day=850_000,
        vectorised=True,
    ),
}


@dataclass
class Items:
    leaf: np.ndarray  # index into LEAVES
    brand: np.ndarray  # index into BRANDS[top]
    adjective: np.ndarray  # -1 for none
    colour: np.ndarray
    material: np.ndarray
    code: np.ndarray
    shop: np.ndarray
    price: np.ndarray

    def __len__(self) -> int:
        return len(self.leaf)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _items_block(seed: int, block: int) -> Items:
    r = _rng(seed, 1, block)
    n = BLOCK
    leaf = r.integers(0, len(LEAVES), n)
    tier = r.integers(0, 6, n)  # brand index doubles as price tier
    base = 10 + (leaf % 7) * 15
    return Items(
        leaf=leaf,
        brand=tier,
        adjective=np.where(r.random(n) < 0.7, r.integers(0, len(ADJECTIVES), n), -1),
        colour=np.where(r.random(n) < 0.6, r.integers(0, len(COLOURS), n), -1),
        material=np.where(r.random(n) < 0.4, r.integers(0, len(MATERIALS), n), -1),
        code=r.integers(100, 1000, n),
        shop=r.integers(0, 1_000_000, n),
        price=np.round(base * (0.6 + 0.25 * tier) * r.lognormal(0, 0.3, n), 2),
    )


def catalogue(seed: int, n: int) -> Items:
    blocks = [_items_block(seed, b) for b in range(-(-n // BLOCK))]
    return Items(
        **{
            f: np.concatenate([getattr(b, f) for b in blocks])[:n]
            for f in Items.__dataclass_fields__
        }
    )


def _words(vocabulary: list[str] | tuple[str, ...], index: np.ndarray) -> pa.Array:
    """vocabulary[index] as a string column; null where index < 0 (an attribute not present)."""
    index = np.asarray(index)
    indices = pa.array(np.maximum(index, 0), mask=index < 0)
    return pa.DictionaryArray.from_arrays(
        indices, pa.array(vocabulary, pa.string())
    ).dictionary_decode()


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    """f"{prefix}{n}" for each n, without a Python loop."""
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def titles(items: Items) -> pa.Array:
    """brand [adjective] [colour] [material] noun code, e.g. "sonix wireless black headphones he123"."""
    code = pc.binary_join_element_wise(
        _words([leaf[:2] for _, leaf in LEAVES], items.leaf),
        pc.cast(pa.array(items.code), pa.string()),
        "",
    )
    return pc.binary_join_element_wise(
        _words(BRAND_WORDS, LEAF_TOP[items.leaf] * TIERS + items.brand),
        _words(ADJECTIVES, items.adjective),
        _words(COLOURS, items.colour),
        _words(MATERIALS, items.material),
        _words([CATALOGUE[top][leaf][0] for top, leaf in LEAVES], items.leaf),
        code,
        " ",
        null_handling="skip",
    )


@dataclass
class Users:
    leaves: np.ndarray  # [n, 2] preferred leaves
    brands: np.ndarray  # [n] preferred brand tier
    activity: np.ndarray  # relative request rate


def users(seed: int, n: int) -> Users:
    parts = []
    for b in range(-(-n // BLOCK)):
        r = _rng(seed, 2, b)
        parts.append(
            (
                r.integers(0, len(LEAVES), (BLOCK, 2)),
                r.integers(0, 6, BLOCK),
                r.pareto(1.5, BLOCK) + 0.2,
            )
        )
    return Users(*(np.concatenate(p)[:n] for p in zip(*parts)))


def brand_tiers(
    seed: int, user_ids: Iterable[str], item_ids: Iterable[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The hidden state a click reads besides the query (see _sequential_events): each user's
    preferred brand tier and each item's tier, looked up by the ids the generator wrote ("u17",
    "i42"); -1 for an id it did not write. For evaluation.oracle only: no model sees these."""

    def index(ids: Iterable[str], prefix: str) -> np.ndarray:
        return np.array(
            [int(i[1:]) if i[:1] == prefix and i[1:].isdigit() else -1 for i in ids], np.int64
        )

    def lookup(idx: np.ndarray, make) -> np.ndarray:
        known = idx >= 0
        out = np.full(len(idx), -1, np.int64)
        if known.any():
            out[known] = make(int(idx[known].max()) + 1)[idx[known]]
        return out

    u, i = index(user_ids, "u"), index(item_ids, "i")
    return (
        lookup(u, lambda n: users(seed, n).brands),
        lookup(i, lambda n: catalogue(seed, n).brand),
    )


def _typo(word: str, r: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    k = int(r.integers(1, len(word) - 1))
    return (
        word[:k] + word[k + 1 :]
        if r.random() < 0.5
        else word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    )


def _query(items: Items, k: int, r: np.random.Generator) -> str:
    top, leaf = LEAVES[items.leaf[k]]
    nouns = CATALOGUE[top][leaf]
    terms = [
        nouns[int(r.integers(1, len(nouns)))] if len(nouns) > 1 and r.random() < 0.3 else nouns[0]
    ]
    if r.random() < 0.45:
        terms.insert(0, BRANDS[top][items.brand[k]])
    if items.colour[k] >= 0 and r.random() < 0.35:
        terms.insert(0, COLOURS[items.colour[k]])
    if items.adjective[k] >= 0 and r.random() < 0.25:
        terms.insert(0, ADJECTIVES[items.adjective[k]])
    if items.material[k] >= 0 and r.random() < 0.15:
        terms.append(MATERIALS[items.material[k]])
    query = " ".join(terms)
    if r.random() < 0.1:
        words = query.split()
        j = int(r.integers(0, len(words)))
        words[j] = _typo(words[j], r)
        query = " ".join(words)
    return query


class _LexicalEngine:
    """The search engine before EBR: ranks items by how many query words their title contains."""

    def __init__(self, title_list: list[str]):
        postings: dict[str, list[int]] = {}
        for k, title in enumerate(title_list):
            for w in set(title.split()):
                postings.setdefault(w, []).append(k)
        self.postings = {w: np.asarray(v) for w, v in postings.items()}
        self.n = len(title_list)

    def search(self, query: str, shown: int, r: np.random.Generator) -> np.ndarray:
        hits = [self.postings[w] for w in set(query.split()) if w in self.postings]
        if not hits:
            return r.choice(self.n, shown, replace=False)
        cand, score = np.unique(np.concatenate(hits), return_counts=True)
        order = np.lexsort((r.random(len(cand)), -score))[:shown]
        found = cand[order]
        if len(found) < shown:  # pad with browsing results, as engines do on sparse matches
            extra = r.choice(self.n, shown - len(found) + 5, replace=False)
            found = np.concatenate([found, extra[~np.isin(extra, found)]])[:shown]
        return found


def catalogue_table(items: Items, profile: Profile) -> pa.Table:
    """The day's items.parquet."""
    top = LEAF_TOP[items.leaf]
    shops = [f"shop_{t}_{s}" for t in TOPS for s in range(profile.shops_per_top)]
    return pa.table(
        {
            "item_id": _prefixed("i", np.arange(len(items))),
            "title": titles(items),
            "leaf_category": _words([leaf for _, leaf in LEAVES], items.leaf),
            "top_category": _words(TOPS, top),
            "brand": _words(BRAND_WORDS, top * TIERS + items.brand),
            "shop": _words(shops, top * profile.shops_per_top + items.shop % profile.shops_per_top),
            "price": pa.array(items.price, pa.float64()),
        }
    )


def day_parts(
    ds: date, start: date, profile: Profile, seed: int
) -> tuple[Iterator[pa.RecordBatch], pa.Table]:
    """(events of day `ds` as record batches, drawn lazily, and the day's catalogue) of the
    marketplace that opened on `start`."""
    day = (ds - start).days
    if day < 0:
        raise ValueError(f"day {ds} is before the marketplace start {start}")
    items = catalogue(seed, profile.items + day * profile.new_items_per_day)
    people = users(seed, profile.users + day * profile.new_users_per_day)
    r = _rng(seed, 3, day)
    n_req = profile.requests_per_day
    who = r.choice(len(people.brands), n_req, p=people.activity / people.activity.sum())
    # requests end 10 minutes before midnight so follow-up events stay inside the day
    seconds = np.sort(r.uniform(0, 86_400 - 600, n_req))
    midnight = datetime(ds.year, ds.month, ds.day, tzinfo=UTC)
    table = catalogue_table(items, profile)
    if profile.vectorised:
        events = _chunked_events(day, midnight, who, seconds, items, people, profile, seed)
    else:
        events = _sequential_events(
            day,
            midnight,
            who,
            seconds,
            items,
            people,
            profile,
            table.column("title").to_pylist(),
            r,
        )
    return events, table


def generate_day(ds: date, start: date, profile: Profile, seed: int) -> tuple[pa.Table, pa.Table]:
    """Events and catalogue of day `ds`, whole (`day_parts` streams the events)."""
    events, items = day_parts(ds, start, profile, seed)
    return pa.Table.from_batches(list(events), EVENT_SCHEMA), items


def _sequential_events(
    day, midnight, who, seconds, items, people, profile, title_list, r
) -> Iterator[pa.RecordBatch]:
    """Request by request, with one random stream: the generator of tiny and small."""
    engine = _LexicalEngine(title_list)
    by_leaf = [np.flatnonzero(items.leaf == leaf) for leaf in range(len(LEAVES))]
    cols: dict[str, list] = {c: [] for c in EVENT_SCHEMA.names}

    def emit(rid, t, uid, q, item, kind, pos):
        cols["request_id"].append(rid)
        cols["event_time"].append(t)
        cols["user_id"].append(uid)
        cols["query"].append(q)
        cols["item_id"].append(f"i{item}")
        cols["event_type"].append(kind)
        cols["position"].append(pos)

    for j in range(len(who)):
        u = int(who[j])
        leaf = (
            int(people.leaves[u, int(r.integers(0, 2))])
            if r.random() < 0.8
            else int(r.integers(0, len(LEAVES)))
        )
        pool = by_leaf[leaf]
        if len(pool) == 0:
            continue
        fav = pool[items.brand[pool] == people.brands[u]]
        target = int(r.choice(fav if len(fav) and r.random() < 0.5 else pool))
        query = _query(items, target, r)
        shown = engine.search(query, profile.shown, r)
        t = midnight + timedelta(seconds=float(seconds[j]))
        rid, uid = f"r{day}_{j}", f"u{u}"
        words = set(query.split())
        for pos, k in enumerate(shown):
            k = int(k)
            emit(rid, t, uid, query, k, "impression", pos)
            relevance = len(words & set(title_list[k].split())) / len(words) + (
                items.leaf[k] == leaf
            )
            preference = 1.0 + (items.brand[k] == people.brands[u]) + (k == target)
            p_click = min(0.9, 0.12 * relevance * preference / (1 + 0.25 * pos))
            if r.random() < p_click:
                emit(rid, t + timedelta(seconds=5 + pos), uid, query, k, "click", pos)
                if r.random() < 0.3:
                    emit(rid, t + timedelta(seconds=60), uid, query, k, "cart", pos)
                    if r.random() < 0.4:
                        emit(rid, t + timedelta(seconds=120), uid, query, k, "purchase", pos)

    yield pa.RecordBatch.from_arrays(
        [pa.array(cols[f.name], f.type) for f in EVENT_SCHEMA], schema=EVENT_SCHEMA
    )


# --- the chunked generator (medium, large) -------------------------------------------------------

CHUNK = 50_000  # requests per record batch (about 600k events): bounds memory at any profile
GROUP_DRAWS, LEAF_DRAWS = 24, 8  # the engine's sample per request (see _engine_sample)
NOUNS_PER_LEAF = max(len(CATALOGUE[top][leaf]) for top, leaf in LEAVES)
NOUNS = [
    CATALOGUE[top][leaf][s] if s < len(CATALOGUE[top][leaf]) else ""  # index: leaf * 3 + s
    for top, leaf in LEAVES
    for s in range(NOUNS_PER_LEAF)
]
NOUN_WORDS = np.array([len(noun.split()) for noun in NOUNS])
SYNONYMS = np.array([len(CATALOGUE[top][leaf]) - 1 for top, leaf in LEAVES])
# term columns of a query, in the order they are written: [adjective] [colour] [brand] noun [material]
ADJ, COLOUR, BRAND, NOUN, MATERIAL = range(5)


class _Groups:
    """Items grouped by an integer key, to draw uniformly inside one group per request."""

    def __init__(self, key: np.ndarray, n_keys: int):
        self.order = np.argsort(key, kind="stable")
        self.count = np.bincount(key, minlength=n_keys)
        self.start = np.cumsum(self.count) - self.count

    def draw(self, group: np.ndarray, size: int, r: np.random.Generator) -> np.ndarray:
        """[n, size] item indices, with replacement; a draw from an empty group is -1."""
        count = self.count[group, None]
        pos = self.start[group, None] + (r.random((len(group), size)) * count).astype(np.int64)
        return np.where(count > 0, self.order[np.minimum(pos, len(self.order) - 1)], -1)


def _chunked_events(
    day, midnight, who, seconds, items, people, profile, seed
) -> Iterator[pa.RecordBatch]:
    """The same marketplace drawn CHUNK requests at a time, each chunk from its own seeded stream
    (so a chunk does not depend on how earlier ones were drawn)."""
    colour, colours = items.colour + 1, len(COLOURS) + 1  # -1 (none) becomes group 0
    groups = {  # items of a leaf, by (brand named?, colour named?) as in the query
        (False, False): _Groups(items.leaf, len(LEAVES)),
        (True, False): _Groups(items.leaf * TIERS + items.brand, len(LEAVES) * TIERS),
        (False, True): _Groups(items.leaf * colours + colour, len(LEAVES) * colours),
        (True, True): _Groups(
            (items.leaf * TIERS + items.brand) * colours + colour, len(LEAVES) * TIERS * colours
        ),
    }
    if (
        groups[False, False].count == 0
    ).any():  # a request browses a leaf and targets an item there
        raise ValueError(
            "the chunked generator needs items in every leaf: use a catalogue of "
            "a few thousand items or more"
        )
    ids = _prefixed("i", np.arange(len(items)))
    midnight_us = int(midnight.timestamp()) * 1_000_000
    for c, lo in enumerate(range(0, len(who), CHUNK)):
        r = _rng(seed, 4, day, c)
        yield _chunk(
            np.arange(lo, min(lo + CHUNK, len(who))),
            day,
            midnight_us,
            who,
            seconds,
            items,
            people,
            profile,
            groups,
            ids,
            r,
        )


def _chunk(
    req, day, midnight_us, who, seconds, items, people, profile, groups, ids, r
) -> pa.RecordBatch:
    n, u = len(req), who[req]
    # the leaf browsed: mostly one of the user's two, else any; the target: half the time an item
    # of the user's favourite brand there (when there is one), else any item of the leaf
    leaf = np.where(
        r.random(n) < 0.8, people.leaves[u, r.integers(0, 2, n)], r.integers(0, len(LEAVES), n)
    )
    fav = groups[True, False].draw(leaf * TIERS + people.brands[u], 1, r)[:, 0]
    anyone = groups[False, False].draw(leaf, 1, r)[:, 0]
    target = np.where((fav >= 0) & (r.random(n) < 0.5), fav, anyone)

    # the query: which of the target's attributes it names, as _query does
    named = np.zeros((n, 5), bool)
    named[:, NOUN] = True
    named[:, BRAND] = r.random(n) < 0.45
    named[:, COLOUR] = (items.colour[target] >= 0) & (r.random(n) < 0.35)
    named[:, ADJ] = (items.adjective[target] >= 0) & (r.random(n) < 0.25)
    named[:, MATERIAL] = (items.material[target] >= 0) & (r.random(n) < 0.15)
    synonym = np.where(
        (SYNONYMS[leaf] > 0) & (r.random(n) < 0.3),
        1 + (r.random(n) * np.maximum(SYNONYMS[leaf], 1)).astype(np.int64),
        0,
    )
    terms = _terms(items, target, leaf, synonym, named)
    # a typo in one named term, one query in ten; the term then matches no title
    typo_term = np.where(r.random(n) < 0.1, _nth_named(named, r), -1)
    typoed = np.zeros((n, 5), bool)
    for j in np.flatnonzero(typo_term >= 0):
        k = typo_term[j]
        terms[j, k], typoed[j, k] = _typo_term(terms[j, k], r)
    query = pc.binary_join_element_wise(
        *(pa.array(terms[:, k], pa.string()) for k in range(5)), " ", null_handling="skip"
    )

    shown, matched = _engine_sample(
        items, target, leaf, synonym, named & ~typoed, groups, profile.shown, r
    )
    query_words = NOUN_WORDS[leaf * NOUNS_PER_LEAF + synonym] + named.sum(1) - 1
    valid = shown >= 0
    k = np.maximum(shown, 0)
    relevance = matched / query_words[:, None] + (items.leaf[k] == leaf[:, None])
    preference = 1.0 + (items.brand[k] == people.brands[u][:, None]) + (k == target[:, None])
    pos = np.arange(profile.shown)
    p_click = np.minimum(0.9, 0.12 * relevance * preference / (1 + 0.25 * pos))
    click = valid & (r.random(shown.shape) < p_click)
    cart = click & (r.random(shown.shape) < 0.3)
    purchase = cart & (r.random(shown.shape) < 0.4)

    # one row per event, in the order the sequential generator writes them: per shown item its
    # impression, then click, cart and purchase
    happened = np.stack([valid, click, cart, purchase], axis=2)  # [n, shown, 4]
    row, slot, kind = np.nonzero(happened)
    t_us = midnight_us + np.round(seconds[req] * 1e6).astype(np.int64)
    offset_s = np.select([kind == 1, kind == 2, kind == 3], [5 + slot, 60, 120], 0)
    return pa.RecordBatch.from_arrays(
        [
            _prefixed(f"r{day}_", req[row]),
            pa.array(t_us[row] + offset_s * 1_000_000, pa.timestamp("us", tz="UTC")),
            _prefixed("u", u[row]),
            query.take(pa.array(row)),
            ids.take(pa.array(shown[row, slot])),
            _words(EVENT_TYPES, kind),
            pa.array(slot, pa.int32()),
        ],
        schema=EVENT_SCHEMA,
    )


def _terms(items: Items, target, leaf, synonym, named) -> np.ndarray:
    """[n, 5] the query's terms in writing order, None where not named."""
    top = LEAF_TOP[leaf]
    words = [
        np.array(ADJECTIVES, object)[items.adjective[target]],
        np.array(COLOURS, object)[items.colour[target]],
        np.array(BRAND_WORDS, object)[top * TIERS + items.brand[target]],
        np.array(NOUNS, object)[leaf * NOUNS_PER_LEAF + synonym],
        np.array(MATERIALS, object)[items.material[target]],
    ]
    return np.where(named, np.stack(words, axis=1), np.array(None, object))


def _nth_named(named: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """Per row, one of its named terms, uniformly."""
    j = (r.random(len(named)) * named.sum(1)).astype(np.int64)
    return (np.cumsum(named, axis=1) > j[:, None]).argmax(axis=1)


def _typo_term(term: str, r: np.random.Generator) -> tuple[str, bool]:
    typo = _typo(term, r)
    return typo, typo != term


def _engine_sample(
    items: Items, target, leaf, synonym, matchable, groups, shown: int, r
) -> tuple[np.ndarray, np.ndarray]:
    """The lexical engine (items with the most query words in their title first, ties in random
    order) over a sample instead of the whole catalogue: GROUP_DRAWS items of the leaf that share
    the brand and colour the query names (the engine's top tier), LEAF_DRAWS items of the leaf,
    and `shown` of the whole catalogue that pad a page of sparse matches, as the engine pads with
    browsing results. Words match by attribute: the first noun matches titles of its leaf (titles
    use it; a synonym matches none), brand, colour, adjective and material match titles that have
    them; a typo'd term matches nothing.

    Returns the shown items [n, shown] (-1 past the end of a short page) and each one's number of
    matched query words.
    """
    n = len(target)
    drawn = np.full((n, GROUP_DRAWS), -1)
    for (brand, colour), group in groups.items():
        rows = np.flatnonzero((matchable[:, BRAND] == brand) & (matchable[:, COLOUR] == colour))
        key = leaf[rows]
        if brand:
            key = key * TIERS + items.brand[target[rows]]
        if colour:
            key = key * (len(COLOURS) + 1) + items.colour[target[rows]] + 1
        drawn[rows] = group.draw(key, GROUP_DRAWS, r)
    pad = r.integers(0, len(items), (n, shown))
    cand = np.concatenate([drawn, groups[False, False].draw(leaf, LEAF_DRAWS, r), pad], axis=1)
    k, t = np.maximum(cand, 0), target[:, None]
    same = {  # [n, K] does candidate k share the target's attribute
        NOUN: (items.leaf[k] == leaf[:, None]) * NOUN_WORDS[leaf * NOUNS_PER_LEAF][:, None],
        BRAND: (LEAF_TOP[items.leaf[k]] == LEAF_TOP[leaf][:, None])
        & (items.brand[k] == items.brand[t]),
        COLOUR: items.colour[k] == items.colour[t],
        ADJ: items.adjective[k] == items.adjective[t],
        MATERIAL: items.material[k] == items.material[t],
    }
    matchable = matchable.copy()
    matchable[:, NOUN] &= synonym == 0
    matched = sum(matchable[:, term, None] * hit for term, hit in same.items()).astype(float)

    score = np.where(matched > 0, matched, -1.0)  # a sampled item without a match is no hit
    score[:, -shown:] = np.maximum(score[:, -shown:], 0)  # padding is shown after the hits
    score[cand < 0] = -3
    # an item drawn twice keeps its best-scored copy
    by_item = np.lexsort((-score, cand), axis=1)
    ordered = np.take_along_axis(cand, by_item, 1)
    repeat = np.zeros_like(score, bool)
    np.put_along_axis(
        repeat, by_item, np.pad(ordered[:, 1:] == ordered[:, :-1], ((0, 0), (1, 0))), 1
    )
    score[repeat] = -2
    page = np.lexsort((r.random(score.shape), -score), axis=1)[:, :shown]
    items_shown = np.take_along_axis(cand, page, 1)
    items_shown[np.take_along_axis(score, page, 1) < 0] = -1
    return items_shown, np.take_along_axis(matched, page, 1)


def write_day(
    landing: Path, ds: date, events: pa.Table | Iterable[pa.RecordBatch], items: pa.Table
) -> Path:
    """Writes a day folder atomically: a reader sees the whole day or none of it. Events given as
    record batches are written one row group each, never held whole."""
    final = landing / f"ds={ds.isoformat()}"
    tmp = landing / f".ds={ds.isoformat()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    if isinstance(events, pa.Table):
        pq.write_table(events, tmp / "events.parquet")
    else:
        with pq.ParquetWriter(tmp / "events.parquet", EVENT_SCHEMA) as writer:
            for batch in events:
                writer.write_batch(batch)
    pq.write_table(items, tmp / "items.parquet")
    if final.exists():
        for f in final.iterdir():
            f.unlink()
        final.rmdir()
    tmp.rename(final)
    return final


def generate(landing: Path, start: date, days: int, profile: str, seed: int) -> list[Path]:
    prof = PROFILES[profile]
    out = []
    for k in range(days):
        ds = start + timedelta(days=k)
        out.append(write_day(landing, ds, *day_parts(ds, start, prof, seed)))
    return out
