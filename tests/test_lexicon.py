"""Pretrained word vectors (training.lexicon): the WordPiece split is BERT's, the vectors keep
the pretrained model's sense of which words are alike in a space fixed across calls, and
training starts new words from them."""

import logging
import random
import string
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_training import CFG, make_day

from training import lexicon
from training.train import PRETRAINED_WORD_SCALE, train


def test_wordpiece_split_is_the_bundled_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    bert = tokenizers.Tokenizer.from_file(str(lexicon._model_dir() / "tokenizer.json"))
    bert.no_padding()
    pieces, _ = lexicon._wordpieces()
    rnd = random.Random(0)
    words = ["laptop", "headphones", "xbox", "4k", "1080p", "ssd", "refrigerator", "a" * 101]
    words += [
        "".join(rnd.choices(string.ascii_lowercase + string.digits, k=rnd.randint(1, 14)))
        for _ in range(300)
    ]
    unk = pieces["[UNK]"]
    for word in words:
        expected = bert.encode(word, add_special_tokens=False).ids
        assert lexicon.split(word, pieces) == ([] if expected == [unk] else expected), word
    assert lexicon.split("\u2603", pieces) == []  # a snowman is no piece of BERT's vocabulary


def test_vectors_keep_like_words_together_at_the_asked_length():
    words = ["laptop", "notebook", "television", "tv", "refrigerator", "fridge", "\u2603"]
    rows, known = lexicon.vectors(words, 32, row_norm=2.0)
    assert rows.shape == (7, 32) and rows.dtype == np.float32
    assert known.tolist() == [True] * 6 + [False] and not rows[6].any()
    assert np.linalg.norm(rows[known], axis=1).mean() == pytest.approx(2.0, rel=1e-5)
    unit = rows[:6] / np.linalg.norm(rows[:6], axis=1, keepdims=True)
    cos = unit @ unit.T
    for a, b in ((0, 1), (2, 3), (4, 5)):  # each word's nearest other word is its synonym
        assert np.argsort(-cos[a])[1] == b and np.argsort(-cos[b])[1] == a, words[a]


def test_a_words_vector_does_not_depend_on_the_words_beside_it():
    """A warm-started day starts its new words alone, its base started them among others: both
    must land in one space, so the projection is fixed, not fitted to the words asked for."""
    alone, _ = lexicon.vectors(["fridge"], 32, row_norm=1.0)
    words = ["fridge", "laptop", "yoga", "mat", "lipstick", "blender", "phone", "case"]
    among, _ = lexicon.vectors(words, 32, row_norm=1.0)
    cos = alone[0] @ among[0] / np.linalg.norm(alone[0]) / np.linalg.norm(among[0])
    assert cos == pytest.approx(1.0, abs=1e-5)


NEW_WORDS = ["laptop", "notebook", "television", "tv", "fridge", "refrigerator", "camera", "phone"]


def test_training_starts_new_words_from_pretrained_vectors_and_keeps_learnt_ones(caplog):
    examples, corpus = make_day(seed=0, n_items=20, n_examples=200)
    cfg = replace(CFG, word_init="minilm", epochs=1)
    base = train(examples, corpus, cfg, seed=0)
    new_examples, new_corpus = make_day(seed=1, n_items=10, n_examples=100, prefix="new-")
    titles = [f"{' '.join(NEW_WORDS).upper()} w{k}" for k in range(10)]
    new_corpus = new_corpus.set_column(1, "title", [titles])
    with caplog.at_level(logging.INFO, logger="training.train"):
        # lr 0: the rows stay as initialised, so what is compared is the initialisation
        warm = train(new_examples, new_corpus, replace(cfg, lr=0.0), base=base, seed=0)
    words = warm.vocabs.word
    table = warm.model.emb["word"].weight.detach()
    old = len(base.vocabs.word)
    assert torch.equal(table[:old], base.model.emb["word"].weight.detach())
    new = words.tokens[old - 2 :]
    assert new == NEW_WORDS
    expected, _ = lexicon.vectors(new, cfg.dim, row_norm=1.0)
    got = table[old:].numpy()
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos == pytest.approx(np.ones(len(new)), abs=1e-5)
    # as long as PRETRAINED_WORD_SCALE of the random rows they replace (std 0.02 per component)
    length = np.linalg.norm(got, axis=1).mean()
    assert length == pytest.approx(PRETRAINED_WORD_SCALE * 0.02 * np.sqrt(cfg.dim), rel=0.15)
    logged = [r.getMessage() for r in caplog.records]
    assert any("8 of 8 new words start from pretrained" in m for m in logged), logged
