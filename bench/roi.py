"""ROI-hybrid benchmark: per modality group, what the automatic ROI costs and saves, in one run.

For every CT, MR, CR/DX/MG, US and XA/RF frame of the corpus (up to --frames per multi-frame object) it
finds the automatic mask, codes the frame ROI-hybrid at each bound, and in the same run codes it
with lossless JPEG-LS, with our best lossless coding (the mode decision at the archive budget:
JPEG-XL, JPEG 2000, our `pred` codec, ...) and with whole-image JPEG-LS near-lossless at the same
bound. It checks every ROI-hybrid blob (exact inside, within the bound outside) and prints per
group and bound: ROI fraction, size relative to lossless JPEG-LS, to the best lossless and to
whole-image near-lossless, PSNR overall
and outside the ROI, worst error outside, and encode/decode milliseconds per frame (one core,
mask finding timed separately). "ROI alone" is what the exact region costs by itself: the PRED
stream with the outside allowed 255 levels off (next to nothing stored there), for one-sample
frames; colour frames count their ROI-hybrid blob. No coding of the outside can go below it.

    .venv/bin/python bench/roi.py                     # ../shared/corpus/manifest.json
    .venv/bin/python bench/roi.py --bounds 2 --frames 1 --out bench/results
    .venv/bin/python bench/roi.py --by-series         # one row per series or file
    .venv/bin/python bench/roi.py --match ct/pancreas # only corpus paths containing the text
    .venv/bin/python bench/roi.py --best-budget ingest # a faster "best lossless" baseline
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "pixcodec"))

from corpus_frames import manifest, raw_frames, read_dataset, spec_of  # noqa: E402

from pixcodec import PixelSpec  # noqa: E402
from pixcodec.roi import automatic_mask, decode, encode, measure, read_header, rescale_of, stored_values  # noqa: E402
from pixcodec.decide import budget_named, decide  # noqa: E402
from pixcodec.pred.near import MAX_TOLERANCE, encode_within  # noqa: E402
from pixcodec.roi.codec import _jls_encode, _split  # noqa: E402

GROUPS = {"CT": "CT", "MR": "MR", "CR": "CR/DX/MG", "DX": "CR/DX/MG", "MG": "CR/DX/MG", "US": "US", "XA": "XA/RF",
          "RF": "XA/RF"}


@dataclass
class Tally:
    frames: int = 0
    pixels: int = 0
    roi_pixels: int = 0
    roi_bytes: int = 0
    lossless_bytes: int = 0
    near_bytes: int = 0
    best_bytes: int = 0
    alone_bytes: int = 0
    squared: float = 0.0
    squared_outside: float = 0.0
    outside: int = 0
    worst: int = 0
    peak: float = 0.0
    encode_s: float = 0.0
    decode_s: float = 0.0
    mask_s: float = 0.0
    layouts: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def frames(limit: int, match: str | None) -> Iterator[tuple[str, dict[str, Any], PixelSpec, npt.NDArray[np.integer],
                                                           float, float]]:
    for entry in manifest():
        group = GROUPS.get(entry["modality"])
        if group is None or not entry["has_pixel_data"] or (match is not None and match not in entry["path"]):
            continue
        spec = spec_of(entry)
        slope, intercept = rescale_of(read_dataset(entry))
        for frame in raw_frames(entry, limit=limit):
            yield group, entry, spec, frame, slope, intercept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bounds", type=int, nargs="+", default=[1, 2, 4, 8], help="max errors outside the ROI")
    parser.add_argument("--best-budget", default="archive", choices=("ingest", "archive"),
                        help="the mode decision budget that makes the best-lossless baseline")
    parser.add_argument("--frames", type=int, default=2, help="frames per multi-frame object (spread over it)")
    parser.add_argument("--out", type=Path, default=None, help="folder for roi.md and roi.json")
    parser.add_argument("--by-series", action="store_true", help="one row per series or file, not per group")
    parser.add_argument("--match", default=None, help="only corpus paths containing this text")
    args = parser.parse_args()
    tallies: dict[tuple[str, int], Tally] = defaultdict(Tally)
    best_budget = budget_named(args.best_budget)
    for group, entry, spec, frame, slope, intercept in frames(args.frames, args.match):
        photometric = "RGB" if spec.samples_per_pixel == 3 and entry["encapsulated"] else spec.photometric
        started = time.perf_counter()
        mask = automatic_mask(frame, entry["modality"], photometric=photometric, bits_stored=spec.bits_stored,
                              slope=slope, intercept=intercept)
        mask_s = time.perf_counter() - started
        values, _ = _split(frame, spec)
        precision = max(2, spec.bits_stored)
        lossless = len(_jls_encode(values, 0, precision, spec))
        chosen = decide(frame, spec, best_budget, verify=False).encoded
        best = min(lossless, len(chosen.payload) + len(chosen.table))
        alone = None
        if spec.samples_per_pixel == 1:
            free_outside = np.where(mask, 0, MAX_TOLERANCE).astype(np.uint8)
            alone = len(encode_within(values, (1 << precision) - 1, free_outside)[0])
        for bound in args.bounds:
            near = min(bound, 255, ((1 << precision) - 1) // 2)
            whole = len(_jls_encode(values, near, precision, spec))
            started = time.perf_counter()
            blob = encode(frame, spec, mask, bound)
            encoded = time.perf_counter()
            decoded, _ = decode(blob)
            decoded_at = time.perf_counter()
            figures = measure(frame, decoded, mask, spec, len(blob))
            if figures.max_error_inside or figures.max_error_outside > bound:
                raise SystemExit(f"{entry['path']}: bound broken ({figures})")
            tally = tallies[(entry["series"] or entry["path"] if args.by_series else group, bound)]
            error = (stored_values(decoded, spec) - stored_values(frame, spec)).astype(np.float64)
            spread = mask if spec.samples_per_pixel == 1 else np.repeat(mask[:, :, None], spec.samples_per_pixel, 2)
            tally.frames += 1
            tally.pixels += error.size
            tally.roi_pixels += int(spread.sum())
            tally.roi_bytes += len(blob)
            tally.lossless_bytes += lossless
            tally.near_bytes += whole
            tally.best_bytes += best
            tally.alone_bytes += min(alone, len(blob)) if alone is not None else len(blob)
            tally.squared += float((error ** 2).sum())
            tally.squared_outside += float((error[~spread] ** 2).sum())
            tally.outside += int((~spread).sum())
            tally.worst = max(tally.worst, figures.max_error_outside)
            # PSNR over a group mixes depths: pooled MSE against each frame's own peak squared.
            tally.peak += float(((1 << spec.bits_stored) - 1) ** 2) * error.size
            tally.encode_s += encoded - started
            tally.decode_s += decoded_at - encoded
            tally.mask_s += mask_s
            tally.layouts[read_header(blob).layout.name.lower()] += 1
    rows = []
    for (group, bound), t in sorted(tallies.items()):
        mse = t.squared / t.pixels
        mse_out = t.squared_outside / t.outside if t.outside else 0.0
        peak = t.peak / t.pixels
        rows.append({
            "group": group, "bound": bound, "frames": t.frames,
            "roi_fraction": t.roi_pixels / t.pixels,
            "vs_lossless": t.roi_bytes / t.lossless_bytes,
            "vs_best_lossless": t.roi_bytes / t.best_bytes,
            "roi_alone_vs_lossless": t.alone_bytes / t.lossless_bytes,
            "vs_whole_near": t.roi_bytes / t.near_bytes,
            "whole_near_vs_lossless": t.near_bytes / t.lossless_bytes,
            "psnr_db": 10 * math.log10(peak / mse) if mse else math.inf,
            "psnr_outside_db": 10 * math.log10(peak / mse_out) if mse_out else math.inf,
            "max_error_outside": t.worst,
            "encode_ms": 1e3 * t.encode_s / t.frames, "decode_ms": 1e3 * t.decode_s / t.frames,
            "mask_ms": 1e3 * t.mask_s / t.frames,
            "layouts": dict(t.layouts),
        })
    table = ["| group | bound | frames | ROI | ROI-hybrid / lossless JPEG-LS | ROI-hybrid / best lossless | "
             "ROI alone / lossless | ROI-hybrid / whole near-lossless | whole near / lossless | PSNR dB | "
             "PSNR outside dB | max err outside | mask ms | enc ms | dec ms | layouts |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(
            f"| {r['group']} | {r['bound']} | {r['frames']} | {r['roi_fraction']:.0%} | {r['vs_lossless']:.3f} | "
            f"{r['vs_best_lossless']:.3f} | {r['roi_alone_vs_lossless']:.3f} | "
            f"{r['vs_whole_near']:.3f} | {r['whole_near_vs_lossless']:.3f} | {r['psnr_db']:.1f} | "
            f"{r['psnr_outside_db']:.1f} | {r['max_error_outside']} | {r['mask_ms']:.0f} | {r['encode_ms']:.0f} | "
            f"{r['decode_ms']:.0f} | {', '.join(f'{k} {v}' for k, v in sorted(r['layouts'].items()))} |")
    print("\n".join(table))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "roi.md").write_text("\n".join(table) + "\n")
        (args.out / "roi.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
