"""Token diagnostics on hand-built token sets: entropy, coverage, stages, Figure 3 and Figure 4,
with every expected number worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddbench.analysis import token_usage as tokens
from ddbench.core.errors import ConfigError

PYRAMID = (1, 2)  # scale 0: one token per image, scale 1: 2x2
VOCAB = 8


def token_set(scale0: list[int], scale1: list[list[int]], labels: list[int], classes=("a", "b")) -> tokens.TokenSet:
    return tokens.TokenSet([np.array(scale0)[:, None], np.array(scale1)], np.array(labels), PYRAMID, VOCAB, list(classes))


def test_entropy_and_coverage_are_exact():
    counts = np.array([2, 1, 1, 0, 0, 0, 0, 0])  # p = 1/2, 1/4, 1/4
    assert tokens.entropy(counts) == pytest.approx(1.5 * math.log(2), abs=1e-15)
    assert tokens.coverage(counts) == 3 / 8
    assert tokens.entropy(np.array([5, 0, 0])) == 0.0  # one token only: no uncertainty
    assert tokens.entropy(np.array([1, 1, 1, 1])) == pytest.approx(math.log(4), abs=1e-15)
    assert tokens.entropy(np.zeros(4, dtype=int)) == 0.0 and tokens.coverage(np.zeros(4, dtype=int)) == 0.0


def test_entropy_of_permuted_counts_is_bit_identical():
    counts = np.array([7, 1, 3, 0, 11, 2, 5, 13])
    assert tokens.entropy(counts) == tokens.entropy(counts[::-1].copy())


def test_dataset_and_class_usage_per_scale_and_stage():
    # class a: images 0, 1; class b: image 2
    tokens_ = token_set([3, 3, 5], [[0, 1, 2, 3], [0, 0, 0, 0], [7, 7, 6, 6]], [0, 0, 1])
    result = tokens.summary(tokens_)
    scale0, scale1 = result["dataset"]["per_scale"]
    # scale 0: tokens 3, 3, 5 -> p = 2/3, 1/3; 2 of 8 codes used
    assert scale0["entropy"] == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3), abs=1e-15)
    assert (scale0["coverage"], scale0["used"], scale0["tokens"]) == (2 / 8, 2, 3)
    # scale 1: 0 x5, 1, 2, 3, 7 x2, 6 x2 over 12 tokens
    probabilities = np.array([5, 1, 1, 1, 2, 2]) / 12
    assert scale1["entropy"] == pytest.approx(-(probabilities * np.log(probabilities)).sum(), abs=1e-15)
    assert scale1["coverage"] == 6 / 8
    # a 2-scale pyramid: scale 0 and scale 1 are both coarse; no mid or fine stage
    assert result["stages"] == {"coarse": [0, 1], "mid": [], "fine": []}
    assert set(result["dataset"]["per_stage"]) == {"coarse"}
    pooled = np.array([5, 1, 1, 3, 1, 2, 2]) / 15  # codes 0 (x5), 1, 2, 3 (x1+2), 5, 6 (x2), 7 (x2)
    assert result["dataset"]["per_stage"]["coarse"]["entropy"] == pytest.approx(-(pooled * np.log(pooled)).sum(), abs=1e-15)
    # class a alone: scale 1 tokens 0 x5, 1, 2, 3
    class_a = result["classes"]["a"]["per_scale"][1]
    assert class_a["coverage"] == 4 / 8 and class_a["tokens"] == 8
    class_b = result["classes"]["b"]["per_scale"][0]
    assert class_b["entropy"] == 0.0 and class_b["coverage"] == 1 / 8


def test_stages_follow_the_methods_split():
    assert tokens.stages_of(10) == {"coarse": [0, 1, 2, 3], "mid": [4, 5, 6], "fine": [7, 8, 9]}
    assert tokens.stages_of(6) == {"coarse": [0, 1, 2], "mid": [3, 4], "fine": [5]}  # digits


def test_unique_tokens_per_position():
    tokens_ = token_set([1, 1, 2], [[0, 1, 2, 3], [0, 1, 5, 3], [4, 1, 6, 3]], [0, 0, 0])
    scale0, scale1 = tokens.unique_per_position(tokens_)
    assert scale0.tolist() == [[2]]
    assert scale1.tolist() == [[2, 1], [3, 1]]
    assert tokens.unique_per_position(tokens_.of_class(0))[1].tolist() == [[2, 1], [3, 1]]


def test_figure3_counts_on_a_hand_built_pair():
    # three classes, one image each, scale 1 only varies (scale 0 identical in both runs)
    base = token_set([0, 0, 0], [[0, 0, 1, 1], [0, 1, 2, 3], [4, 4, 4, 4]], [0, 1, 2], classes=("a", "b", "c"))
    other = token_set([0, 0, 0], [[0, 1, 2, 3], [0, 0, 1, 1], [5, 5, 5, 5]], [0, 1, 2], classes=("a", "b", "c"))
    comparison = tokens.compare_classes(tokens.summary(base), tokens.summary(other))
    assert comparison["classes"] == 3
    scale0_entropy, scale1_entropy = comparison["per_scale"]["entropy"]
    assert (scale0_entropy["increased"], scale0_entropy["decreased"], scale0_entropy["unchanged"]) == (0, 0, 3)
    # a: ln2 -> ln4 (up), b: ln4 -> ln2 (down), c: 0 -> 0 with other codes (unchanged)
    assert (scale1_entropy["increased"], scale1_entropy["decreased"], scale1_entropy["unchanged"]) == (1, 1, 1)
    assert scale1_entropy["increased_percent"] == pytest.approx(100 / 3)
    scale1_coverage = comparison["per_scale"]["coverage"][1]
    assert (scale1_coverage["increased"], scale1_coverage["decreased"], scale1_coverage["unchanged"]) == (1, 1, 1)
    (coarse,) = comparison["per_stage"]["entropy"]
    assert coarse["at"] == "coarse" and coarse["increased"] + coarse["decreased"] + coarse["unchanged"] == 3
    # dataset level: code 5 replaces 4 at scale 1, other counts are the same multiset -> no entropy change
    assert comparison["dataset_delta"]["per_scale"][1]["entropy"] == pytest.approx(0.0, abs=1e-12)


def test_figure3_refuses_runs_of_different_generators():
    base = tokens.summary(token_set([0], [[0, 0, 0, 0]], [0]))
    other = dict(base, vocab_size=16)
    with pytest.raises(ConfigError, match="different VQ-VAEs"):
        tokens.compare_classes(base, other)


def test_token_set_rejects_malformed_maps():
    with pytest.raises(ConfigError, match="codebook"):
        token_set([0], [[0, 0, 0, 9]], [0])
    with pytest.raises(ConfigError, match="shape"):
        tokens.TokenSet([np.zeros((1, 1), int), np.zeros((1, 3), int)], np.array([0]), PYRAMID, VOCAB, ["a"])
