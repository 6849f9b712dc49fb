"""The offline data accuracy is measured on: fixed, real, and the same on every run."""

from __future__ import annotations

import pytest
import torch

from quantpipe_core.datasets import digits, stdlib_sentences


def test_the_digits_split_is_fixed_stratified_and_disjoint():
    train, test = digits("train"), digits("test")
    assert (len(train.labels), len(test.labels)) == (1078, 719)
    assert test.labels.bincount().min() >= 70  # every class held out, in proportion
    assert train.images.shape[1:] == (1, 8, 8)
    assert float(test.images.min()) >= -1.0 and float(test.images.max()) <= 1.0
    assert torch.equal(digits("test").images, test.images)
    flat_train = {tuple(x.flatten().tolist()) for x in train.images}
    overlap = sum(tuple(x.flatten().tolist()) in flat_train for x in test.images)
    assert overlap < 5  # scikit-learn's digits has a handful of duplicate images, no more


def test_sentences_are_distinct_real_english_and_seeded():
    sentences = stdlib_sentences()
    assert len(sentences) > 1500 and len(set(sentences)) == len(sentences)
    assert all(s[0].isupper() and s.endswith(".") and 6 <= len(s.split()) <= 40 for s in sentences)
    assert stdlib_sentences(50) == sentences[:50]
    assert stdlib_sentences(50, seed=1) != sentences[:50]
    with pytest.raises(ValueError, match="asked for"):
        stdlib_sentences(10**6)


def test_bad_digits_part_is_refused():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        digits("validation")
