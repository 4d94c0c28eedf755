"""Files for the pixel tests: real pydicom / pydicom-data / nibabel files, and generated PET, MOSAIC
and series files built on real header layouts."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file


def extra_file(name: str) -> Path:
    """A pydicom-data file (``data_store/data``), real DICOM."""
    import data_store

    return Path(data_store.__file__).parent / "data" / name


def copy_to(folder: Path, source: str | Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or Path(source).name)
    shutil.copyfile(source, target)
    return target


def uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.10.1042." + ".".join(str(p) for p in parts)


def write_ct_series(folder: Path, n: int = 11, series: int = 1) -> list[Path]:
    """``n`` single-frame CTs of one series (CT_small.dcm's header and pixels, shifted per slice)."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        ds = base.copy()
        ds.SeriesInstanceUID = uid(7, series)
        ds.SOPInstanceUID = uid(7, series, k + 1)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * 5.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        pixels = base.pixel_array.astype(np.int16) + np.int16(10 * k)
        ds.PixelData = pixels.tobytes()
        paths.append(folder / f"slice_{k:02d}.dcm")
        ds.save_as(paths[-1])
    return paths


def write_pet(path: Path, *, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A PET slice as scanners write them: PET Image Storage, Units BQML, RescaleSlope, and a header
    window (0..10, meant for SUV) that does not fit the stored activity (Bq/ml up to ~40000).

    Returns the path and the activity values (Bq/ml, after rescale)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    body = ((yy - 48) ** 2 / 40**2 + (xx - 48) ** 2 / 30**2) < 1
    lesion = ((yy - 40) ** 2 + (xx - 55) ** 2) < 16
    activity = body * 5000.0 + lesion * 30000.0 + rng.normal(0, 300, body.shape) * body
    slope = 0.75
    stored = np.clip(np.rint(activity / slope), 0, 65535).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid(9, seed, 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = PositronEmissionTomographyImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(9, seed), uid(9, seed, 0)
    ds.Modality, ds.PatientID, ds.BodyPartExamined = "PT", "PET001", "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.PatientWeight = 70
    ds.SeriesDate, ds.SeriesTime = "20240315", "103000"  # 60 min after injection
    drug = Dataset()
    drug.RadiopharmaceuticalStartTime = "093000.00"
    drug.RadionuclideTotalDose = 3.7e8  # Bq (10 mCi)
    drug.RadionuclideHalfLife = 6586.2  # s, F-18
    drug.Radiopharmaceutical = "Fluorodeoxyglucose"
    ds.RadiopharmaceuticalInformationSequence = [drug]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, 0, "BQML"
    ds.WindowCenter, ds.WindowWidth = 5, 10
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [4, 4]
    ds.PixelData = stored.tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, stored.astype(np.float64) * slope


def write_mosaic(path: Path, *, keep_csa: bool = True) -> tuple[Path, np.ndarray]:
    """A Siemens DWI MOSAIC with nibabel's real header (``siemens_dwi_1000.dcm``: 48 slices of
    128 x 128 in a 7 x 7 grid, CSA image header) and generated tiles: slice ``k`` holds a ramp
    shifted by ``5 k``. Returns the path and the ``(48, 128, 128)`` slices."""
    import nibabel

    real = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "siemens_dwi_1000.dcm.gz"
    ds = pydicom.dcmread(gzip.open(real))
    n, tile = 48, 128
    yy, xx = np.mgrid[:tile, :tile]
    slices = np.stack([20 + (yy + 2 * xx + 5 * k) % 300 for k in range(n)]).astype(
        np.uint16
    )  # inside the header's window 170/398
    mosaic = np.zeros((7 * tile, 7 * tile), np.uint16)
    for k in range(n):
        r, c = divmod(k, 7)
        mosaic[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = slices[k]
    ds.PixelData = mosaic.tobytes()
    if not keep_csa:
        del ds[0x00291010]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path, slices
