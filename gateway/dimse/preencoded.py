"""Sending a dataset whose bytes are already made, in its transfer syntax.

A retrieved instance leaves the codec worker as bytes in the syntax chosen for the peer: the
received dataset rebuilt byte for byte, or one transcoded. pynetdicom's C-GET and C-MOVE
service classes take only Dataset objects from a handler and encode each one with pydicom before
the C-STORE sub-operation; parsing those bytes into a Dataset only for pynetdicom to write them
again cost the association thread about a third of its time per instance, and risked a byte that
differs from the rebuilt one. PreEncoded is a Dataset that carries its bytes, and install() makes
the encoding step of pynetdicom's send_c_store return them unchanged (any other dataset is
encoded as before). pynetdicom is pinned; the retrieve tests compare every byte sent.
"""

from __future__ import annotations

from typing import Any

import pynetdicom.association
import pynetdicom.dsutils
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from gateway import syntaxes

_library_encode = pynetdicom.dsutils.encode


class PreEncoded(Dataset):
    """The SOP Class and Instance UIDs pynetdicom reads to address the C-STORE, the transfer
    syntax that picks its presentation context, and the dataset's bytes in that syntax (no File
    Meta; deflated when the syntax is)."""

    def __init__(self, data: bytes, syntax: str, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = uid.UID(syntax)
        self.__dict__["_encoded"] = data

    @property
    def encoded(self) -> bytes:
        data: bytes = self.__dict__["_encoded"]
        return data

    def encoded_as(self, implicit_vr: bool, little_endian: bool, deflated: bool) -> bytes | None:
        """The bytes, if they are in that encoding; None (pynetdicom then fails the sub-operation
        with nothing sent) if the context it chose has another."""
        syntax = uid.UID(str(self.file_meta.TransferSyntaxUID))
        if syntaxes.encoding(syntax) != (implicit_vr, little_endian) or (syntax == syntaxes.DEFLATED) != deflated:
            return None
        return self.encoded


def _encode(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
    if isinstance(ds, PreEncoded):
        return ds.encoded_as(is_implicit_vr, is_little_endian, deflated)
    return _library_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    """Route pynetdicom's C-STORE encoding through PreEncoded (idempotent)."""
    setattr(pynetdicom.association, "encode", _encode)
