"""training/text.py tokenises whole columns with Arrow kernels; it must cut the words BERT's
pre-tokeniser cuts (the HF `tokenizers` normaliser and pre-tokeniser are the reference: the
tokeniser models were trained with before it was vectorised)."""

import csv
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tokenizers import normalizers, pre_tokenizers

from training import text

REAL = Path(__file__).resolve().parents[2] / "shared" / "data"
_NORMALIZER = normalizers.Sequence(
    [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
)
_PRE_TOKENIZER = pre_tokenizers.BertPreTokenizer()

TRICKY = [
    "Red Café  Mug, 2x!",
    "ＲＥＤ mug",  # full-width
    "C++ for dummies - 3rd ed.",
    "wi-fi router $19.99 (2-pack)",
    "tab\tand\nnewline\r\nand\u00a0nbsp\u3000ideographic\u2003em\u0085nel",
    "苹果手机 iPhone13 新款",  # CJK runs stay whole
    "ｶﾞﾝﾀﾞﾑ プラモデル",  # half-width kana: NFKD splits off the voicing mark
    "Ελληνικά ΚΕΦΑΛΑΙΑ, кириллица",
    "हिन्दी शब्द",  # Devanagari vowel signs are marks
    "العربية كلمة",
    "emoji 😀 party🎉 ok👍🏽",
    "½ inch ² ³ ① № ™ ©",
    "don't stop—it's “quoted” «guillemets» ¿qué? ¡sí!",
    "",
    "   ",
    "!!! ??? ...",
    "x" * 10_000,
    "a_b a/b a.b a:b a@b a#b a~b a`b a|b",
    "ß straße ǅ ﬁ ligature",
]
# Words of letters, digits and control bytes, cut by blanks and symbols: a random text over
# these has every kind of piece.
ASCII = [chr(b) for b in range(128)] + list("aZ9 ") * 20


def reference_words(s: str) -> tuple[str, ...]:
    pieces = _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZER.normalize_str(s))
    return tuple(w for w, _ in pieces if any(c.isalnum() for c in w))


def reference_chars(s: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ws = reference_words(s)
    return tuple(c for w in ws for c in w), tuple(
        w[i : i + 2] for w in ws for i in range(len(w) - 1)
    )


def test_words_are_folded_lowercased_and_cut_at_spaces_and_punctuation():
    assert text.word_lists(["Red Café  Mug, 2x!", "ＲＥＤ mug"]).to_pylist() == [
        ["red", "cafe", "mug", "2x"],
        ["red", "mug"],  # full-width folds to ASCII
    ]
    unigrams, bigrams = text.char_lists(["Tea Cup"])
    assert unigrams.to_pylist() == [list("teacup")]
    assert bigrams.to_pylist() == [["te", "ea", "cu", "up"]]  # no pair across the space


def test_tricky_texts_tokenise_as_the_bert_reference():
    words = text.word_lists(TRICKY).to_pylist()
    unigrams, bigrams = (lists.to_pylist() for lists in text.char_lists(TRICKY))
    for s, w, u, b in zip(TRICKY, words, unigrams, bigrams, strict=True):
        assert tuple(w) == reference_words(s), s
        assert (tuple(u), tuple(b)) == reference_chars(s), s


def test_ascii_texts_take_a_byte_path_that_cuts_the_same_words():
    # Every ASCII byte (controls, each symbol, both cases) in random texts: all-ASCII columns
    # take the numpy path, a column with one non-ASCII text splits between the two paths.
    rng = random.Random(0)
    texts = ["".join(rng.choice(ASCII) for _ in range(rng.randrange(30))) for _ in range(2000)]
    mixed = [*texts[:100], "Café ｍug", *texts[100:200]]
    for column in (texts, mixed):
        words = text.word_lists(column).to_pylist()
        assert [tuple(w) for w in words] == [reference_words(s) for s in column]
    assert sum(map(len, words)) > 300
    assert any(c < " " for w in words for c in "".join(w))  # control bytes inside words


def test_columns_keep_row_order_nulls_and_limits():
    texts = pa.array(["one two three", None, "", "four", "five six seven eight"])
    assert text.word_lists(texts, 2).to_pylist() == [
        ["one", "two"],
        [],
        [],
        ["four"],
        ["five", "six"],
    ]
    unigrams, bigrams = text.char_lists(texts, 3)
    assert unigrams.to_pylist() == [["o", "n", "e"], [], [], ["f", "o", "u"], ["f", "i", "v"]]
    assert bigrams.to_pylist() == [
        ["on", "ne", "tw"],
        [],
        [],
        ["fo", "ou", "ur"],
        ["fi", "iv", "ve"],
    ]
    # A slice of a column (as a record batch hands out) reads from its own offset.
    assert text.word_lists(texts.slice(3)).to_pylist() == [
        ["four"],
        ["five", "six", "seven", "eight"],
    ]
    # pandas hands strings over with 64-bit offsets (large_string): the same words.
    assert text.word_lists(texts.cast(pa.large_string()), 2) == text.word_lists(texts, 2)
    # A null row may still hold bytes in the column's buffers (if_else leaves them): none read.
    stale = pc.if_else(
        pa.array([True, False]), pa.array(["ab", "cé"]), pa.scalar(None, pa.string())
    )
    assert text.word_lists(stale).to_pylist() == [["ab"], []]
    none = pa.array([None, ""], pa.string())
    assert [x.to_pylist() for x in text.char_lists(none)] == [[[], []], [[], []]]


def _real_texts() -> list[str]:
    texts: list[str] = []
    for name, columns in (
        ("bestbuy/train.csv", ("query",)),
        ("bestbuy/products_parsed.csv", ("name", "shortDescription")),
        ("crowdflower/train.csv", ("query", "product_title", "product_description")),
    ):
        with open(REAL / name, encoding="utf-8", errors="replace", newline="") as f:
            texts += [row[c] or "" for row in csv.DictReader(f) for c in columns]
    return texts


@pytest.mark.skipif(not REAL.is_dir(), reason=f"the shared real data is not at {REAL}")
def test_real_queries_and_titles_tokenise_as_the_reference():
    texts = _real_texts()
    words = text.word_lists(texts).to_pylist()
    unigrams, bigrams = (lists.to_pylist() for lists in text.char_lists(texts))
    wrong = [
        s
        for s, w, u, b in zip(texts, words, unigrams, bigrams)
        if (tuple(w), (tuple(u), tuple(b))) != (reference_words(s), reference_chars(s))
    ]
    assert len(texts) > 50_000
    assert wrong == []
