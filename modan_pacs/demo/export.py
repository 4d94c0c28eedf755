"""A generated PACS export with messy but realistic headers, and a DICOM writer for real pixels.

* :func:`write_dicom_image` wraps a 2-D array (uint8 / uint16, MONOCHROME2) into a DICOM file with
  the SOP class of its modality; use it to turn real PNGs into DICOM.
* :func:`export_plan` is the deterministic plan of an export (one record per file with the truth:
  anatomy, which header field carries it, and the fake identifying values to look for in outputs).
* :func:`generate_export` writes that plan: nested folders, names with and without ``.dcm``, part
  of it as a DICOMDIR file-set (``pydicom.fileset.FileSet``), small images (64-128 px).
* :func:`real_dicom_sources` lists the real DICOM files installed by pydicom and pydicom-data.

The messiness mirrors real exports: BodyPartExamined missing, ``THORAX`` vs ``CHEST``, lower case,
abbreviations (``LSPINE``, ``ABD``), anatomy only in SeriesDescription or ProtocolName, only an
AnatomicRegionSequence code, or nowhere. Identifying values (PatientName, PatientBirthDate,
PatientAddress, PatientID, ...) are fake but realistic, so a no-PHI check has something to catch.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom import uid

from modan_pacs.errors import InputError
from modan_pacs.fileio import load_gray

SOP_CLASS_BY_MODALITY = {
    "CT": uid.CTImageStorage,
    "MR": uid.MRImageStorage,
    "US": uid.UltrasoundImageStorage,
    "CR": uid.ComputedRadiographyImageStorage,
    "DX": uid.DigitalXRayImageStorageForPresentation,
    "MG": uid.DigitalMammographyXRayImageStorageForPresentation,
    "PT": uid.PositronEmissionTomographyImageStorage,
    "NM": uid.NuclearMedicineImageStorage,
    "XA": uid.XRayAngiographicImageStorage,
    "RF": uid.XRayRadiofluoroscopicImageStorage,
}
SECONDARY_CAPTURE = uid.SecondaryCaptureImageStorage
_UID_ROOT = "1.2.826.0.1.3680043.10.1042."  # example root for generated UIDs


def write_dicom_image(
    path: str | Path,
    pixels: np.ndarray,
    *,
    modality: str,
    body_part: str | None = None,
    series_description: str | None = None,
    study_description: str | None = None,
    protocol_name: str | None = None,
    anatomic_region: tuple[str, str, str] | None = None,
    patient_id: str = "ANON0001",
    patient_name: str | None = None,
    patient_birth_date: str | None = None,
    patient_address: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    instance_number: int = 1,
    manufacturer: str | None = None,
    view_position: str | None = None,
    laterality: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write ``pixels`` (2-D ``(rows, columns)``, uint8 or uint16) as a MONOCHROME2 DICOM image.

    The SOP class follows ``modality`` (CT, MR, US, CR, DX, MG, PT, NM, XA, RF; anything else is
    Secondary Capture). Explicit VR Little Endian with a file meta header and preamble.

    Args:
        anatomic_region: ``(code_value, coding_scheme, meaning)`` for AnatomicRegionSequence,
            e.g. ``("818981001", "SCT", "Abdomen")``.
        extra: more top-level attributes by keyword (e.g. ``{"InstitutionName": "..."}``).

    Raises:
        InputError: ``pixels`` is not 2-D or not uint8/uint16.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise InputError(f"pixels must be 2-D (rows, columns), got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"pixels must be uint8 or uint16, got {arr.dtype}")
    modality = modality.strip().upper()
    sop_class = SOP_CLASS_BY_MODALITY.get(modality, SECONDARY_CAPTURE)
    sop_uid = sop_instance_uid or generate_uid(prefix=_UID_ROOT)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_instance_uid or generate_uid(prefix=_UID_ROOT)
    ds.SeriesInstanceUID = series_instance_uid or generate_uid(prefix=_UID_ROOT)
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name or ""
    if patient_birth_date:
        ds.PatientBirthDate = patient_birth_date
    if patient_address:
        ds.PatientAddress = patient_address
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240115", "101500", "1"
    ds.InstanceNumber = int(instance_number)
    ds.SeriesNumber = 1
    import warnings

    warnings.filterwarnings("ignore", message="Invalid value for VR CS", category=UserWarning)  # messy on purpose
    for keyword, value in (
        ("BodyPartExamined", body_part),
        ("SeriesDescription", series_description),
        ("StudyDescription", study_description),
        ("ProtocolName", protocol_name),
        ("Manufacturer", manufacturer),
        ("ViewPosition", view_position),
        ("ImageLaterality", laterality),
    ):
        if value is not None:
            setattr(ds, keyword, value)
    if anatomic_region is not None:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = anatomic_region
        ds.AnatomicRegionSequence = [item]
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    if modality in ("CT",):
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    bits = 8 if arr.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------- the messy export
# (modality, anatomy truth, how the anatomy is written) -> header fields. "source" is what the
# index must report as anatomy_source.
_SCENARIOS: list[dict] = [
    {
        "modality": "CT",
        "anatomy": "lung",
        "source": "body_part",
        "BodyPartExamined": "CHEST",
        "SeriesDescription": "Ax 1.25mm",
    },
    {
        "modality": "CT",
        "anatomy": "lung",
        "source": "body_part",
        "BodyPartExamined": "THORAX",
        "SeriesDescription": "LUNG 1.0 B70f",
    },
    {
        "modality": "CT",
        "anatomy": "abdomen",
        "source": "body_part",
        "BodyPartExamined": "abdomen",
        "SeriesDescription": "Portal venous",
    },
    {
        "modality": "CT",
        "anatomy": "abdomen",
        "source": "body_part",
        "BodyPartExamined": "ABD",
        "SeriesDescription": "AX 5mm",
    },
    {
        "modality": "MR",
        "anatomy": "brain",
        "source": "description",
        "SeriesDescription": "Ax T2 FLAIR Brain",
        "StudyDescription": "MRI",
    },
    {
        "modality": "MR",
        "anatomy": "knee",
        "source": "body_part",
        "BodyPartExamined": "Knee ",
        "SeriesDescription": "Sag PD FS",
    },
    {
        "modality": "MR",
        "anatomy": "spine",
        "source": "description",
        "ProtocolName": "L-SPINE SAG T2",
        "SeriesDescription": "t2_tse_sag",
    },
    {
        "modality": "MR",
        "anatomy": "spine",
        "source": "body_part",
        "BodyPartExamined": "LSPINE",
        "SeriesDescription": "Sag T1",
    },
    {
        "modality": "MR",
        "anatomy": "shoulder",
        "source": "anatomic_region",
        "region": ("16982005", "SCT", "Shoulder"),
        "SeriesDescription": "Cor PD",
    },
    {
        "modality": "US",
        "anatomy": "thyroid",
        "source": "description",
        "StudyDescription": "US THYROID",
        "SeriesDescription": "Transverse",
    },
    {"modality": "US", "anatomy": "fetal", "source": "description", "SeriesDescription": "OB fetal biometry"},
    {"modality": "US", "anatomy": "abdomen", "source": "anatomic_region", "region": ("818981001", "SCT", "Abdomen")},
    {"modality": "CR", "anatomy": "lung", "source": "body_part", "BodyPartExamined": "CHEST", "ViewPosition": "PA"},
    {"modality": "DX", "anatomy": "hip", "source": "body_part", "BodyPartExamined": "hip", "ViewPosition": "AP"},
    {
        "modality": "DX",
        "anatomy": "ankle-foot",
        "source": "description",
        "StudyDescription": "XR ANKLE 3 VIEWS LEFT",
        "ViewPosition": "LAT",
    },
    {"modality": "MG", "anatomy": "breast", "source": "body_part", "BodyPartExamined": "BREAST", "ViewPosition": "MLO"},
    {
        "modality": "CT",
        "anatomy": "brain",
        "source": "body_part",
        "BodyPartExamined": "HEAD",
        "SeriesDescription": "Head 5mm",
    },
    {"modality": "MR", "anatomy": None, "source": "unknown", "SeriesDescription": "localizer"},
    {"modality": "PT", "anatomy": "pelvis", "source": "anatomic_region", "region": ("T-D6000", "SRT", "Pelvis")},
    {
        "modality": "CT",
        "anatomy": "neck",
        "source": "description",
        "ProtocolName": "SOFT TISSUE NECK W",
        "SeriesDescription": "Ax 3mm",
    },
]
_SURNAMES = [
    "HARTMANN",
    "OKONKWO",
    "LINDQVIST",
    "MORETTI",
    "TANAKA",
    "FERREIRA",
    "KOWALSKA",
    "DUBOIS",
    "ABERNATHY",
    "CASTELLANOS",
    "NAKAMURA",
    "OYELARAN",
    "VANDERMEER",
    "PETROVIC",
    "GALLAGHER",
]
_GIVEN = [
    "MARGARETHE",
    "CHIDI",
    "ASTRID",
    "LORENZO",
    "HIROSHI",
    "BEATRIZ",
    "ZOFIA",
    "AMELIE",
    "WINIFRED",
    "JOAQUIN",
    "SAKURA",
    "ADEBAYO",
    "LIEKE",
    "DRAGANA",
    "FIONNUALA",
]
_STREETS = ["Willowbrook Lane", "Kestrel Avenue", "Harborview Road", "Quarry Hill Street", "Aldermoor Close"]
_MANUFACTURERS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems", "TOSHIBA", "FUJIFILM Corporation"]


def export_plan(n_patients: int = 12, seed: int = 0) -> list[dict]:
    """Deterministic plan of :func:`generate_export`: one dict per DICOM file.

    Keys: ``relpath`` (POSIX, relative to the export root; ``None`` for DICOMDIR members, whose
    names pydicom assigns), ``in_dicomdir``, ``modality``, ``anatomy`` (truth or None),
    ``source`` (expected ``anatomy_source``), the header fields, the UIDs, and the fake
    identifying values ``patient_id``, ``patient_name``, ``patient_birth_date``, ``patient_address``.
    """
    if n_patients < 1:
        raise InputError(f"n_patients must be >= 1, got {n_patients}")
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    plan: list[dict] = []
    scenario_i = int(rng.integers(len(_SCENARIOS)))
    for p in range(n_patients):
        surname, given = _SURNAMES[p % len(_SURNAMES)], _GIVEN[(p * 7 + seed) % len(_GIVEN)]
        patient = {
            "patient_id": f"MRN{int(rng.integers(10**6, 10**7))}{p:02d}",
            "patient_name": f"{surname}^{given}",
            "patient_birth_date": (
                f"19{int(rng.integers(30, 99))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            ),
            "patient_address": f"{int(rng.integers(2, 400))} {_STREETS[p % len(_STREETS)]}, Springfield",
        }
        in_dicomdir = p == 0  # the first patient arrives as a DICOMDIR file-set (a CD import)
        for s in range(1 + p % 2):
            study_uid = generate_uid(prefix=_UID_ROOT, entropy_srcs=[str(seed), str(p), str(s), "study"])
            for r in range(1 + (p + s) % 2):
                sc = _SCENARIOS[scenario_i % len(_SCENARIOS)]
                scenario_i += 1
                series_uid = generate_uid(prefix=_UID_ROOT, entropy_srcs=[str(seed), str(p), str(s), str(r), "series"])
                n_inst = 2 + (p + r) % 3
                manufacturer = _MANUFACTURERS[(p + s + r) % len(_MANUFACTURERS)]
                for i in range(n_inst):
                    sop_uid = generate_uid(prefix=_UID_ROOT, entropy_srcs=[str(seed), str(p), str(s), str(r), str(i)])
                    style = (p + s + r + i) % 3  # file naming styles seen in real exports
                    name = [f"IMG{i + 1:04d}.dcm", f"{i + 1:08d}", f"I{i + 1}.DCM"][style]
                    relpath = None if in_dicomdir else f"site_a/STUDY_{p:03d}_{s}/SER{r + 1:03d}/{name}"
                    plan.append(
                        {
                            **patient,
                            "relpath": relpath,
                            "in_dicomdir": in_dicomdir,
                            "modality": sc["modality"],
                            "anatomy": sc["anatomy"],
                            "source": sc["source"],
                            "body_part": sc.get("BodyPartExamined"),
                            "series_description": sc.get("SeriesDescription"),
                            "study_description": sc.get("StudyDescription"),
                            "protocol_name": sc.get("ProtocolName"),
                            "anatomic_region": sc.get("region"),
                            "view_position": sc.get("ViewPosition"),
                            "manufacturer": manufacturer,
                            "study_instance_uid": study_uid,
                            "series_instance_uid": series_uid,
                            "sop_instance_uid": sop_uid,
                            "instance_number": i + 1,
                            "size": int(64 + 32 * ((p + r + i) % 3)),
                        }
                    )
    return plan


def _phantom(size: int, modality: str, rng: np.random.Generator, sources: Sequence[Path] | None, k: int) -> np.ndarray:
    """A small image: a real PNG from ``sources`` (resized) or a synthetic ellipse phantom."""
    if sources:
        arr = load_gray(sources[k % len(sources)], size=size)
        return arr.astype(np.uint16) * 16 if modality in ("CT", "MR", "PT", "NM") else arr.astype(np.uint8)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    a, b = rng.uniform(0.5, 0.9, size=2)
    body = ((xx / a) ** 2 + (yy / b) ** 2) <= 1
    img = body * 0.6 + rng.normal(0, 0.05, (size, size))
    cx, cy, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.25)
    img += (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r) * 0.3
    img = np.clip(img, 0, 1)
    if modality in ("CT", "MR", "PT", "NM"):
        return (img * 2000).astype(np.uint16)
    return (img * 255).astype(np.uint8)


def generate_export(
    out_dir: str | Path,
    *,
    n_patients: int = 12,
    seed: int = 0,
    sources: Sequence[str | Path] | None = None,
) -> Path:
    """Write the export of :func:`export_plan` into ``out_dir`` and return ``out_dir``.

    Args:
        out_dir: folder to create (files already there are overwritten).
        n_patients: patients to generate (about 5 files each).
        seed: makes the export reproducible (same files, UIDs and fake identities).
        sources: optional PNG files whose pixels are used (cycled) instead of synthetic phantoms.

    Layout: ``site_a/STUDY_ppp_s/SERnnn/<name>`` with names ``IMG0001.dcm``, ``00000001`` or
    ``I1.DCM``; the first patient as a DICOMDIR file-set under ``cd_import/`` (``DICOMDIR`` +
    ``PT000000/ST000000/SE000000/IM000000``); a ``README.TXT`` that is not DICOM.
    """
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    src = [Path(s) for s in sources] if sources else None
    rng = np.random.default_rng(seed + 1)
    staged: list[Path] = []
    staging = root / ".staging_dicomdir"
    for k, rec in enumerate(export_plan(n_patients, seed)):
        target = root / rec["relpath"] if rec["relpath"] else staging / f"{k:05d}.dcm"
        write_dicom_image(
            target,
            _phantom(rec["size"], rec["modality"], rng, src, k),
            modality=rec["modality"],
            body_part=rec["body_part"],
            series_description=rec["series_description"],
            study_description=rec["study_description"],
            protocol_name=rec["protocol_name"],
            anatomic_region=rec["anatomic_region"],
            patient_id=rec["patient_id"],
            patient_name=rec["patient_name"],
            patient_birth_date=rec["patient_birth_date"],
            patient_address=rec["patient_address"],
            study_instance_uid=rec["study_instance_uid"],
            series_instance_uid=rec["series_instance_uid"],
            sop_instance_uid=rec["sop_instance_uid"],
            instance_number=rec["instance_number"],
            manufacturer=rec["manufacturer"],
            view_position=rec["view_position"],
            extra={"InstitutionName": "Springfield General Hospital", "ReferringPhysicianName": "DR^NOBODY"},
        )
        if rec["relpath"] is None:
            staged.append(target)
    if staged:
        fs = FileSet()
        for path in staged:
            fs.add(dcmread(path))
        cd = root / "cd_import"
        if cd.exists():
            import shutil

            shutil.rmtree(cd)
        cd.mkdir()
        fs.write(cd)
        for path in staged:
            path.unlink()
        staging.rmdir()
    (root / "README.TXT").write_text("Export from PACS archive, site A. Not DICOM.\n", encoding="ascii")
    return root


def real_dicom_sources() -> list[Path]:
    """Every file of pydicom's ``data/test_files`` and pydicom-data's ``data_store/data`` (globbed,
    never downloaded: ``get_testdata_files`` would try the network). Includes the non-DICOM and
    broken files these folders hold; the indexer sorts them into errors."""
    from pydicom.data import get_testdata_file

    roots = [Path(get_testdata_file("CT_small.dcm")).parent]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError as exc:
        raise InputError("pydicom-data is not installed (pip install pydicom-data)") from exc
    files: list[Path] = []
    for root in roots:
        files.extend(Path(p) for p in sorted(glob.glob(str(root / "**" / "*"), recursive=True)) if Path(p).is_file())
    return files
