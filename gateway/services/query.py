"""C-FIND: an identifier in, the matching response identifiers out, one at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from sqlalchemy.engine import Engine

from gateway.errors import OutOfResources
from gateway.instance_blob import BlobFormatError
from gateway.services.identifiers import (
    FindRequest,
    InformationModel,
    KeySource,
    Negotiated,
    RequestedKey,
    parse_identifier,
)
from gateway.stored_header import read_header
from storage.blobs.base import BlobNotFound, BlobStore, BlobStoreError
from storage.db import IndexUnavailable
from storage.matching import matches
from storage.query import Found, find

log = logging.getLogger(__name__)

UTF8 = "ISO_IR 192"


class QueryService:
    def __init__(self, engine: Engine, blobs: BlobStore, *, ae_title: str, batch_size: int = 500) -> None:
        self._engine, self._blobs = engine, blobs
        self._ae_title, self._batch_size = ae_title, batch_size

    def find(
        self, identifier: Dataset, model: InformationModel, negotiated: Negotiated = Negotiated()
    ) -> Iterator[Dataset]:
        """Response identifiers of the matches, streamed; the identifier is checked before the first.

        Raises InvalidIdentifier / CannotUnderstand for a bad identifier, OutOfResources when the
        index or the blob store is unavailable (also mid-stream).
        """
        request = parse_identifier(identifier, model, negotiated)
        return self._stream(request)

    def _stream(self, request: FindRequest) -> Iterator[Dataset]:
        try:
            for found in find(self._engine, request.index_query, batch_size=self._batch_size):
                header = self._header(found) if request.needs_header else None
                if header is not None and not _header_matches(request, header):
                    continue
                if header is None and (request.header_filters or request.sequence_filters):
                    continue
                yield self._response(request, found, header)
        except IndexUnavailable as exc:
            raise OutOfResources(f"database unavailable: {exc}") from exc

    def _header(self, found: Found) -> Dataset | None:
        source = found.header
        if source is None:
            return None
        try:
            return read_header(self._blobs, source.blob, source.transfer_syntax_uid)
        except (BlobNotFound, BlobFormatError) as exc:
            # One damaged instance must not fail every query that touches it; verify reports it.
            log.error("stored header unreadable", extra={"fields": {"error": str(exc)}})
            return None
        except (BlobStoreError, OSError) as exc:
            raise OutOfResources(f"blob store unavailable: {exc}") from exc

    def _response(self, request: FindRequest, found: Found, header: Dataset | None) -> Dataset:
        response = Dataset()
        response.QueryRetrieveLevel = request.level.value
        for key in request.keys:
            if key.source in (KeySource.INDEX, KeySource.COMPUTED):
                response.add(_element(key, found.values.get(key.keyword)))
            elif key.source is KeySource.GATEWAY:
                value = self._ae_title if key.keyword == "RetrieveAETitle" else "ONLINE"
                response.add(_element(key, value))
            elif key.source is KeySource.HEADER and header is not None and key.tag in header:
                response.add(_from_header(key, header[key.tag]))
            else:
                response.add(_element(key, None))
        charset = _response_charset(request, response)
        if charset:
            response.SpecificCharacterSet = charset
        return response


def _header_matches(request: FindRequest, header: Dataset) -> bool:
    for tag, matcher in request.header_filters.items():
        if not matches(matcher, _texts(header.get(tag))):
            return False
    for tag, filters in request.sequence_filters.items():
        element = header.get(tag)
        items = element.value if element is not None and element.VR == "SQ" else []
        if not any(all(matches(m, _texts(item.get(t))) for t, m in filters.items()) for item in items):
            return False
    return True


def _texts(element: DataElement | None) -> list[str]:
    if element is None or element.value is None:
        return []
    value = element.value
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v) for v in values]


def _element(key: RequestedKey, value: Any) -> DataElement:
    if isinstance(value, tuple):
        value = list(value) or None
    return DataElement(key.tag, key.vr, value)


def _from_header(key: RequestedKey, stored: DataElement) -> DataElement:
    if stored.VR != "SQ":
        return DataElement(key.tag, stored.VR, stored.value)
    wanted = key.item_keys
    items = Sequence()
    for item in stored.value:
        copy = Dataset()
        for inner in item:
            if wanted and int(inner.tag) not in wanted:
                continue
            copy.add(_from_header(RequestedKey(int(inner.tag), inner.keyword, inner.VR, key.source), inner))
        if wanted:
            for tag in wanted:
                if tag not in copy:
                    copy.add(DataElement(tag, _vr_of(tag), None))
        items.append(copy)
    return DataElement(key.tag, "SQ", items)


def _vr_of(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _is_ascii(dataset: Dataset) -> bool:
    for element in dataset.iterall():
        value = element.value
        for item in value if isinstance(value, MultiValue | list) else [value]:
            if isinstance(item, str | PersonName) and not str(item).isascii():
                return False
    return True


def _response_charset(request: FindRequest, response: Dataset) -> str | list[str] | None:
    """The requester's character set while the values are ASCII, else UTF-8 (it holds them all)."""
    if not _is_ascii(response):
        return UTF8
    requested = list(request.specific_character_set)
    if not requested:
        return None
    return requested[0] if len(requested) == 1 else requested
