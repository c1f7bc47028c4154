"""The mode decision: per image, the smallest exact coding that fits a time budget.

A budget is an ordered list of candidates (a codec with its encoder settings, with or without
histogram packing), cheapest first, and a time allowance per megasample. The first usable
candidate always runs, so there is always a result; each further one runs only if its expected
cost still fits what is left of the allowance. Expected costs start from measured hints and follow
what this process really observes (a moving average), so a slower machine tries fewer candidates
instead of missing the budget.

Multi-frame objects are decided on one probe frame and coded with the winner throughout: frames of
one acquisition share their statistics, and one codec per object keeps retrieval pass-through
simple.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import preprocess
from .base import CodecError, FrameCodec, PixelSpec, UnsupportedPixelSpec, VerificationFailed
from .container import EncodedFrame, decode_payload, encode_preprocessed, may_reference, references_previous
from .pred import PredCodec
from .registry import CodecRegistry
from .standard import Jpeg2000Codec, JpegLsCodec, JpegXlCodec, ZstdCodec

__all__ = ["ARCHIVE", "INGEST", "Budget", "Candidate", "Decision", "Trial", "budget_named", "decide", "probe_index"]


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str  # bounded, stable: used as a metric label and in reports
    codec: FrameCodec
    pack: bool = False
    # Seconds per megasample before this process has measured the candidate (one core, 512x512 CT).
    cost_hint: float = 0.05


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    candidates: tuple[Candidate, ...]
    seconds_per_megasample: float
    # Tried only when no candidate produced a result: takes any layout, so there always is one.
    fallback: Candidate | None = None
    # Small frames cost mostly per-call overhead: they always get at least this much time.
    min_seconds: float = 0.005
    # Packed candidates run only when packing saves this many bits of depth, or when at most this
    # share of the values between the lowest and the highest is used.
    pack_depth_gain: int = 1
    pack_density: float = 0.9


@dataclass(frozen=True, slots=True)
class Trial:
    name: str
    size: int | None  # payload plus packing table, None when the candidate did not produce one
    seconds: float
    note: str = ""  # why there is no size: declined, failed, over budget


@dataclass(frozen=True, slots=True)
class Decision:
    candidate: Candidate
    encoded: EncodedFrame  # the probe frame, coded by the winner
    trials: tuple[Trial, ...] = field(default=())
    # The probe frame was coded against the frame before it (see `decide`'s `previous`): its
    # payload is then valid only right after that frame.
    references_previous: bool = False

    @property
    def codec(self) -> FrameCodec:
        return self.candidate.codec

    @property
    def pack(self) -> bool:
        return self.encoded.record.packing is not None

    @property
    def seconds(self) -> float:
        return sum(trial.seconds for trial in self.trials)


# JPEG-LS, the best fast coder of 12-16 bit CT/MR, always runs, so ingest is never larger than it;
# JPEG-XL e1 is nearly free and wins on 8-bit, colour and ultrasound content; packing pays on
# sparse histograms only, and only then is tried.
INGEST = Budget(
    name="ingest",
    candidates=(
        Candidate("jpeg-ls", JpegLsCodec(), cost_hint=0.021),
        Candidate("jpeg-xl-e1", JpegXlCodec(effort=1), cost_hint=0.004),
        Candidate("jpeg-ls-packed", JpegLsCodec(), pack=True, cost_hint=0.022),
    ),
    seconds_per_megasample=0.045,
    fallback=Candidate("zstd", ZstdCodec(), cost_hint=0.009),
    # One bit of depth or a few gaps gain 0.5 % on CT at the price of a second JPEG-LS pass.
    pack_depth_gain=2,
    pack_density=0.8,
)

# JPEG-LS and JPEG-XL e3 come first so that the archive result is never larger than either; JPEG-XL
# e7 is the strongest standard coder on every modality of the corpus (3-56 % smaller than
# JPEG-LS), JPEG 2000 wins on some noisy radiographs. HTJ2K is left out: it is built for decode
# speed and was 5-20 % larger than JPEG-LS on every modality, so it never wins a size contest.
# Our own `pred` runs before JPEG-XL e7: it is the smallest on most CT and MR slices at about the
# same cost, and packs sparse histograms itself (so there is no packed variant of it). It has no
# transfer syntax, which costs a decode on retrieval; archive storage is where that pays.
ARCHIVE = Budget(
    name="archive",
    candidates=(
        Candidate("jpeg-ls", JpegLsCodec(), cost_hint=0.021),
        Candidate("jpeg-xl-e3", JpegXlCodec(effort=3), cost_hint=0.040),
        Candidate("jpeg-xl-e1", JpegXlCodec(effort=1), cost_hint=0.004),
        Candidate("jpeg-ls-packed", JpegLsCodec(), pack=True, cost_hint=0.022),
        Candidate("jpeg-2000", Jpeg2000Codec(), cost_hint=0.080),
        Candidate("pred", PredCodec.default(), cost_hint=0.22),
        Candidate("jpeg-xl-e7", JpegXlCodec(effort=7), cost_hint=0.40),
        Candidate("jpeg-xl-e7-packed", JpegXlCodec(effort=7), pack=True, cost_hint=0.40),
    ),
    seconds_per_megasample=2.0,
    fallback=Candidate("zstd", ZstdCodec(), cost_hint=0.009),
)

_BUDGETS = {budget.name: budget for budget in (INGEST, ARCHIVE)}

# Seconds per megasample this process has measured, per candidate name (moving average).
_observed: dict[str, float] = {}
_SMOOTHING = 0.2
# Below this, per-call overhead would pass for per-sample cost and mislead the estimate.
_LEARN_FROM_MEGASAMPLES = 0.1


def budget_named(name: str) -> Budget:
    try:
        return _BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown codec budget {name!r}; known: {', '.join(_BUDGETS)}") from None


def probe_index(frames: int) -> int:
    """The frame a multi-frame object is decided on: the middle one (first frames are often blank)."""
    return frames // 2


def decide(
    frame: npt.NDArray[np.integer],
    spec: PixelSpec,
    budget: Budget,
    registry: CodecRegistry | None = None,
    *,
    verify: bool = True,
    previous: npt.NDArray[np.integer] | None = None,
) -> Decision:
    """Try `budget`'s candidates on `frame` and return the smallest exact coding.

    Raises UnsupportedPixelSpec when no candidate takes the spec, CodecError when every one that
    does failed. A `registry` restricts the candidates to the codecs it has available. `verify`
    decodes the winner before it is returned (and falls back to the next one if it is not exact);
    callers that check the stored result themselves, as the gateway does, switch it off.
    `previous` is the frame before this one in the same object: a codec that can predict a frame
    from it is judged with it, as a container would code the frame.
    """
    spec.check_frame(frame)
    frame = np.ascontiguousarray(frame)
    megasamples = spec.rows * spec.columns * spec.samples_per_pixel / 1e6
    plain, packed = _preprocessed(frame, spec, budget)
    usable = _usable(budget.candidates, spec, registry)
    fallback = _usable([budget.fallback] if budget.fallback is not None else [], spec, registry)
    if not usable and not fallback:
        every = budget.candidates + ((budget.fallback,) if budget.fallback is not None else ())
        raise UnsupportedPixelSpec(f"no {budget.name} candidate codes this pixel spec: " + " | ".join(
            f"{c.name}: {'; '.join(c.codec.capabilities.unsupported_reasons(spec)) or 'unavailable'}"
            for c in every))
    # The previous frame is mapped only for a budget with a codec that can use it.
    referencing = any(c.codec.capabilities.reference_frames for c in [*usable, *fallback])
    reference = _reference(previous, plain[1], spec) if referencing else None
    allowance = max(budget.min_seconds, budget.seconds_per_megasample * megasamples)
    spent = 0.0
    trials: list[Trial] = []
    results: list[tuple[int, Candidate, EncodedFrame, npt.NDArray[np.unsignedinteger] | None]] = []
    for candidate in [*usable, *fallback]:
        if candidate in fallback and results:
            break
        if candidate.pack and packed is None:
            continue
        expected = _observed.get(candidate.name, candidate.cost_hint) * megasamples
        if results and spent + expected > allowance:
            trials.append(Trial(candidate.name, None, 0.0, "over budget"))
            continue
        coded, record = packed if candidate.pack and packed is not None else plain
        offered = reference if record is plain[1] else None
        started = time.perf_counter()
        try:
            encoded = encode_preprocessed(candidate.codec, coded, record, spec, reference=offered)
        except CodecError as exc:
            elapsed = time.perf_counter() - started
            trials.append(Trial(candidate.name, None, elapsed, f"failed: {exc}"))
            spent += elapsed
            continue
        elapsed = time.perf_counter() - started
        spent += elapsed
        if megasamples >= _LEARN_FROM_MEGASAMPLES:
            _remember(candidate.name, elapsed / megasamples)
        size = len(encoded.payload) + len(encoded.table)
        trials.append(Trial(candidate.name, size, elapsed))
        used = offered if offered is not None and references_previous(candidate.codec, encoded.payload) else None
        results.append((size, candidate, encoded, used))
    if not results:
        raise CodecError(f"every {budget.name} candidate failed: " + " | ".join(
            f"{t.name}: {t.note}" for t in trials))
    results.sort(key=lambda result: result[0])  # stable: on equal sizes the cheaper one wins
    return _first_exact(results, frame, spec, verify, trials)


def _preprocessed(
    frame: npt.NDArray[np.integer], spec: PixelSpec, budget: Budget
) -> tuple[tuple[npt.NDArray[np.unsignedinteger], preprocess.Preprocessing],
           tuple[npt.NDArray[np.unsignedinteger], preprocess.Preprocessing] | None]:
    """The plain mapping, and the packed one when packing looks worth a trial."""
    plain = preprocess.forward(frame, spec)
    coded, record = preprocess.forward(frame, spec, pack=True)
    packing = record.packing
    if packing is None:
        return plain, None
    span = int(packing.values[-1]) - int(packing.values[0]) + 1
    if (record.depth - record.coded_depth >= budget.pack_depth_gain
            or len(packing.values) <= budget.pack_density * span):
        return plain, (coded, record)
    return plain, None


def _usable(candidates: Iterable[Candidate], spec: PixelSpec, registry: CodecRegistry | None) -> list[Candidate]:
    available = set(registry.keys()) if registry is not None else None
    return [
        candidate for candidate in candidates
        if not candidate.codec.capabilities.unsupported_reasons(spec)
        and (available is None or (candidate.codec.codec_id, candidate.codec.bitstream_version) in available)
    ]


def _remember(name: str, seconds_per_megasample: float) -> None:
    previous = _observed.get(name)
    _observed[name] = seconds_per_megasample if previous is None else (
        (1 - _SMOOTHING) * previous + _SMOOTHING * seconds_per_megasample)


def _reference(previous: npt.NDArray[np.integer] | None, record: preprocess.Preprocessing,
               spec: PixelSpec) -> npt.NDArray[np.unsignedinteger] | None:
    """The previous frame as the plain mapping codes it, when the frame's own mapping matches
    (the condition under which a container offers it)."""
    if previous is None:
        return None
    spec.check_frame(previous)
    coded, previous_record = preprocess.forward(np.ascontiguousarray(previous), spec)
    return coded if may_reference(record, previous_record) else None


def _first_exact(
    ranked: Sequence[tuple[int, Candidate, EncodedFrame, npt.NDArray[np.unsignedinteger] | None]],
    frame: npt.NDArray[np.integer],
    spec: PixelSpec,
    verify: bool,
    trials: list[Trial],
) -> Decision:
    problems: list[str] = []
    for _size, candidate, encoded, reference in ranked:
        if not verify or _round_trips(candidate.codec, encoded, frame, spec, reference):
            return Decision(candidate, encoded, tuple(trials), references_previous=reference is not None)
        problems.append(candidate.name)
    raise VerificationFailed(f"no candidate round-tripped the frame exactly: {', '.join(problems)}")


def _round_trips(codec: FrameCodec, encoded: EncodedFrame, frame: npt.NDArray[np.integer], spec: PixelSpec,
                 reference: npt.NDArray[np.unsignedinteger] | None = None) -> bool:
    coding = preprocess.coding_spec(spec, encoded.record)
    try:
        decoded = np.asarray(decode_payload(codec, encoded.payload, coding, reference)).astype(coding.dtype, copy=False)
        restored = preprocess.inverse(decoded, encoded.record, spec)
    except Exception:  # a codec that cannot read its own output simply loses the decision
        return False
    return restored.dtype == frame.dtype and bool(np.array_equal(restored, frame))
