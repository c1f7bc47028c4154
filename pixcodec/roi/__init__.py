"""ROI-hybrid coding: a mask of what must stay exact, a bounded error everywhere else.

`masks` finds the mask per modality (or from configured rectangles and overlay planes),
`geometry` from a Segmentation or an RT Structure Set of the same study, `codec` codes a frame
against it, and `figures` measures the result. All are pure functions on numpy arrays.
"""

from .codec import (
    FORMAT_VERSION,
    LOSSY_METHOD,
    METHOD_DESCRIPTIONS,
    PRED_LOSSY_METHOD,
    Encoded,
    Layout,
    RoiHeader,
    decode,
    encode,
    encode_measured,
    lossy_method,
    read_header,
    stored_values,
)
from .figures import RoiFigures, combine, measure
from .geometry import ImagePlane, contours_mask, rescale_of, rtstruct_contours, seg_frames_for_image, seg_frames_mask
from .masks import (
    DEFAULT_MARGIN,
    Rect,
    automatic_mask,
    burned_in_text_mask,
    collimated_field_mask,
    ct_body_mask,
    dilate,
    display_grey,
    mr_foreground_mask,
    overlay_mask,
    rectangles_mask,
    ultrasound_sector_mask,
)

__all__ = [
    "DEFAULT_MARGIN",
    "FORMAT_VERSION",
    "LOSSY_METHOD",
    "METHOD_DESCRIPTIONS",
    "PRED_LOSSY_METHOD",
    "Encoded",
    "ImagePlane",
    "Layout",
    "Rect",
    "RoiFigures",
    "RoiHeader",
    "automatic_mask",
    "burned_in_text_mask",
    "collimated_field_mask",
    "combine",
    "contours_mask",
    "ct_body_mask",
    "decode",
    "dilate",
    "display_grey",
    "encode",
    "encode_measured",
    "lossy_method",
    "measure",
    "mr_foreground_mask",
    "overlay_mask",
    "read_header",
    "rectangles_mask",
    "rescale_of",
    "rtstruct_contours",
    "seg_frames_for_image",
    "seg_frames_mask",
    "stored_values",
    "ultrasound_sector_mask",
]
