"""flops_per_example against a hand count, and how it scales with sequence lengths."""

import pytest

from ebr.settings import ModelConfig
from training.flops import flops_per_example

CFG = ModelConfig(dim=8, heads=2, batch_size=4, sampled_negatives=12, hard_negatives=2)
LENGTHS = {
    "words": 3,
    "char1": 7,
    "char2": 5,
    "past": 2,
    "past_words": 4,
    "rt": 5,
    "st": 6,
    "lt": 9,
    "title": 10,
}


def test_matches_hand_count_of_the_full_model():
    d, m, B, S, n = 8, 6, 4, 12, 2
    W, C1, C2, P, PW, RT, ST, LT, T = LENGTHS.values()
    fusion = 1 + m + 3 * m + 1  # [CLS], Q, rt/st/lt readouts per unit, user id
    items = 1 + S / B  # the positive and a quarter of the 12 sampled negatives

    def encoder(k):  # qkv 3d^2 + out d^2 + ffn 2 x 4d^2 per token; scores + values 2 k^2 d
        return 2 * 12 * d * d * k + 2 * 2 * k * k * d

    def first_output(k):  # keys and values of k tokens; the rest for the first token only
        return 2 * 2 * d * d * k + 2 * 10 * d * d + 2 * 2 * k * d

    def mha(k):
        return 2 * 4 * d * d * k + 2 * 2 * k * k * d

    def attend(q, k):  # + the zero vector
        return 2 * 2 * q * (k + 1) * d

    forward = (
        encoder(W)  # word encoder
        + attend(1, P)  # q_his
        + 2 * 2 * 8 * d * d * RT
        + mha(RT)
        + attend(m, RT)  # 2-layer LSTM, 8d^2 weights each
        + mha(ST)
        + attend(m, ST)
        + 4 * attend(m, 3)  # long-term: 4 attributes x 3 actions
        + first_output(fusion)
        + items * 2 * d * d  # title projection
        + 2 * d * (B + S + n)  # logits
    )
    pooled = d * (W + C1 + C2 + P * PW + 12 * LT + items * T)
    assert flops_per_example(CFG, LENGTHS) == 3 * forward + 2 * pooled
    # Two clicks a request: the user tower (all but the item tower and the logits) runs once.
    item_side = items * 2 * d * d + 2 * d * (B + S + n)
    user_side = forward - item_side
    halved = 3 * (user_side / 2 + item_side) + 2 * (d * items * T + (pooled - d * items * T) / 2)
    assert flops_per_example(CFG, {**LENGTHS, "requests": 0.5}) == pytest.approx(halved, rel=1e-12)


def test_matches_hand_count_of_the_plain_two_tower():
    cfg = ModelConfig(
        dim=8,
        heads=2,
        batch_size=4,
        sampled_negatives=12,
        query_unit="words",
        personalised=False,
        loss="hinge",
    )
    d = 8
    # [CLS] fusion over 2 tokens, title projection of 1 + 12 / 4 items, logits against 16
    forward = 2 * 2 * d * d * 2 + 2 * 10 * d * d + 2 * 2 * 2 * d + 4 * 2 * d * d + 2 * d * 16
    pooled = d * (3 + 4 * 10)
    # Keys the variant does not read are not needed.
    assert flops_per_example(cfg, {"words": 3, "title": 10}) == 3 * forward + 2 * pooled


def test_grows_linearly_in_pooled_and_recurrent_lengths_and_quadratically_in_attended():
    def at(**change):
        return flops_per_example(CFG, {**LENGTHS, **change})

    for name in ("char1", "char2", "past_words", "lt", "title"):  # pooling only: linear
        assert at(**{name: 20}) - at(**{name: 10}) == at(**{name: 10}) - at(**{name: 0}) > 0
    for name in ("words", "rt", "st"):  # self-attention adds a k^2 term: constant 2nd difference
        step1, step2 = at(**{name: 11}) - at(**{name: 10}), at(**{name: 12}) - at(**{name: 11})
        assert step2 - step1 == 3 * 2 * 2 * 2 * CFG.dim  # 3 x (scores + values) x d(k^2)/dk^2


def test_behaviour_lists_of_rows_of_different_lengths_count_each_rows_own_attention():
    # Two rows trimmed to their own lengths (real-time 2 and 8, short-term 0 and 6): the mean of
    # their counts, which the mean lengths with the mean squares give and the squares of the
    # mean lengths understate (their attention scores are quadratic).
    rows = [{"rt": 2, "st": 0}, {"rt": 8, "st": 6}]
    each = [flops_per_example(CFG, {**LENGTHS, **row}) for row in rows]
    mean = {"rt": 5, "rt_sq": (4 + 64) / 2, "st": 3, "st_sq": (0 + 36) / 2}
    assert flops_per_example(CFG, {**LENGTHS, **mean}) == pytest.approx(sum(each) / 2, rel=1e-12)
    squared_means = flops_per_example(CFG, {**LENGTHS, "rt": 5, "st": 3})
    assert squared_means < sum(each) / 2
