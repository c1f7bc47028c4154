"""Train the learned context model of the `pred` codec and ship it as integer weights.

The network maps eight causal integer features of a pixel (quarter-octave logarithms of the
neighbouring errors, of the local gradient and of the hand-designed activity, and an intensity
class; see pixcodec/pred/_kernel.py) through one hidden ReLU layer to a scale: twice the log2 of
the pixel's expected error, which the kernel uses as its coding context. Training data come from
running the encoder over frames of the training files with the hand-designed contexts; the loss
is a Laplace negative log-likelihood of the error (1/8 units) with scale 2**(output / 2), so the
network learns the error scale the context should stand for, on the hand formula's scale.

The weights are quantised to integers (features are integers, hidden units in 2**-8, output in
2**-NET_SHIFT), written as `pixcodec/pred/models/<sha256>.npz`, and the script prints the path.
Training is seeded and deterministic on CPU; decoding never needs torch.

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python scripts/train_pred_context.py --epochs 8     # the shipped model
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pixcodec import preprocess  # noqa: E402
from pixcodec.pred import _kernel as k  # noqa: E402
from pixcodec.pred.codec import _run, default_predictor, fit_predictor  # noqa: E402
from tests.pixcodec.corpus_frames import manifest, raw_frames, spec_of  # noqa: E402

MODELS = ROOT / "pixcodec" / "pred" / "models"
# Two of the series bench/pred.py counts as used for tuning; everything else stays held out.
TRAINING = ("ct/pancreas_ct_philips_series/", "mr/brain_tumor_progression_t1post_siemens_series/")
HIDDEN_SCALE = 8  # hidden units in 2**-8


def dump_features(image: npt.NDArray[np.int32], maxval: int) -> npt.NDArray[np.int64]:
    """Each regular-mode pixel's features, hand context and |error| (1/8 units), from the encoder."""
    fitted = fit_predictor(image) if image.size >= 4096 else None
    weights, thresholds = fitted if fitted is not None else default_predictor()
    dump = np.full((image.size, k.N_FEATURES + 2), -1, dtype=np.int64)
    buf = np.zeros(4 * image.size + 1024, dtype=np.uint8)
    status, _ = _run(image, True, maxval, weights, thresholds, None, buf, 0, dump)
    if status != k.STATUS_OK:
        raise RuntimeError(f"encoder status {status}")
    return dump[dump[:, -1] >= 0]  # two-value pixels are not coded in the regular mode


def training_data(frames_per_object: int, per_frame: int, seed: int) -> npt.NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    parts = []
    for entry in manifest():
        if not entry["path"].startswith(TRAINING):
            continue
        spec = spec_of(entry)
        for frame in raw_frames(entry, limit=frames_per_object):
            coded, record = preprocess.forward(frame, spec)
            coding = preprocess.coding_spec(spec, record)
            rows = dump_features(np.ascontiguousarray(coded, dtype=np.int32), (1 << coding.bits_stored) - 1)
            if len(rows) > per_frame:
                rows = rows[rng.choice(len(rows), per_frame, replace=False)]
            parts.append(rows)
    return np.concatenate(parts)


def train(data: npt.NDArray[np.int64], hidden: int, epochs: int, seed: int) -> dict[str, npt.NDArray[np.int64]]:
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    features = torch.tensor(data[:, :k.N_FEATURES], dtype=torch.float32)
    magnitude = torch.tensor(data[:, k.N_FEATURES + 1] + 1.0, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(k.N_FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        permutation = torch.randperm(len(features), generator=order)
        total = 0.0
        for start in range(0, len(features), 4096):
            index = permutation[start:start + 4096]
            optimiser.zero_grad()
            # Laplace negative log-likelihood of the error with scale b = 2**(z / 2): the network
            # learns the scale a context should stand for, in the units of the hand formula.
            z = net(features[index]).squeeze(1)
            log_b = z * (0.5 * np.log(2.0))
            loss = (log_b + magnitude[index] * torch.exp(-log_b)).mean()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        print(f"epoch {epoch + 1}: nll {total / len(features):.4f} nats")
    first, second = net[0], net[2]
    out_scale = 1 << (k.NET_SHIFT - HIDDEN_SCALE)
    return {
        "w1": np.round(first.weight.detach().numpy() * (1 << HIDDEN_SCALE)).astype(np.int64),
        "b1": np.round(first.bias.detach().numpy() * (1 << HIDDEN_SCALE)).astype(np.int64),
        "w2": np.round(second.weight.detach().numpy()[0] * out_scale).astype(np.int64),
        # + one half: the kernel's shift then rounds to the nearest context instead of flooring.
        "b2": np.array([round(float(second.bias.detach()[0]) * (1 << k.NET_SHIFT)) + (1 << (k.NET_SHIFT - 1))],
                       dtype=np.int64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8, help="frames per training object")
    parser.add_argument("--per-frame", type=int, default=20000, help="pixels sampled per frame")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    data = training_data(args.frames, args.per_frame, args.seed)
    print(f"{len(data)} training pixels")
    weights = train(data, args.hidden, args.epochs, args.seed)
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    blob = buffer.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    MODELS.mkdir(exist_ok=True)
    (MODELS / f"{digest}.npz").write_bytes(blob)
    print(f"wrote {MODELS / f'{digest}.npz'}")


if __name__ == "__main__":
    main()
