"""PreEncoded: pynetdicom's C-STORE sends the worker's bytes, and only in their own encoding."""

from __future__ import annotations

import pynetdicom.association
from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from gateway.dimse import preencoded
from gateway.dimse.preencoded import PreEncoded

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_pynetdicom_sends_the_bytes_unchanged_in_their_encoding() -> None:
    preencoded.install()
    data = b"\x08\x00\x16\x00\x1a\x00\x00\x00" + CT_IMAGE.encode() + b"\x00"
    dataset = PreEncoded(data, uid.ImplicitVRLittleEndian, CT_IMAGE, "1.2.3.4")
    assert pynetdicom.association.encode(dataset, True, True) is data
    assert (dataset.SOPClassUID, dataset.SOPInstanceUID) == (CT_IMAGE, "1.2.3.4")
    assert dataset.file_meta.TransferSyntaxUID == uid.ImplicitVRLittleEndian


def test_another_encoding_gets_nothing_so_the_sub_operation_fails_unsent() -> None:
    preencoded.install()
    explicit = PreEncoded(b"\x00" * 8, uid.ExplicitVRLittleEndian, CT_IMAGE, "1.2.3.4")
    assert pynetdicom.association.encode(explicit, True, True) is None
    assert pynetdicom.association.encode(explicit, False, False) is None
    # Bytes made for deflate are sent only where the context is deflated, and the other way round.
    assert pynetdicom.association.encode(explicit, False, True, True) is None
    deflated = PreEncoded(b"\x01" * 8, uid.DeflatedExplicitVRLittleEndian, CT_IMAGE, "1.2.3.4")
    assert pynetdicom.association.encode(deflated, False, True, False) is None
    assert pynetdicom.association.encode(deflated, False, True, True) == b"\x01" * 8


def test_other_datasets_are_encoded_by_pydicom_as_before() -> None:
    preencoded.install()
    dataset = Dataset()
    dataset.PatientName = "Doe^Jane"
    assert pynetdicom.association.encode(dataset, True, True) == encode(dataset, True, True)
    assert pynetdicom.association.encode(dataset, True, True) == b"\x10\x00\x10\x00\x08\x00\x00\x00Doe^Jane"
