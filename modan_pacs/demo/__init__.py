"""The embedded demo: a generated messy PACS export plus the real DICOM files of pydicom / pydicom-data.

Public names of :mod:`modan_pacs.demo.export`: ``generate_export``, ``export_plan``,
``write_dicom_image``, ``real_dicom_sources``, ``SOP_CLASS_BY_MODALITY``.
"""

from modan_pacs.demo.export import (
    SOP_CLASS_BY_MODALITY,
    export_plan,
    generate_export,
    real_dicom_sources,
    write_dicom_image,
)

__all__ = ["SOP_CLASS_BY_MODALITY", "export_plan", "generate_export", "real_dicom_sources", "write_dicom_image"]
