"""Screening before pixels are cached: keep images of a patient's anatomy, drop the rest with a reason.

Every check reads only what the cache builder already has in hand: the index row (SOP class) when
planning, the header pydicom read to decode the pixels, or the display-mapped frame. Each check
gives an *exclusion code*, written with a one-line reason to the cache's ``errors.parquet``
(``status = excluded``) and counted in the summary; each can be switched off (``CacheSettings``).

========================  ====================================================================
code                      excluded when (default) / setting that keeps it
========================  ====================================================================
``not_an_image``          the SOP class holds no image of a patient: segmentations, RT dose /
                          structure set / plan / records, structured reports, key object
                          selections, presentation states, encapsulated documents, raw data,
                          waveforms (:data:`NON_IMAGE_SOP_CLASSES`, and families named by
                          pydicom's UID dictionary). ``keep_non_image``
``secondary_capture``     a secondary capture (SC SOP classes, or Modality OT / SC) whose Image
                          Type is not ``ORIGINAL\\PRIMARY``: screenshots, test patterns, text
                          pages. ``secondary_capture = primary`` keeps any ``...\\PRIMARY``
                          (e.g. NM whole-body scans stored as SC), ``all`` keeps every one.
``burned_in_annotation``  Burned In Annotation (0028,0301) is ``YES``. ``keep_burned_in``
``near_constant``         the display-mapped frame has almost no contrast: standard deviation
                          of its ``[0, 1]`` values below ``min_std`` (0 switches it off).
========================  ====================================================================

Ultrasound (Modality US) is cropped to the union of the data regions of its Sequence of Ultrasound
Regions (0018,6011), which leaves out the header band and side panels where scanners burn text; a
US image without that sequence is kept uncropped and counted (``us_without_regions``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "EXCLUSION_CODES",
    "NON_IMAGE_SOP_CLASSES",
    "SECONDARY_CAPTURE_POLICIES",
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "is_near_constant",
    "non_image_reason",
    "screen_header",
    "ultrasound_crop_box",
]

EXCLUSION_CODES = ("not_an_image", "secondary_capture", "burned_in_annotation", "near_constant")
SECONDARY_CAPTURE_POLICIES = ("original-primary", "primary", "all")


def _uids(*names: str) -> frozenset[str]:
    import pydicom.uid

    return frozenset(str(getattr(pydicom.uid, name)) for name in names)


NON_IMAGE_SOP_CLASSES = _uids(
    "SegmentationStorage",
    "SurfaceSegmentationStorage",
    "RTDoseStorage",
    "RTStructureSetStorage",
    "RTPlanStorage",
    "RTIonPlanStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTBrachyTreatmentRecordStorage",
    "RTTreatmentSummaryRecordStorage",
    "RTIonBeamsTreatmentRecordStorage",
    "KeyObjectSelectionDocumentStorage",
    "RawDataStorage",
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "EncapsulatedSTLStorage",
    "EncapsulatedOBJStorage",
    "EncapsulatedMTLStorage",
    "MRSpectroscopyStorage",
)
# families recognised by their names in pydicom's UID dictionary (every SR and presentation state ...)
_NON_IMAGE_NAME_PARTS = (" SR Storage", "Presentation State Storage", "Waveform Storage", "Encapsulated ")

SECONDARY_CAPTURE_SOP_CLASSES = _uids(
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
)


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "unknown SOP class"


def non_image_reason(sop_class_uid: Any) -> str | None:
    """A one-line reason when ``sop_class_uid`` holds no image of a patient, else None."""
    if sop_class_uid is None:
        return None
    uid = str(sop_class_uid).strip()
    if not uid:
        return None
    name = _sop_class_name(uid)
    if uid in NON_IMAGE_SOP_CLASSES or any(part in name for part in _NON_IMAGE_NAME_PARTS):
        return f"SOP class {name} ({uid}) is not an image of a patient"
    return None


def _image_type(ds) -> list[str]:
    value = ds.get("ImageType")
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [str(v).strip().upper() for v in values]


def _secondary_capture_reason(ds, policy: str) -> str | None:
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if policy == "all" or (sop not in SECONDARY_CAPTURE_SOP_CLASSES and modality not in ("OT", "SC")):
        return None
    image_type = _image_type(ds)
    value1, value2 = (image_type + ["", ""])[:2]
    if value2 == "PRIMARY" and (policy == "primary" or value1 == "ORIGINAL"):
        return None
    shown = "\\".join(image_type) or "absent"
    need = "...\\PRIMARY" if policy == "primary" else "ORIGINAL\\PRIMARY"
    return f"secondary capture ({modality or 'no modality'}, Image Type {shown}; kept only when {need})"


def screen_header(ds, settings) -> tuple[str, str] | None:
    """``(code, reason)`` when the header ``ds`` excludes the image (module table), else None.

    ``settings`` is a :class:`~modan_pacs.pixels.build.CacheSettings` (``keep_non_image``,
    ``secondary_capture``, ``keep_burned_in``).
    """
    if not settings.keep_non_image:
        reason = non_image_reason(ds.get("SOPClassUID"))
        if reason:
            return "not_an_image", reason
    reason = _secondary_capture_reason(ds, settings.secondary_capture)
    if reason:
        return "secondary_capture", reason
    if not settings.keep_burned_in and str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return "burned_in_annotation", "Burned In Annotation is YES (text in the pixels)"
    return None


def ultrasound_crop_box(ds, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (exclusive ends) of the union of the US data regions, or None.

    Regions come from Sequence of Ultrasound Regions (PS3.3 C.8.5.5): each item's Region Location
    Min X0 / Min Y0 / Max X1 / Max Y1 (inclusive pixel coordinates), clipped to ``shape``. The
    union is over the 2D image regions (Region Spatial Format 1) when there are any, else over
    every region with a spatial format (M-mode, spectral, waveform); regions of format 0 (none, e.g.
    a colour bar) count only when nothing else does. None when the sequence is absent or no item
    has a usable box.
    """
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    rows, columns = shape
    by_format: dict[int, list[tuple[int, int, int, int]]] = {}
    for item in regions:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
            spatial = int(item.get("RegionSpatialFormat", 0) or 0)
        except (AttributeError, TypeError, ValueError):
            continue
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(columns - 1, x1), min(rows - 1, y1)
        if x1 >= x0 and y1 >= y0:
            by_format.setdefault(spatial, []).append((y0, y1 + 1, x0, x1 + 1))
    boxes = by_format.get(1) or [b for f, group in by_format.items() if f != 0 for b in group] or by_format.get(0)
    if not boxes:
        return None
    top, bottom = min(b[0] for b in boxes), max(b[1] for b in boxes)
    left, right = min(b[2] for b in boxes), max(b[3] for b in boxes)
    return top, bottom, left, right


def is_near_constant(frame: np.ndarray, min_std: float) -> bool:
    """True when the display-mapped ``frame`` (values in ``[0, 1]``) has ``std < min_std``.

    The standard deviation is taken over a regular grid of at most about 128 x 128 of its pixels
    (every ``k``-th row and column), which is what an image this flat needs and costs ~1/16 of the
    full frame's at 512 x 512."""
    if min_std <= 0:
        return False
    step = max(1, max(frame.shape) // 128)
    return float(np.std(frame[::step, ::step])) < min_std


class ImageExcluded(Exception):
    """Raised while decoding when screening excludes an image (not an error: a decision with a reason)."""

    def __init__(self, path: str, code: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.code, self.reason = str(path), code, reason
