"""The examples train: each loss falls below a stated bound within a small, seeded budget.

Bounds are far below what a model that learnt nothing reaches (stated per test), so these
fail if any part of the training path (forward, backward, loss, optimizer) breaks.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastrnn.layers")

BACKEND = "native"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def examples():
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


@pytest.mark.parametrize("cell,steps,seed", [("gru", 150, 0), ("lstm", 200, 1)])
def test_adding_problem_learns(examples, cell, steps, seed):
    ap = examples("adding_problem")
    h = ap.train(cell, steps=steps, length=10, hidden_size=16, lr=2e-2, seed=seed, backend=BACKEND)
    # always answering 1.0 scores 1/6 ~ 0.167
    assert h["eval_mse"] < 0.03, h["eval_mse"]
    assert np.mean(h["loss"][-20:]) < 0.03


def test_adding_problem_batch():
    sys.path.insert(0, str(EXAMPLES))
    try:
        ap = importlib.import_module("adding_problem")
    finally:
        sys.path.remove(str(EXAMPLES))
    x, y = ap.make_batch(np.random.default_rng(0), 4, 8)
    assert x.shape == (8, 4, 2) and y.shape == (4, 1)
    assert np.all(x[:, :, 1].sum(0) == 2)
    assert np.all(x[:4, :, 1].sum(0) == 1)  # one marker in each half
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(0), rtol=1e-6)


def test_char_lm_learns_and_samples(examples):
    lm = examples("char_lm")
    text = lm.gather_text(max_chars=5000)
    assert len(text) == 5000 and set(text) <= {chr(i) for i in range(32, 127)} | {"\n"}
    h = lm.train(steps=100, seed=0, backend=BACKEND, hidden_size=32, batch=16, seq_len=16, lr=1e-2)
    V = len(h["model"].vocab)
    # a uniform guess scores ln(V) ~ 4.4 nats/char and character frequencies alone ~ 3.3
    # (the corpus' unigram entropy): below 3.0 the model uses context
    assert np.log(V) > 4.0
    assert np.mean(h["loss"][:3]) > 3.9
    assert np.mean(h["loss"][-10:]) < 3.0, np.mean(h["loss"][-10:])
    s = h["model"].sample(40, temperature=0.5, prime="The ", rng=0)
    assert len(s) == 44 and s.startswith("The ")
    assert s == h["model"].sample(40, temperature=0.5, prime="The ", rng=0)


def test_seq2seq_reverse_learns(examples):
    s2s = examples("seq2seq_reverse")
    h = s2s.train(
        steps=120,
        seed=0,
        backend=BACKEND,
        hidden_size=32,
        min_len=2,
        max_len=3,
        batch=32,
        lr=2e-2,
        eval_batch=100,
    )
    # guessing digits uniformly scores ln(10) ~ 2.3 nats/token
    assert np.mean(h["loss"][-10:]) < 0.2, np.mean(h["loss"][-10:])
    assert h["accuracy"] > 0.8, h["accuracy"]


def test_seq2seq_reverse_batch():
    sys.path.insert(0, str(EXAMPLES))
    try:
        s2s = importlib.import_module("seq2seq_reverse")
    finally:
        sys.path.remove(str(EXAMPLES))
    b = s2s.make_batch(np.random.default_rng(0), 5, 2, 4)
    for n, L in enumerate(b["src_lengths"]):
        np.testing.assert_array_equal(b["tgt_out"][:L, n], b["src"][:L, n][::-1])
        assert b["tgt_out"][L, n] == s2s.END and b["tgt_in"][0, n] == s2s.START
        assert b["tgt_mask"][: L + 1, n].all() and not b["tgt_mask"][L + 1 :, n].any()
