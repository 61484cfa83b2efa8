"""Encoder–decoder (sequence-to-sequence) model on recurrent layers.

Architecture (time-major, T = time, N = batch)::

    encoder:  src (T_s, N) ints --Embedding--> (T_s, N, E) --RNN--> final state s
              (or src (T_s, N, input_size) floats fed to the RNN directly)
    decoder:  tgt_in (T_t, N) ints --Embedding--> (T_t, N, E) --RNN(state0 = s)-->
              (T_t, N, H) --Linear--> logits (T_t, N, tgt_vocab)

Training uses teacher forcing: ``tgt_in`` is the target sequence shifted right behind a
start token, and the loss compares ``logits`` with the unshifted targets. The encoder's
final state (``h``, or ``(h, c)`` for LSTM; (num_layers, N, H)) is the decoder's initial
state, so the gradient reaching the decoder's initial state flows back into the encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastrnn._module import Module
from fastrnn.modules import DTypeLike, Embedding, Linear, SeedLike, _positive_int, _seed_config

__all__ = ["Seq2Seq"]

CELLS = ("lstm", "gru")


class Seq2Seq(Module):
    """Encoder (Embedding + RNN) whose final state starts a decoder (Embedding + RNN +
    Linear).

    Args:
        src_vocab: source vocabulary size, or None for real-valued source sequences of
            ``input_size`` features (no source embedding).
        tgt_vocab: target vocabulary size (the decoder's output classes).
        hidden_size: H of both recurrent layers.
        input_size: features of a real-valued source (only with ``src_vocab=None``).
        cell: ``"lstm"`` or ``"gru"``. num_layers: stacked layers (same in both).
        embedding_dim: E of both embeddings (default ``hidden_size``).
        dtype, seed, backend: as for the layers (``backend`` "native" or "reference").

    Parameters are named ``encoder.embedding.weight``, ``encoder.rnn.<PyTorch name>``,
    ``decoder.embedding.weight``, ``decoder.rnn.<PyTorch name>``, ``decoder.out.weight``,
    ``decoder.out.bias``. ``save(path)`` writes them with :meth:`config`, so
    ``Seq2Seq.from_file(path)`` rebuilds the model.
    """

    def __init__(
        self,
        src_vocab: int | None,
        tgt_vocab: int,
        hidden_size: int,
        *,
        input_size: int | None = None,
        cell: str = "lstm",
        num_layers: int = 1,
        embedding_dim: int | None = None,
        dtype: DTypeLike = "float32",
        seed: SeedLike = None,
        backend: str = "native",
    ) -> None:
        from fastrnn import layers

        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell = cell
        self.tgt_vocab = _positive_int("tgt_vocab", tgt_vocab)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        E = (
            self.hidden_size
            if embedding_dim is None
            else _positive_int("embedding_dim", embedding_dim)
        )
        self.embedding_dim = E
        self.seed = _seed_config(seed)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

        def sub() -> int:
            return int(rng.integers(0, 2**31 - 1))

        rnn_cls = layers.LSTM if cell == "lstm" else layers.GRU
        if src_vocab is None:
            if input_size is None:
                raise ValueError("pass src_vocab (token source) or input_size (real-valued source)")
            self.src_vocab = None
            self.input_size = _positive_int("input_size", input_size)
            self.src_embedding: Embedding | None = None
            enc_in = self.input_size
        else:
            if input_size is not None:
                raise ValueError("pass either src_vocab or input_size, not both")
            self.src_vocab = _positive_int("src_vocab", src_vocab)
            self.input_size = None
            self.src_embedding = Embedding(self.src_vocab, E, dtype=dtype, seed=sub())
            enc_in = E
        kw = {"num_layers": self.num_layers, "dtype": dtype, "backend": backend}
        self.encoder = rnn_cls(enc_in, self.hidden_size, seed=sub(), **kw)
        self.tgt_embedding = Embedding(self.tgt_vocab, E, dtype=dtype, seed=sub())
        self.decoder = rnn_cls(E, self.hidden_size, seed=sub(), **kw)
        self.out = Linear(self.hidden_size, self.tgt_vocab, dtype=dtype, seed=sub())
        self.dtype = self.out.dtype

    # -- module protocol -------------------------------------------------------------
    def _children(self) -> dict[str, Any]:
        c: dict[str, Any] = {}
        if self.src_embedding is not None:
            c["encoder.embedding"] = self.src_embedding
        c["encoder.rnn"] = self.encoder
        c["decoder.embedding"] = self.tgt_embedding
        c["decoder.rnn"] = self.decoder
        c["decoder.out"] = self.out
        return c

    @property  # type: ignore[override]
    def params(self) -> dict[str, np.ndarray]:
        return {f"{p}.{k}": v for p, m in self._children().items() for k, v in m.params.items()}

    @property  # type: ignore[override]
    def grads(self) -> dict[str, np.ndarray]:
        return {f"{p}.{k}": v for p, m in self._children().items() for k, v in m.grads.items()}

    def zero_grad(self) -> None:
        for m in self._children().values():
            m.zero_grad()

    def _submodules(self) -> list[Any]:
        return list(self._children().values())

    def config(self) -> dict[str, Any]:
        """Constructor arguments (``seed`` is None when a Generator was passed)."""
        return dict(
            src_vocab=self.src_vocab,
            tgt_vocab=self.tgt_vocab,
            hidden_size=self.hidden_size,
            input_size=self.input_size,
            cell=self.cell,
            num_layers=self.num_layers,
            embedding_dim=self.embedding_dim,
            dtype=self.dtype.name,
            seed=self.seed,
            backend=self.encoder.backend,
        )

    # -- checks ------------------------------------------------------------------------
    def _check_src(self, src: Any) -> np.ndarray:
        src = np.asarray(src)
        if self.src_embedding is not None:
            if src.ndim != 2:
                raise ValueError(f"src must be token ids of shape (T_src, N), got {src.shape}")
        elif src.ndim != 3 or src.shape[2] != self.input_size:
            raise ValueError(
                f"src must have shape (T_src, N, {self.input_size}) (input_size), got {src.shape}"
            )
        if src.shape[0] < 1:
            raise ValueError("src must have at least one time step")
        return src

    def _check_tgt(self, tgt_in: Any, N: int) -> np.ndarray:
        tgt_in = np.asarray(tgt_in)
        if tgt_in.ndim != 2 or tgt_in.shape[1] != N or tgt_in.shape[0] < 1:
            raise ValueError(
                f"tgt_in must be token ids of shape (T_tgt, N={N}), got {tgt_in.shape}"
            )
        return tgt_in

    # -- training ----------------------------------------------------------------------
    def forward(
        self, src: Any, tgt_in: Any, src_lengths: Any = None, training: bool = True
    ) -> tuple[np.ndarray, Any]:
        """Teacher-forced pass: ``src`` (T_s, N) ints (or (T_s, N, input_size)), ``tgt_in``
        (T_t, N) ints -> ``(logits (T_t, N, tgt_vocab), tape)``. ``src_lengths`` (N,)
        makes the encoder's final state the state at each sequence's own end."""
        src = self._check_src(src)
        tgt_in = self._check_tgt(tgt_in, src.shape[1])
        tape: dict[str, Any] = {}
        if self.src_embedding is not None:
            enc_in, tape["src_emb"] = self.src_embedding.forward(src, training=training)
        else:
            enc_in = src
        _, state, tape["enc"] = self.encoder.forward(enc_in, lengths=src_lengths, training=training)
        dec_in, tape["tgt_emb"] = self.tgt_embedding.forward(tgt_in, training=training)
        y, _, tape["dec"] = self.decoder.forward(dec_in, state=state, training=training)
        logits, tape["out"] = self.out.forward(y, training=training)
        return logits, tape

    def backward(self, tape: Any, dlogits: Any) -> np.ndarray | None:
        """Accumulate all gradients from ``dlogits`` (T_t, N, tgt_vocab). Returns the
        gradient for a real-valued ``src`` (None for token sources)."""
        if not isinstance(tape, dict) or tape.get("out") is None:
            raise ValueError("tape must come from forward(..., training=True)")
        dy = self.out.backward(tape["out"], dlogits)
        d_dec_in, dstate = self.decoder.backward(tape["dec"], dy)
        self.tgt_embedding.backward(tape["tgt_emb"], d_dec_in)
        d_enc_in, _ = self.encoder.backward(tape["enc"], None, dstate)
        if self.src_embedding is not None:
            self.src_embedding.backward(tape["src_emb"], d_enc_in)
            return None
        return d_enc_in

    # -- inference ---------------------------------------------------------------------
    def encode(self, src: Any, src_lengths: Any = None) -> Any:
        """The encoder's final state for ``src`` (h, or (h, c) for LSTM; (L, N, H))."""
        src = self._check_src(src)
        x = self.src_embedding(src) if self.src_embedding is not None else src
        _, state = self.encoder(x, lengths=src_lengths)
        return state

    def decode_step(self, tokens: Any, state: Any) -> tuple[np.ndarray, Any]:
        """One decoder step: ``tokens`` (N,) ints and a state -> ``(logits (N, V), state)``."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise ValueError(f"tokens must have shape (N,), got {tokens.shape}")
        y, state = self.decoder(self.tgt_embedding(tokens[None]), state)
        return self.out(y[0]), state

    def generate(
        self,
        src: Any,
        max_len: int,
        start_token: int,
        end_token: int | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
        rng: SeedLike = None,
        src_lengths: Any = None,
    ) -> np.ndarray:
        """Decode step by step from the encoded ``src``.

        Starts from ``start_token``; each step feeds the previous output back in. Greedy
        takes the arg-max; otherwise samples from ``softmax(logits / temperature)`` with
        ``rng`` (a Generator or seed). Stops after ``max_len`` steps or once every sequence
        has produced ``end_token``; positions after a sequence's end hold ``end_token``.

        Returns int64 tokens of shape (T_out, N), T_out <= max_len, without the start token.
        """
        max_len = _positive_int("max_len", max_len)
        for name, tok in (("start_token", start_token), ("end_token", end_token)):
            if tok is not None and not (0 <= int(tok) < self.tgt_vocab):
                raise ValueError(f"{name} must be in [0, {self.tgt_vocab}), got {tok!r}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        state = self.encode(src, src_lengths)
        N = np.asarray(src).shape[1]
        tok = np.full(N, int(start_token), dtype=np.int64)
        done = np.zeros(N, dtype=bool)
        out = []
        for _ in range(max_len):
            logits, state = self.decode_step(tok, state)
            if greedy:
                nxt = np.argmax(logits, axis=-1)
            else:
                z = logits.astype(np.float64) / temperature
                z -= z.max(axis=-1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=-1, keepdims=True)
                u = gen.random(N)
                nxt = np.minimum((np.cumsum(p, axis=-1) < u[:, None]).sum(-1), self.tgt_vocab - 1)
            nxt = nxt.astype(np.int64)
            if end_token is not None:
                nxt[done] = end_token
                done |= nxt == end_token
            out.append(nxt)
            tok = nxt
            if end_token is not None and done.all():
                break
        return np.stack(out)

    def __repr__(self) -> str:
        src = f"src_vocab={self.src_vocab}" if self.src_vocab else f"input_size={self.input_size}"
        return (
            f"Seq2Seq({src}, tgt_vocab={self.tgt_vocab}, hidden_size={self.hidden_size}, "
            f"cell={self.cell!r}, num_layers={self.num_layers})"
        )
