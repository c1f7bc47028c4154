"""ROI-hybrid on the ingest path: what a `roi-hybrid` rule stores, against the lossless path, in one run.

Every corpus file of the chosen modalities goes through the same code a C-STORE runs in a codec
worker (`gateway.services.prepare.prepare`, blob written and rebuilt), once under a lossless rule
and once under a roi-hybrid rule at each bound. Per modality and bound it prints how many
instances became ROI-hybrid (the others stayed exact, with the reason counted), the stored bytes
against the lossless path's, and the milliseconds per instance of both (one core).

    .venv/bin/python bench/roi_ingest.py                       # CT and MR, bounds 2 4 8
    .venv/bin/python bench/roi_ingest.py --modalities CT --bounds 4
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "pixcodec"))

from corpus_frames import manifest  # noqa: E402

from gateway.policy import PolicyRule, RoiParams  # noqa: E402
from gateway.services.prepare import IngestJob, PreparedInstance, prepare  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"


@dataclass
class Tally:
    instances: int = 0
    roi_instances: int = 0
    lossless_bytes: int = 0
    stored_bytes: int = 0
    lossless_s: float = 0.0
    stored_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)


def _run(path: Path, scratch: Path, rule: PolicyRule) -> tuple[PreparedInstance, float]:
    import pydicom

    # Fresh names, as the gateway's spool uses: truncating a reused file is a cost the gateway never pays.
    name = uuid.uuid4().hex
    spool, blob = scratch / f"{name}.dcm", scratch / f"{name}.blob"
    shutil.copyfile(path, spool)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    job = IngestJob(spool, blob, str(header.SOPClassUID), str(header.SOPInstanceUID), "ingest", "BENCH", (rule,))
    started = time.perf_counter()
    prepared = prepare(job)
    elapsed = time.perf_counter() - started
    spool.unlink()
    blob.unlink()
    return prepared, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", nargs="+", default=["CT", "MR"])
    parser.add_argument("--bounds", type=int, nargs="+", default=[2, 4, 8])
    args = parser.parse_args()
    files = [CORPUS / e["path"] for e in manifest()
             if e["modality"] in args.modalities and e["has_pixel_data"] and e["has_file_meta"] and e["has_preamble"]]
    lossless_rule = PolicyRule(name="bench-lossless", mode="lossless")
    tallies: dict[tuple[str, int], Tally] = defaultdict(Tally)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for path in files:
            exact, exact_s = _run(path, scratch, lossless_rule)
            modality = exact.attrs.series.modality or "?"
            for bound in args.bounds:
                rule = PolicyRule(name="bench-roi", mode="roi-hybrid", roi=RoiParams(max_error=bound))
                coded, coded_s = _run(path, scratch, rule)
                tally = tallies[(modality, bound)]
                tally.instances += 1
                tally.lossless_bytes += exact.blob_size
                tally.stored_bytes += coded.blob_size
                tally.lossless_s += exact_s
                tally.stored_s += coded_s
                if coded.roi is not None:
                    tally.roi_instances += 1
                else:
                    reason = (coded.policy.reason if coded.policy else None) or "-"
                    tally.reasons[re.sub(r"\d+(\.\d+)? %", "n %", reason)] += 1
    lines = ["| modality | bound | instances | ROI-hybrid | stored / lossless path | lossless ms | roi-hybrid ms "
             "| stayed exact because |", "|---|---|---|---|---|---|---|---|"]
    for (modality, bound), t in sorted(tallies.items()):
        reasons = "; ".join(f"{reason} ({count})" for reason, count in t.reasons.most_common())
        lines.append(f"| {modality} | {bound} | {t.instances} | {t.roi_instances} | "
                     f"{t.stored_bytes / t.lossless_bytes:.3f} | {1e3 * t.lossless_s / t.instances:.0f} | "
                     f"{1e3 * t.stored_s / t.instances:.0f} | {reasons} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
