"""Regions that Segmentations and RT Structure Sets already stored in a study mark on an image.

A ROI-hybrid rule keeps them exact on top of the automatic region: what someone outlined is what
someone looked at. The lookup runs in the ingest thread (it needs the index and the blob store,
which the codec workers do not have) and hands the codec worker one packed bit plane per image.

Only objects stored before the image count: a SEG that arrives later cannot change an instance
already stored. A structure object that names the image but cannot be read or placed keeps the
whole image exact, as the mask finders do with an image they cannot read.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from sqlalchemy.engine import Engine

from gateway.services.rebuild import RebuildError, rebuild_checked
from gateway.services.roi_ingest import StructureMask
from gateway.services.transcode import TranscodeError, parse, with_syntax
from pixcodec.roi import ImagePlane, contours_mask, rtstruct_contours, seg_frames_for_image, seg_frames_mask
from storage.blobs.base import BlobStore, BlobStoreError
from storage.matching import AnyOf, Single
from storage.query import Level, LevelQuery, matching_instances
from storage.records import BlobRef, StoredInstance

__all__ = ["RT_STRUCTURE_SET_STORAGE", "SEGMENTATION_STORAGE", "StructureLookup", "StructureMask"]

log = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_PLANE_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


class StructureLookup:
    """Finds, per image, the union of what the study's SEG and RT Structure Set objects mark on it."""

    def __init__(self, engine: Engine, blobs: BlobStore, *, cache_size: int = 8) -> None:
        self._engine, self._blobs = engine, blobs
        # A study's images arrive one after another against the same few structure objects:
        # each is rebuilt and parsed once, not once per image.
        self._cache: OrderedDict[BlobRef, Dataset] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def for_image(self, header: Dataset) -> StructureMask | None:
        """The mask for the image `header` describes, or None when no stored object marks it.

        Raises IndexUnavailable when the index cannot be read (the caller then stores without).
        """
        study = str(header.get("StudyInstanceUID", "") or "")
        sop_instance_uid = str(header.get("SOPInstanceUID", "") or "")
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        if not study or not sop_instance_uid or not rows or not columns:
            return None
        query = LevelQuery(Level.IMAGE, {"StudyInstanceUID": Single(study),
                                         "SOPClassUID": AnyOf((SEGMENTATION_STORAGE, RT_STRUCTURE_SET_STORAGE))})
        found = list(matching_instances(self._engine, query))
        if not found:
            return None
        shape = (rows, columns)
        mask = np.zeros(shape, dtype=bool)
        sources: list[str] = []
        for stored in found:
            kind = "segmentation" if stored.sop_class_uid == SEGMENTATION_STORAGE else "structure set"
            try:
                marked = self._marked(stored, header, sop_instance_uid, shape)
            except (BlobStoreError, RebuildError, TranscodeError, OSError, ValueError, KeyError,
                    AttributeError, TypeError, IndexError) as exc:
                log.warning("%s in the study cannot be read or placed; the whole image stays exact", kind,
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                return StructureMask.of(np.ones(shape, dtype=bool), f"an unreadable {kind}")
            if marked is not None and marked.any():
                mask |= marked
                sources.append(kind)
        if not sources:
            return None
        return StructureMask.of(mask, " and ".join(sorted(set(sources))))

    def _marked(self, stored: StoredInstance, header: Dataset, sop_instance_uid: str,
                shape: tuple[int, int]) -> npt.NDArray[np.bool_] | None:
        structure = self._dataset(stored)
        if stored.sop_class_uid == SEGMENTATION_STORAGE:
            frames = seg_frames_for_image(structure, sop_instance_uid)
            return seg_frames_mask(frames, shape) if frames else None
        if not all(keyword in header for keyword in _PLANE_KEYWORDS):
            return None  # an image with no plane cannot have contours placed on it
        contours = rtstruct_contours(structure, sop_instance_uid, ImagePlane.from_dataset(header))
        return contours_mask(shape, contours) if contours else None

    def _dataset(self, stored: StoredInstance) -> Dataset:
        with self._lock:
            cached = self._cache.get(stored.blob)
            if cached is not None:
                self._cache.move_to_end(stored.blob)
                return cached
        out = io.BytesIO()
        with self._blobs.open(stored.blob) as fp:
            rebuild_checked(fp, stored, out.write)
        dataset = with_syntax(parse(out.getvalue(), stored.transfer_syntax_uid), stored.transfer_syntax_uid)
        with self._lock:
            self._cache[stored.blob] = dataset
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return dataset
