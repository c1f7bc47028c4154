"""The DICOM attributes of an instance derived by lossy compression (PS3.3 C.7.6.1.1.5).

Once pixels are altered the result is a new instance: a new SOP Instance UID, Image Type DERIVED,
the lossy attributes with one more value for this step (earlier values are kept, never
overwritten), and a Source Image Sequence naming the received instance as its uncompressed
predecessor, so a viewer and an auditor can both tell what happened.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

# Every derived UID of this gateway lies under 2.25 (PS3.5 B.2): a UUID needs no registered root.
_UID_NAMESPACE = uuid.UUID("6f6c6b1e-2a43-4d7e-9a2b-5d1f0f3c9e41")
_DESCRIPTION_LIMIT = 1024  # ST


@dataclass(frozen=True, slots=True)
class LossyStep:
    """One lossy compression step applied to a received instance."""

    ratio: float  # native Pixel Data bytes / compressed bytes
    method: str  # (0028,2114) defined term, e.g. ISO_14495_1
    description: str  # what was done, for Derivation Description

    def __post_init__(self) -> None:
        if not self.ratio > 0 or math.isinf(self.ratio):
            raise ValueError(f"compression ratio {self.ratio} must be a positive finite number")


def derived_uid(source_uid: str, step: str) -> str:
    """The UID of the instance derived from `source_uid` by `step`.

    Deterministic, so that the same instance sent twice and coded the same way gives the same
    derived instance (and a duplicate is recognised as one), yet distinct for every source and step.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{source_uid}|{step}').int}"


def apply_lossy_step(dataset: Dataset, step: LossyStep, new_uid: str) -> None:
    """Turn `dataset` (the received instance, pixels already replaced) into the derived one."""
    source_uid = str(dataset.SOPInstanceUID)
    source_class = str(dataset.SOPClassUID)
    dataset.LossyImageCompression = "01"
    # DS holds at most 16 characters.
    dataset.LossyImageCompressionRatio = [*_values(dataset.get("LossyImageCompressionRatio")),
                                          f"{step.ratio:.6g}"[:16]]
    dataset.LossyImageCompressionMethod = [*_values(dataset.get("LossyImageCompressionMethod")), step.method]
    image_type = _values(dataset.get("ImageType"))
    dataset.ImageType = ["DERIVED", *(image_type[1:] if image_type else ["SECONDARY"])]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_class
    reference.ReferencedSOPInstanceUID = source_uid
    reference.PurposeOfReferenceCodeSequence = DicomSequence([_code("121320", "DCM", "Uncompressed predecessor")])
    dataset.SourceImageSequence = DicomSequence([*dataset.get("SourceImageSequence", []), reference])
    dataset.DerivationCodeSequence = DicomSequence([
        *(item for item in dataset.get("DerivationCodeSequence", []) if item.get("CodeValue") != "113040"),
        _code("113040", "DCM", "Lossy Compression"),
    ])
    earlier = str(dataset.get("DerivationDescription", "")).strip()
    text = f"{earlier} | {step.description}" if earlier else step.description
    dataset.DerivationDescription = text[-_DESCRIPTION_LIMIT:]
    dataset.SOPInstanceUID = new_uid
    if hasattr(dataset, "file_meta") and "MediaStorageSOPInstanceUID" in dataset.file_meta:
        dataset.file_meta.MediaStorageSOPInstanceUID = UID(new_uid)


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple, Sequence)) and not isinstance(value, str):
        return [str(item) for item in value]
    return [str(value)]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
