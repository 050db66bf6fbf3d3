"""Query and title text -> words, char 1-grams and char 2-grams (the multi-granular units)."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import normalizers, pre_tokenizers

# NFKD folds full-width and compatibility forms (common in shop titles) and splits accents off
# so StripAccents can drop them: "Ｃafé" and "cafe" become the same word.
_NORMALIZER = normalizers.Sequence(
    [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
)
# Splits on whitespace and punctuation; CJK runs stay whole and are covered by the char n-grams.
_PRE_TOKENIZER = pre_tokenizers.BertPreTokenizer()


def normalize(text: str) -> str:
    return _NORMALIZER.normalize_str(text)


@lru_cache(maxsize=1 << 17)  # queries and titles repeat a lot within a day
def words(text: str) -> tuple[str, ...]:
    pieces = _PRE_TOKENIZER.pre_tokenize_str(normalize(text))
    # Lone punctuation carries no meaning for retrieval.
    return tuple(w for w, _ in pieces if any(c.isalnum() for c in w))


@lru_cache(maxsize=1 << 17)
def char_ngrams(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Char 1-grams and 2-grams of the normalised text, inside words (no pair spans a space)."""
    ws = words(text)
    unigrams = tuple(c for w in ws for c in w)
    bigrams = tuple(w[i : i + 2] for w in ws for i in range(len(w) - 1))
    return unigrams, bigrams
