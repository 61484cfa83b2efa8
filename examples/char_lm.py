"""Character-level LSTM language model, trained on the Python standard library's docstrings.

The corpus is gathered at run time with ``inspect.getdoc`` over a few standard-library
modules (no download). Text is cut into N parallel streams and trained with truncated
backpropagation through time (``fastrnn.training.truncated_bptt``): the LSTM state is
carried from one chunk of ``--seq-len`` characters to the next, gradients are not.
Afterwards the model writes text, sampling each character from
``softmax(logits / temperature)``.

    python examples/char_lm.py --steps 300 --temperature 0.7
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import time

import numpy as np

from fastrnn.layers import LSTM
from fastrnn.losses import softmax_cross_entropy
from fastrnn.modules import Embedding, Linear
from fastrnn.optim import Adam, clip_grad_norm
from fastrnn.training import truncated_bptt

MODULES = ("textwrap", "json", "string", "functools", "collections", "fractions", "random")


def gather_text(modules: tuple[str, ...] = MODULES, max_chars: int = 60_000) -> str:
    """Docstrings of the given stdlib modules and their public members, as ASCII text.

    Deterministic for a given Python version: members are visited in sorted order.
    """
    parts: list[str] = []
    for name in modules:
        mod = importlib.import_module(name)
        doc = inspect.getdoc(mod)
        if doc:
            parts.append(doc)
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 40:
                    parts.append(doc)
    text = "\n\n".join(parts)
    text = "".join(ch if (32 <= ord(ch) < 127 or ch == "\n") else " " for ch in text)
    return text[:max_chars]


class CharLM:
    """Embedding -> LSTM -> Linear over characters."""

    def __init__(self, vocab: str, hidden_size: int, embed: int, seed: int, backend: str):
        self.vocab = vocab
        self.index = {c: i for i, c in enumerate(vocab)}
        V = len(vocab)
        self.emb = Embedding(V, embed, seed=seed)
        self.lstm = LSTM(embed, hidden_size, seed=seed + 1, backend=backend)
        self.head = Linear(hidden_size, V, seed=seed + 2)
        self.modules = [self.emb, self.lstm, self.head]

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def train_chunk(self, x: np.ndarray, y: np.ndarray, state):
        """Forward and backward over one chunk (T, N); returns (mean loss, final state)."""
        e, etape = self.emb.forward(x)
        h, state, ltape = self.lstm.forward(e, state)
        logits, htape = self.head.forward(h)
        loss, dlogits = softmax_cross_entropy(logits, y, reduction="mean")
        dh = self.head.backward(htape, dlogits)
        de, _ = self.lstm.backward(ltape, dh)
        self.emb.backward(etape, de)
        return loss, state

    def sample(
        self,
        n_chars: int,
        temperature: float = 0.8,
        prime: str = "The ",
        rng: np.random.Generator | int | None = None,
    ) -> str:
        """Generate ``n_chars`` characters after ``prime``, one step at a time."""
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        prime = "".join(c for c in prime if c in self.index) or self.vocab[0]
        state = None
        h = None
        for c in prime:
            h, state = self.lstm(self.emb(np.array([[self.index[c]]])), state)
        out = []
        for _ in range(n_chars):
            logits = self.head(h[0, 0]).astype(np.float64) / temperature
            p = np.exp(logits - logits.max())
            p /= p.sum()
            i = int(gen.choice(len(p), p=p))
            out.append(self.vocab[i])
            h, state = self.lstm(self.emb(np.array([[i]])), state)
        return prime + "".join(out)


def train(
    steps: int = 300,
    seed: int = 0,
    backend: str = "native",
    hidden_size: int = 128,
    embed: int = 32,
    batch: int = 32,
    seq_len: int = 32,
    lr: float = 5e-3,
    max_chars: int = 60_000,
) -> dict:
    """Train for ``steps`` chunks; returns ``{"loss": [per-step mean nats/char], "model"}``."""
    text = gather_text(max_chars=max_chars)
    vocab = "".join(sorted(set(text)))
    model = CharLM(vocab, hidden_size, embed, seed, backend)
    ids = model.encode(text)
    L = (len(ids) - 1) // batch
    if L < seq_len:
        raise ValueError("corpus too small for this batch and seq_len")
    # N parallel streams, time-major (L, N); targets are the next characters
    X = ids[: L * batch].reshape(batch, L).T
    Y = ids[1 : L * batch + 1].reshape(batch, L).T
    opt = Adam(model.modules, lr=lr)
    losses: list[float] = []

    def step(x, y, state):
        opt.zero_grad()
        loss, state = model.train_chunk(x, y, state)
        clip_grad_norm(model.modules, 5.0)
        opt.step()
        return loss, state

    while len(losses) < steps:
        n = min(steps - len(losses), L // seq_len)
        res = truncated_bptt(X[: n * seq_len], seq_len, step, targets=Y[: n * seq_len])
        losses.extend(res.losses)
    return {"loss": losses, "model": model, "corpus_chars": len(text)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--sample-chars", type=int, default=300)
    ap.add_argument("--backend", default="native", choices=["native", "reference"])
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    h = train(
        args.steps,
        args.seed,
        args.backend,
        hidden_size=args.hidden,
        batch=args.batch,
        seq_len=args.seq_len,
        lr=args.lr,
    )
    loss = h["loss"]
    V = len(h["model"].vocab)
    print(f"corpus {h['corpus_chars']} chars, vocabulary {V} (uniform guess: {np.log(V):.2f} nats)")
    for i in range(0, len(loss), max(1, len(loss) // 10)):
        print(f"step {i:5d}  loss {np.mean(loss[i : i + 10]):.3f} nats/char")
    print(f"trained {len(loss)} steps in {time.perf_counter() - t0:.1f} s\n")
    print(h["model"].sample(args.sample_chars, args.temperature, rng=args.seed))


if __name__ == "__main__":
    main()
