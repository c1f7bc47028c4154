"""Series-aware `pred` against intra-only `pred` (and JPEG-LS for scale), on real series, in one run.

Every series of greyscale slices (instances of one Series Instance UID, ordered along the slice
normal) and every multi-frame object is coded frame by frame twice with pred: each frame on its
own, and each frame with the previous one as its reference, in chains of at most
MAX_REFERENCE_CHAIN as the container writes them (the encoder keeps the reference only where it
makes the frame smaller). Every result is decoded and compared. The table is per modality and
per slice spacing: thin (at most 1.25 mm between slice positions) and thick series apart, since
the previous slice can only help where it is close.

    .venv/bin/python bench/series.py                         # ../shared/corpus
    .venv/bin/python bench/series.py --input /some/dicom/dir # any folder of DICOM series

Spacing is the median distance between consecutive slice positions along the normal; where
positions are missing, Spacing Between Slices, then Slice Thickness. Speeds are CPU time of the
one thread that codes: series-aware encoding tries both codings, so it costs about twice as much.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, as the archive workers run it

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import pydicom  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import syntaxes  # noqa: E402
from pixcodec import PixelSpec, UnsupportedPixelSpec, preprocess  # noqa: E402
from pixcodec.container import MAX_REFERENCE_CHAIN  # noqa: E402
from pixcodec.pred import PredCodec  # noqa: E402
from pixcodec.standard import JpegLsCodec  # noqa: E402

THIN_MM = 1.25
# Masks and dose grids are no images of a patient: their frames say nothing about slices.
_NOT_IMAGES = frozenset({"SEG", "RTDOSE", "RTSTRUCT"})
CODEC = PredCodec.default()
JPEG_LS = JpegLsCodec()


@dataclass
class Series:
    name: str
    modality: str
    spacing_mm: float | None
    spec: PixelSpec
    frames: list[npt.NDArray[np.integer]]


@dataclass
class Tally:
    series: int = 0
    frames: int = 0
    raw: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    referencing: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.series += other.series
        self.frames += other.frames
        self.raw += other.raw
        for name, size in other.sizes.items():
            self.sizes[name] += size
        self.referencing += other.referencing
        self.encode_s += other.encode_s
        self.decode_s += other.decode_s


def _spec(ds: pydicom.Dataset) -> PixelSpec | None:
    try:
        spec = PixelSpec(rows=int(ds.Rows), columns=int(ds.Columns), samples_per_pixel=int(ds.SamplesPerPixel),
                         bits_allocated=int(ds.BitsAllocated), bits_stored=int(ds.BitsStored),
                         signed=bool(ds.PixelRepresentation), photometric=str(ds.PhotometricInterpretation))
    except (AttributeError, ValueError, TypeError, UnsupportedPixelSpec):
        return None
    return spec if not CODEC.capabilities.unsupported_reasons(spec) else None


def _position(ds: pydicom.Dataset) -> float | None:
    """The slice position along the slice normal, in mm."""
    try:
        row, column = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        return float(np.dot(np.cross(row, column), np.array(ds.ImagePositionPatient, float)))
    except (AttributeError, ValueError, TypeError, IndexError):
        return None


def _spacing(positions: list[float | None], ds: pydicom.Dataset) -> float | None:
    known = [p for p in positions if p is not None]
    if len(known) == len(positions) and len(known) >= 2:
        steps = np.abs(np.diff(sorted(known)))
        steps = steps[steps > 1e-3]
        if len(steps):
            return float(np.median(steps))
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value not in (None, ""):
            return float(value)
    shared = ds.get("SharedFunctionalGroupsSequence")
    measures = shared[0].get("PixelMeasuresSequence") if shared else None
    if measures and measures[0].get("SliceThickness") not in (None, ""):
        return float(measures[0].SliceThickness)
    return None


def _lossy(ds: pydicom.Dataset) -> bool:
    """Pixels that were compressed with loss once: no lossless figure means anything on them."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(ds.get("LossyImageCompression", "00")) == "01" or (syntax is not None and syntaxes.is_lossy(syntax))


def _frames(ds: pydicom.Dataset, spec: PixelSpec) -> list[npt.NDArray[np.integer]]:
    pixels = ds.pixel_array
    pixels = pixels.reshape((-1, spec.rows, spec.columns))
    return [np.ascontiguousarray(frame.astype(spec.dtype)) for frame in pixels]


def load_series(source: Path) -> Iterator[Series]:
    """Single-frame instances grouped by Series Instance UID and size, and each multi-frame object."""
    singles: dict[tuple[str, int, int], list[tuple[float | None, int, Path]]] = defaultdict(list)
    seen: set[str] = set()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: skipped, as any folder may hold other files
            continue
        spec = _spec(ds)
        if spec is None or _lossy(ds) or str(ds.get("Modality", "")) in _NOT_IMAGES:
            continue
        frame_count = int(ds.get("NumberOfFrames") or 1)
        if frame_count > 1:
            full = pydicom.dcmread(path)
            per_frame = full.get("PerFrameFunctionalGroupsSequence") or []
            positions: list[float | None] = [None] * frame_count
            if per_frame:
                positions = [_position(item.PlanePositionSequence[0] if "PlanePositionSequence" in item else item)
                             for item in per_frame]
            yield Series(str(path.relative_to(source)), str(ds.get("Modality", "?")), _spacing(positions, full),
                         spec, _frames(full, spec))
        else:
            key = (str(ds.get("SeriesInstanceUID", path.parent)), int(ds.Rows), int(ds.Columns))
            instance = str(ds.get("SOPInstanceUID", path))
            if instance in seen:
                continue  # one image in several transfer syntaxes is one slice, not a series
            seen.add(instance)
            singles[key].append((_position(ds), int(ds.get("InstanceNumber") or 0), path))
    for (uid, _, _), members in singles.items():
        if len(members) < 2:
            continue
        if all(position is not None for position, _, _ in members):
            members.sort(key=lambda m: (m[0], m[1]))
        else:
            members.sort(key=lambda m: m[1])
        datasets = [pydicom.dcmread(path) for _, _, path in members]
        spec = _spec(datasets[0])
        if spec is None or any(_spec(ds) != spec for ds in datasets):
            continue
        frames: list[npt.NDArray[np.integer]] = []
        digests: set[bytes] = set()
        for ds in datasets:
            for frame in _frames(ds, spec):
                digest = hashlib.sha256(frame.tobytes()).digest()
                if digest not in digests:  # the same pixels under another SOP Instance UID
                    digests.add(digest)
                    frames.append(frame)
        if len(frames) >= 2:
            name = str(members[0][2].parent.relative_to(source)) or uid
            yield Series(name, str(datasets[0].get("Modality", "?")), _spacing([m[0] for m in members], datasets[0]),
                         spec, frames)


