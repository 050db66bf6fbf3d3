"""A deterministic synthetic marketplace that writes landing days in the landing contract.

Items get titles from category vocabularies (brand, adjective, colour, material, noun, model
code); users keep stable category, brand and price preferences; each request's query is written
from a target item's attributes (partial terms, synonyms, typos); a lexical engine decides the
impressions; clicks follow relevance, preference and position; some clicks become carts and
purchases. The catalogue and the user base grow every day. Everything derives from
(seed, profile, day index), so any day can be regenerated alone and comes out identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
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
ADJECTIVES = ("wireless", "premium", "classic", "portable", "compact", "deluxe", "slim", "eco",
              "pro", "vintage", "ultra", "soft", "waterproof", "lightweight", "smart")
COLOURS = ("black", "white", "red", "blue", "green", "grey", "pink", "navy", "beige", "gold",
           "silver", "purple")
MATERIALS = ("cotton", "leather", "steel", "bamboo", "silicone", "wool", "ceramic", "aluminium",
             "plastic", "linen")
LEAVES = [(top, leaf) for top, leaves in CATALOGUE.items() for leaf in leaves]
BLOCK = 1024  # items and users are generated in seeded blocks so any prefix is reproducible


@dataclass(frozen=True)
class Profile:
    items: int  # catalogue size on day 0
    new_items_per_day: int
    users: int
    new_users_per_day: int
    requests_per_day: int
    shown: int = 10  # impressions per request
    shops_per_top: int = 12


PROFILES = {
    "tiny": Profile(items=300, new_items_per_day=20, users=150, new_users_per_day=20,
                    requests_per_day=1200),
    "small": Profile(items=2_000, new_items_per_day=100, users=1_500, new_users_per_day=100,
                     requests_per_day=8_000),
    "medium": Profile(items=200_000, new_items_per_day=2_000, users=100_000,
                      new_users_per_day=2_000, requests_per_day=85_000),
    "large": Profile(items=1_000_000, new_items_per_day=10_000, users=800_000,
                     new_users_per_day=10_000, requests_per_day=850_000),
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
    return Items(**{f: np.concatenate([getattr(b, f) for b in blocks])[:n]
                    for f in Items.__dataclass_fields__})


def item_id(i: int | np.ndarray) -> np.ndarray:
    return np.char.add("i", np.asarray(i).astype(str))


def titles(items: Items) -> list[str]:
    out = []
    for k in range(len(items)):
        top, leaf = LEAVES[items.leaf[k]]
        words = [BRANDS[top][items.brand[k]]]
        if items.adjective[k] >= 0:
            words.append(ADJECTIVES[items.adjective[k]])
        if items.colour[k] >= 0:
            words.append(COLOURS[items.colour[k]])
        if items.material[k] >= 0:
            words.append(MATERIALS[items.material[k]])
        words.append(CATALOGUE[top][leaf][0])
        words.append(f"{leaf[:2]}{items.code[k]}")
        out.append(" ".join(words))
    return out


@dataclass
class Users:
    leaves: np.ndarray  # [n, 2] preferred leaves
    brands: np.ndarray  # [n] preferred brand tier
    activity: np.ndarray  # relative request rate


def users(seed: int, n: int) -> Users:
    parts = []
    for b in range(-(-n // BLOCK)):
        r = _rng(seed, 2, b)
        parts.append((r.integers(0, len(LEAVES), (BLOCK, 2)), r.integers(0, 6, BLOCK),
                      r.pareto(1.5, BLOCK) + 0.2))
    return Users(*(np.concatenate(p)[:n] for p in zip(*parts)))


def _typo(word: str, r: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    k = int(r.integers(1, len(word) - 1))
    return word[:k] + word[k + 1:] if r.random() < 0.5 else word[:k] + word[k + 1] + word[k] + word[k + 2:]


def _query(items: Items, k: int, r: np.random.Generator) -> str:
    top, leaf = LEAVES[items.leaf[k]]
    nouns = CATALOGUE[top][leaf]
    terms = [nouns[int(r.integers(1, len(nouns)))] if len(nouns) > 1 and r.random() < 0.3 else nouns[0]]
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


def generate_day(ds: date, start: date, profile: Profile, seed: int) -> tuple[pa.Table, pa.Table]:
    """Events and catalogue of day `ds` of the marketplace that opened on `start`."""
    day = (ds - start).days
    if day < 0:
        raise ValueError(f"day {ds} is before the marketplace start {start}")
    n_items = profile.items + day * profile.new_items_per_day
    n_users = profile.users + day * profile.new_users_per_day
    items = catalogue(seed, n_items)
    title_list = titles(items)
    people = users(seed, n_users)
    r = _rng(seed, 3, day)

    engine = _LexicalEngine(title_list)
    by_leaf = [np.flatnonzero(items.leaf == leaf) for leaf in range(len(LEAVES))]
    midnight = datetime(ds.year, ds.month, ds.day, tzinfo=timezone.utc)
    n_req = profile.requests_per_day
    who = r.choice(n_users, n_req, p=people.activity / people.activity.sum())
    # requests end 10 minutes before midnight so follow-up events stay inside the day
    seconds = np.sort(r.uniform(0, 86_400 - 600, n_req))

    cols: dict[str, list] = {c: [] for c in
                             ("request_id", "event_time", "user_id", "query", "item_id",
                              "event_type", "position")}

    def emit(rid, t, uid, q, item, kind, pos):
        cols["request_id"].append(rid)
        cols["event_time"].append(t)
        cols["user_id"].append(uid)
        cols["query"].append(q)
        cols["item_id"].append(f"i{item}")
        cols["event_type"].append(kind)
        cols["position"].append(pos)

    for j in range(n_req):
        u = int(who[j])
        leaf = int(people.leaves[u, int(r.integers(0, 2))]) if r.random() < 0.8 else int(r.integers(0, len(LEAVES)))
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
            relevance = len(words & set(title_list[k].split())) / len(words) + (items.leaf[k] == leaf)
            preference = 1.0 + (items.brand[k] == people.brands[u]) + (k == target)
            p_click = min(0.9, 0.12 * relevance * preference / (1 + 0.25 * pos))
            if r.random() < p_click:
                emit(rid, t + timedelta(seconds=5 + pos), uid, query, k, "click", pos)
                if r.random() < 0.3:
                    emit(rid, t + timedelta(seconds=60), uid, query, k, "cart", pos)
                    if r.random() < 0.4:
                        emit(rid, t + timedelta(seconds=120), uid, query, k, "purchase", pos)

    events = pa.table({
        "request_id": pa.array(cols["request_id"], pa.string()),
        "event_time": pa.array(cols["event_time"], pa.timestamp("us", tz="UTC")),
        "user_id": pa.array(cols["user_id"], pa.string()),
        "query": pa.array(cols["query"], pa.string()),
        "item_id": pa.array(cols["item_id"], pa.string()),
        "event_type": pa.array(cols["event_type"], pa.string()),
        "position": pa.array(cols["position"], pa.int32()),
    })
    tops = np.array([LEAVES[leaf][0] for leaf in items.leaf])
    catalogue_table = pa.table({
        "item_id": pa.array(item_id(np.arange(n_items)).tolist(), pa.string()),
        "title": pa.array(title_list, pa.string()),
        "leaf_category": pa.array([LEAVES[leaf][1] for leaf in items.leaf], pa.string()),
        "top_category": pa.array(tops.tolist(), pa.string()),
        "brand": pa.array([BRANDS[t][b] for t, b in zip(tops, items.brand)], pa.string()),
        "shop": pa.array([f"shop_{t}_{s % profile.shops_per_top}" for t, s in zip(tops, items.shop)], pa.string()),
        "price": pa.array(items.price, pa.float64()),
    })
    return events, catalogue_table


def write_day(landing: Path, ds: date, events: pa.Table, items: pa.Table) -> Path:
    """Writes a day folder atomically: a reader sees the whole day or none of it."""
    final = landing / f"ds={ds.isoformat()}"
    tmp = landing / f".ds={ds.isoformat()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, tmp / "events.parquet")
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
        out.append(write_day(landing, ds, *generate_day(ds, start, prof, seed)))
    return out
