"""The learned context model: a tiny integer network that picks the coding context of a pixel.

It maps eight causal integer features (quarter-octave logarithms of neighbouring errors and of
the local gradient, and an intensity class) through one hidden ReLU layer to the context index.
Weights are integers, trained offline (scripts/train_pred_context.py) and shipped in the package
as `.npz` files named by the SHA-256 of their content; the payload header names the digest, so
a decoder never runs another model than the encoder did. No torch at run time: the kernel
evaluates the network in int64 arithmetic, identically on every platform.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

from ..base import CodecUnavailable
from . import _kernel as k

__all__ = ["ContextModel", "load_model", "shipped_models"]

_MAX_HIDDEN = 64


@dataclass(frozen=True, eq=False)
class ContextModel:
    name: str
    digest: bytes  # SHA-256 of the .npz file the weights came from
    w1: npt.NDArray[np.int64]  # (hidden, N_FEATURES)
    b1: npt.NDArray[np.int64]  # (hidden,)
    w2: npt.NDArray[np.int64]  # (hidden,)
    b2: npt.NDArray[np.int64]  # (1,): output in units of 2**-NET_SHIFT context steps

    @classmethod
    def from_bytes(cls, data: bytes, name: str, sha256: str | None = None) -> ContextModel:
        digest = hashlib.sha256(data).digest()
        if sha256 is not None and digest.hex() != sha256.lower():
            raise CodecUnavailable(f"context model {name}: SHA-256 {digest.hex()} is not the expected {sha256}")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                w1, b1, w2, b2 = (np.ascontiguousarray(arrays[key], dtype=np.int64) for key in ("w1", "b1", "w2", "b2"))
        except (OSError, KeyError, ValueError) as exc:
            raise CodecUnavailable(f"context model {name} cannot be read: {exc}") from exc
        hidden = w1.shape[0] if w1.ndim == 2 else -1
        if (not 1 <= hidden <= _MAX_HIDDEN or w1.shape != (hidden, k.N_FEATURES) or b1.shape != (hidden,)
                or w2.shape != (hidden,) or b2.shape != (1,)):
            raise CodecUnavailable(f"context model {name} has the wrong layout")
        # Features are below 2**8: with these bounds a hidden unit stays below 2**32 and the
        # output sum below 2**58, inside int64 whatever the weights.
        if max(np.abs(w1).max(), np.abs(b1).max(), np.abs(w2).max()) >= 1 << 20 or np.abs(b2).max() >= 1 << 40:
            raise CodecUnavailable(f"context model {name} has weights out of range")
        return cls(name, digest, w1, b1, w2, b2)


def load_model(filename: str) -> ContextModel:
    """A model shipped in this package (`pixcodec/pred/models/<sha256>.npz`), checked against its name."""
    data = resources.files(__package__).joinpath("models", filename).read_bytes()
    return ContextModel.from_bytes(data, filename, sha256=filename.removesuffix(".npz"))


@functools.cache
def shipped_models() -> tuple[ContextModel, ...]:
    """Every model shipped in the package, so a decoder reads any payload a release wrote.

    Read once per process: each registry (one per blob read) would otherwise load and hash them."""
    folder = resources.files(__package__).joinpath("models")
    if not folder.is_dir():
        return ()
    return tuple(load_model(entry.name) for entry in sorted(folder.iterdir(), key=lambda e: e.name)
                 if entry.name.endswith(".npz"))