def measure(series: Series) -> Tally:
    tally = Tally()
    previous: tuple[npt.NDArray[np.unsignedinteger], preprocess.Preprocessing] | None = None
    chain = 0
    tally.series += 1
    for frame in series.frames:
        coded, record = preprocess.forward(frame, series.spec)
        coding = preprocess.coding_spec(series.spec, record)
        intra = CODEC.encode(coded, coding)
        reference = None
        if previous is not None and chain < MAX_REFERENCE_CHAIN and (previous[1].mode, previous[1].depth) == (
                record.mode, record.depth):
            reference = previous[0]
        started = time.process_time()
        payload = CODEC.encode(coded, coding, reference=reference)
        tally.encode_s += time.process_time() - started
        referenced = PredCodec.references(payload)
        started = time.process_time()
        decoded = CODEC.decode(payload, coding, reference=reference if referenced else None)
        tally.decode_s += time.process_time() - started
        if not np.array_equal(decoded, coded) or not np.array_equal(CODEC.decode(intra, coding), coded):
            raise SystemExit(f"pred did not round-trip a frame of {series.name}")
        tally.frames += 1
        tally.raw += frame.nbytes
        tally.referencing += referenced
        tally.sizes["JPEG-LS"] += len(JPEG_LS.encode(coded, coding))
        tally.sizes["pred intra"] += len(intra)
        tally.sizes["pred series"] += len(payload)
        chain = chain + 1 if referenced else 0
        previous = (coded, record)
    return tally


def _group_of(series: Series) -> str:
    if series.spacing_mm is None:
        kind = "spacing unknown"
    elif series.spacing_mm <= THIN_MM:
        kind = f"thin (<= {THIN_MM} mm)"
    else:
        kind = "thick"
    return f"{series.modality} {kind}"


def report(tallies: dict[str, Tally]) -> str:
    lines = ["| group | series | frames | MB | JPEG-LS ratio | pred intra ratio | pred series ratio "
             "| series vs intra | series vs JPEG-LS | frames using the previous | series enc / dec MB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for group, tally in sorted(tallies.items(), key=lambda item: (item[0] == "overall", item[0])):
        sizes = tally.sizes
        lines.append(
            f"| {group} | {tally.series} | {tally.frames} | {tally.raw / 1e6:.1f} "
            f"| {tally.raw / sizes['JPEG-LS']:.3f} | {tally.raw / sizes['pred intra']:.3f} "
            f"| {tally.raw / sizes['pred series']:.3f} | {sizes['pred series'] / sizes['pred intra'] - 1:+.2%} "
            f"| {sizes['pred series'] / sizes['JPEG-LS'] - 1:+.2%} | {tally.referencing}/{tally.frames} "
            f"| {tally.raw / 1e6 / tally.encode_s:.1f} / {tally.raw / 1e6 / tally.decode_s:.1f} |")
    return "\n".join(lines)


def warm_up() -> None:
    """Two small frames through pred, on their own and with a reference: numba compiles (or
    loads) each kernel on its first call, which is no part of coding speed."""
    spec = PixelSpec(rows=64, columns=64, samples_per_pixel=1, bits_allocated=16, bits_stored=12, signed=False,
                     photometric="MONOCHROME2")
    first, second = ((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * step) % 4096 for step in (7, 9))
    CODEC.decode(CODEC.encode(first, spec), spec)
    payload = CODEC.encode(second, spec, reference=first)
    CODEC.decode(payload, spec, reference=first if PredCodec.references(payload) else None)


def measure_all(source: Path) -> dict[str, Tally]:
    """Every series of `source` measured, tallied by _group_of and "overall"; progress on stderr."""
    warm_up()
    tallies: dict[str, Tally] = defaultdict(Tally)
    for series in load_series(source):
        measured = measure(series)
        for key in (_group_of(series), "overall"):
            tallies[key].add(measured)
        spacing = f"{series.spacing_mm:.2f} mm" if series.spacing_mm is not None else "spacing unknown"
        print(f"{series.name[:60]:60s} {len(series.frames):4d} frames, {spacing}", file=sys.stderr, flush=True)
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=ROOT.parent / "shared" / "corpus",
                        help="a folder of DICOM files, searched recursively (default ../shared/corpus)")
    args = parser.parse_args()
    print(f"input: {args.input}; chains of at most {MAX_REFERENCE_CHAIN} frames; one thread")
    print(report(measure_all(args.input)))
    print("\nratio: bytes of the stored words / bytes coded; vs: relative size (negative = smaller); "
          "MB/s: stored words per second of one thread")


if __name__ == "__main__":
    main()
