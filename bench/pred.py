"""Benchmark of our `pred` codec against JPEG-LS and JPEG-XL e7, on real images, in one run.

For every greyscale frame pred takes (8/16 bits allocated, one sample), it codes the frame after
the container's reversible preprocessing with JPEG-LS, JPEG-XL at effort 7, pred with the
hand-designed context formula and pred with each learned context model shipped in the package;
it checks every result decodes bit-exactly and prints, per modality group and overall
(size-weighted): compression ratio on allocated bits, size relative to JPEG-LS and to JPEG-XL
e7, and single-thread encode/decode MB/s.

    .venv/bin/python bench/pred.py                        # ../shared/corpus, 2 frames per object
    .venv/bin/python bench/pred.py --frames 1 --limit 40  # a quick subset while iterating
    .venv/bin/python bench/pred.py --held-out             # only files never used for tuning

The predictor, the context formula and the learned model were tuned on the files matching
TUNING below (the Philips CT and Siemens T1 MR series and the single CT and MR files); the table
is printed for every file and again for the held-out rest, so that the figures say how the codec
does on images it was not tuned on. Speeds are CPU time of the one thread that codes (process
time, with BLAS held to one thread), so other load on the machine does not distort them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as the archive workers run it

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pixcodec import FrameCodec, PixelSpec, preprocess  # noqa: E402
from pixcodec.pred import PredCodec, shipped_models  # noqa: E402
from pixcodec.standard import JpegLsCodec, JpegXlCodec  # noqa: E402
from tests.pixcodec.corpus_frames import CORPUS_DIR, manifest, raw_frames, spec_of  # noqa: E402

GROUPS = {"CT": "CT", "MR": "MR", "CR": "CR/DX/MG", "DX": "CR/DX/MG", "MG": "CR/DX/MG", "US": "US",
          "PT": "PT/NM", "NM": "PT/NM"}
GROUP_ORDER = ["CT", "MR", "CR/DX/MG", "US", "PT/NM", "other", "overall"]
TUNING = re.compile(r"^(ct/pancreas_ct_philips_series/|mr/brain_tumor_progression_t1post_siemens_series/"
                    r"|ct/[^/]+\.dcm$|mr/[^/]+\.dcm$)")


@dataclass
class Tally:
    raw: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    encode_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    decode_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: int = 0


def codecs() -> dict[str, FrameCodec]:
    found: dict[str, FrameCodec] = {"JPEG-LS": JpegLsCodec(), "JPEG-XL e7": JpegXlCodec(effort=7),
                                    "pred": PredCodec.default()}
    for model in shipped_models():
        found[f"pred+{model.name[:8]}"] = PredCodec(model, shipped_models())
    return found


def warm_up(coders: dict[str, FrameCodec]) -> None:
    """One small frame through every codec first: numba compiles (or loads) pred's kernel on its
    first call, which is no part of coding speed."""
    spec = PixelSpec(rows=64, columns=64, samples_per_pixel=1, bits_allocated=16, bits_stored=12, signed=False,
                     photometric="MONOCHROME2")
    frame = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096
    for codec in coders.values():
        codec.decode(codec.encode(frame, spec), spec)


def run(frames_per_object: int, limit: int | None, held_out_only: bool) -> dict[str, dict[str, Tally]]:
    coders = codecs()
    warm_up(coders)
    tallies: dict[str, dict[str, Tally]] = {"all": defaultdict(Tally), "held-out": defaultdict(Tally)}
    entries = [e for e in manifest() if e["bits_allocated"] in (8, 16) and e["samples_per_pixel"] == 1]
    if held_out_only:
        entries = [e for e in entries if not TUNING.match(e["path"])]
    if limit is not None:
        entries = entries[:: max(1, len(entries) // limit)][:limit]
    for number, entry in enumerate(entries, 1):
        spec = spec_of(entry)
        group = GROUPS.get(entry["modality"], "other")
        scopes = ["all"] + ([] if TUNING.match(entry["path"]) else ["held-out"])
        for frame in raw_frames(entry, limit=frames_per_object):
            coded, record = preprocess.forward(frame, spec)
            coding = preprocess.coding_spec(spec, record)
            results: dict[str, tuple[int, float, float]] = {}
            for name, codec in coders.items():
                started = time.process_time()
                payload = codec.encode(coded, coding)
                encoded = time.process_time() - started
                started = time.process_time()
                decoded = codec.decode(payload, coding)
                decoded_s = time.process_time() - started
                if not np.array_equal(np.asarray(decoded).astype(coded.dtype), coded):
                    raise SystemExit(f"{name} did not round-trip {entry['path']}")
                results[name] = (len(payload), encoded, decoded_s)
            for scope in scopes:
                for key in (group, "overall"):
                    tally = tallies[scope][key]
                    tally.raw += frame.nbytes
                    tally.frames += 1
                    for name, (size, enc, dec) in results.items():
                        tally.sizes[name] += size
                        tally.encode_s[name] += enc
                        tally.decode_s[name] += dec
        print(f"\r{number}/{len(entries)} {entry['path'][:60]:60s}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return tallies


def report(tallies: dict[str, dict[str, Tally]], names: list[str]) -> str:
    lines = []
    for scope, by_group in tallies.items():
        if not by_group:
            continue
        lines.append(f"\n## {scope} files ({'every file' if scope == 'all' else 'not used for tuning'})\n")
        lines.append("| group | frames | MB | " + " | ".join(f"{n} ratio" for n in names)
                     + " | pred vs JPEG-LS | pred vs JPEG-XL e7 | "
                     + " | ".join(f"{n} vs pred" for n in names if n.startswith("pred+"))
                     + " | " + " | ".join(f"{n} enc/dec MB/s" for n in names) + " |")
        lines.append("|" + "---|" * (3 + len(names) + 2 + sum(n.startswith("pred+") for n in names) + len(names)))
        for group in GROUP_ORDER:
            tally = by_group.get(group)
            if tally is None or tally.frames == 0:
                continue
            ratios = [tally.raw / tally.sizes[n] for n in names]
            versus = [tally.sizes["pred"] / tally.sizes["JPEG-LS"] - 1, tally.sizes["pred"] / tally.sizes["JPEG-XL e7"] - 1]
            learned = [tally.sizes[n] / tally.sizes["pred"] - 1 for n in names if n.startswith("pred+")]
            speeds = [f"{tally.raw / 1e6 / tally.encode_s[n]:.1f} / {tally.raw / 1e6 / tally.decode_s[n]:.1f}" for n in names]
            lines.append(f"| {group} | {tally.frames} | {tally.raw / 1e6:.1f} | "
                         + " | ".join(f"{r:.3f}" for r in ratios) + " | "
                         + " | ".join(f"{v:+.1%}" for v in versus) + " | "
                         + "".join(f"{v:+.2%} | " for v in learned)
                         + " | ".join(speeds) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2, help="frames per object, spread over it (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="objects, spread over the corpus (default all)")
    parser.add_argument("--held-out", action="store_true", help="only files not used for tuning")
    args = parser.parse_args()
    print(f"corpus: {CORPUS_DIR}; frames per object: {args.frames}; one thread")
    tallies = run(args.frames, args.limit, args.held_out)
    print(report(tallies, list(codecs())))
    print("\nratio: bytes of the stored words / bytes coded; vs: relative size (negative = smaller); "
          "MB/s: stored words per second of one thread")


if __name__ == "__main__":
    main()
