"""Seq2Seq: finite-difference gradients on a tiny model, decoding, bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastrnn.layers")

from fastrnn.losses import softmax_cross_entropy
from fastrnn.seq2seq import Seq2Seq

BACKEND = "native"


def _loss(model, src, tgt_in, tgt_out, src_lengths=None):
    logits, tape = model.forward(src, tgt_in, src_lengths=src_lengths)
    loss, dlogits = softmax_cross_entropy(logits, tgt_out)
    return loss, dlogits, tape


def _check_fd(model, src, tgt_in, tgt_out, src_lengths=None, eps=1e-6):
    model.zero_grad()
    _, dlogits, tape = _loss(model, src, tgt_in, tgt_out, src_lengths)
    dsrc = model.backward(tape, dlogits)
    for name, p in model.params.items():
        g = model.grads[name]
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            fp = _loss(model, src, tgt_in, tgt_out, src_lengths)[0]
            p[i] = old - eps
            fm = _loss(model, src, tgt_in, tgt_out, src_lengths)[0]
            p[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8, err_msg=name)
    return dsrc


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_backward_matches_finite_differences(rng, cell):
    model = Seq2Seq(5, 6, 3, cell=cell, embedding_dim=2, dtype="float64", seed=0, backend=BACKEND)
    src = rng.integers(0, 5, (4, 2))
    tgt_in = rng.integers(0, 6, (3, 2))
    tgt_out = rng.integers(0, 6, (3, 2))
    assert _check_fd(model, src, tgt_in, tgt_out) is None
    names = set(model.params)
    assert {"encoder.embedding.weight", "decoder.out.weight", "decoder.rnn.weight_hh_l0"} <= names


def test_real_valued_source_gradient_and_lengths(rng):
    model = Seq2Seq(
        None, 4, 3, input_size=2, cell="gru", num_layers=2, dtype="float64", seed=1, backend=BACKEND
    )
    assert "encoder.embedding.weight" not in model.params
    src = rng.standard_normal((5, 2, 2))
    tgt_in = rng.integers(0, 4, (2, 2))
    tgt_out = rng.integers(0, 4, (2, 2))
    lengths = np.array([5, 3])
    dsrc = _check_fd(model, src, tgt_in, tgt_out, src_lengths=lengths)
    num = np.zeros_like(src)
    for i in np.ndindex(src.shape):
        old = src[i]
        src[i] = old + 1e-6
        fp = _loss(model, src, tgt_in, tgt_out, lengths)[0]
        src[i] = old - 1e-6
        fm = _loss(model, src, tgt_in, tgt_out, lengths)[0]
        src[i] = old
        num[i] = (fp - fm) / 2e-6
    np.testing.assert_allclose(dsrc, num, rtol=1e-5, atol=1e-8)
    assert not dsrc[3:, 1].any()  # steps past a sequence's length get no gradient


def test_greedy_generate_is_deterministic_and_matches_teacher_forcing(rng):
    model = Seq2Seq(7, 7, 8, cell="lstm", dtype="float64", seed=3, backend=BACKEND)
    src = rng.integers(0, 7, (5, 3))
    out1 = model.generate(src, max_len=6, start_token=0)
    out2 = model.generate(src, max_len=6, start_token=0)
    np.testing.assert_array_equal(out1, out2)
    assert out1.shape == (6, 3) and out1.dtype == np.int64
    # step-by-step decoding equals the full teacher-forced pass fed with its own outputs
    tgt_in = np.concatenate([np.zeros((1, 3), np.int64), out1[:-1]])
    logits, _ = model.forward(src, tgt_in, training=False)
    np.testing.assert_array_equal(np.argmax(logits, -1), out1)


def test_generate_stops_at_end_token(rng):
    model = Seq2Seq(4, 5, 4, cell="gru", dtype="float64", seed=0, backend=BACKEND)
    src = rng.integers(0, 4, (3, 2))
    model.out.params["bias"][4] = 100.0  # token 4 always wins
    out = model.generate(src, max_len=10, start_token=0, end_token=4)
    np.testing.assert_array_equal(out, [[4, 4]])
    # sequences that end early keep end_token while the others continue
    model.out.params["bias"][4] = 0.0
    free = model.generate(src, max_len=8, start_token=0)
    end = int(free[1, 0])
    out = model.generate(src, max_len=8, start_token=0, end_token=end)
    for n in range(2):
        hits = np.flatnonzero(out[:, n] == end)
        if hits.size:
            assert (out[hits[0] :, n] == end).all()
    assert out.shape[0] <= 8


def test_sampling_is_reproducible_with_seed(rng):
    model = Seq2Seq(4, 6, 4, dtype="float64", seed=0, backend=BACKEND)
    src = rng.integers(0, 4, (3, 4))
    a = model.generate(src, 5, start_token=0, greedy=False, temperature=1.5, rng=7)
    b = model.generate(src, 5, start_token=0, greedy=False, temperature=1.5, rng=7)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() < 6


def test_state_dict_roundtrip(rng):
    a = Seq2Seq(4, 5, 3, dtype="float64", seed=0, backend=BACKEND)
    b = Seq2Seq(4, 5, 3, dtype="float64", seed=1, backend=BACKEND)
    b.load_state_dict(a.state_dict())
    src = rng.integers(0, 4, (3, 2))
    tgt = rng.integers(0, 5, (2, 2))
    np.testing.assert_array_equal(a.forward(src, tgt)[0], b.forward(src, tgt)[0])


def test_bad_input():
    with pytest.raises(ValueError, match="cell"):
        Seq2Seq(4, 5, 3, cell="rnn", backend=BACKEND)
    with pytest.raises(ValueError, match="input_size"):
        Seq2Seq(None, 5, 3, backend=BACKEND)
    m = Seq2Seq(4, 5, 3, backend=BACKEND)
    with pytest.raises(ValueError, match=r"src must be token ids of shape \(T_src, N\)"):
        m.forward(np.zeros((3, 2, 1), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="tgt_in"):
        m.forward(np.zeros((3, 2), int), np.zeros((2, 3), int))
    with pytest.raises(IndexError):
        m.forward(np.full((3, 2), 9), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="start_token"):
        m.generate(np.zeros((3, 2), int), 4, start_token=5)
    with pytest.raises(ValueError, match="max_len"):
        m.generate(np.zeros((3, 2), int), 0, start_token=0)
    with pytest.raises(ValueError, match="temperature"):
        m.generate(np.zeros((3, 2), int), 3, start_token=0, greedy=False, temperature=0)
    with pytest.raises(ValueError, match="tape"):
        m.backward({}, np.zeros((2, 2, 5)))
