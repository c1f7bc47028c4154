"""Implicit to explicit VR little endian without converting a value.

The bytes of a value are the same in both encodings; only the element headers differ. pydicom's
own conversion decodes every value to its Python type and encodes it again (about 30 us an
element, 2-3 ms for a CT header, as long as the JPEG-LS decode of its pixels). Here each raw
element only gets the VR pydicom would look up for it, so pydicom writes its value bytes as they
are. Sequences are done item by item; the elements whose VR depends on others (Pixel Data OB or
OW, US or SS after Pixel Representation) and anything unusual go through pydicom's own path.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.hooks import hooks
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

UNDEFINED_LENGTH = 0xFFFFFFFF


def as_explicit_little(dataset: Dataset, ancestors: list[Dataset] | None = None) -> None:
    """Make `dataset`, read in implicit VR little endian, write as explicit VR little endian with
    its values untouched (pydicom's write_dataset takes raw elements as they are when the
    dataset's original encoding is the one written)."""
    lineage = [dataset, *(ancestors or [])]
    for tag in list(dataset.keys()):
        element: DataElement | RawDataElement = dataset.get_item(tag)
        if isinstance(element, RawDataElement) and element.is_implicit_VR:
            vr = _looked_up_vr(element, dataset)
            if vr != VR.SQ and " or " not in vr and element.length != UNDEFINED_LENGTH and (
                    vr in EXPLICIT_VR_LENGTH_32 or element.length <= 0xFFFF):
                dataset[tag] = element._replace(VR=vr, is_implicit_VR=False)
                continue
            element = dataset[tag]  # pydicom's own conversion (a sequence's items stay raw)
        if isinstance(element, DataElement):
            if element.VR == VR.SQ:
                for item in element.value:
                    as_explicit_little(item, lineage)
            elif " or " in element.VR:
                correct_ambiguous_vr_element(element, dataset, True, lineage)
    dataset.set_original_encoding(False, True)


def _looked_up_vr(element: RawDataElement, dataset: Dataset) -> str:
    found: dict[str, Any] = {}
    hooks.raw_element_vr(element, found, encoding=dataset.original_character_set, ds=dataset,
                         **hooks.raw_element_kwargs)
    return str(found["VR"])
