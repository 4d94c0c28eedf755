"""Decoding real DICOM files: each transfer-syntax family vs pydicom's decode of its uncompressed twin
(or vs SimpleITK/GDCM, an independent decoder, where no twin exists); windowing; MONOCHROME1; frames."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut

from modan_pacs.errors import InputError
from modan_pacs.pixels.decode import (
    apply_window,
    display_frames,
    fit_square,
    read_dicom_frames,
    read_series_slices,
    select_slices,
)

LUMA = np.array([0.299, 0.587, 0.114])


def _reference(name: str) -> np.ndarray:
    """pydicom's own decode of a file, to (F, H, W) modality values or BT.601 luma."""
    ds = pydicom.dcmread(get_testdata_file(name))
    arr = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.shape[-1] == 3 and ds.PhotometricInterpretation != "MONOCHROME2":
        gray = arr.astype(np.float64) @ LUMA
        return gray if n > 1 else gray[None]
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    return values if n > 1 else values[None]


LOSSLESS_PAIRS = [
    ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 lossless
    ("emri_small_RLE.dcm", "emri_small.dcm"),  # multi-frame RLE
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit VR big endian
    ("MR_small_implicit.dcm", "MR_small.dcm"),  # implicit VR
    ("SC_rgb_rle.dcm", "SC_rgb.dcm"),  # colour RLE
    ("SC_rgb_rle_16bit.dcm", "SC_rgb_16bit.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # colour ultrasound, JPEG 2000 lossless
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),  # colour ultrasound RLE
    ("693_J2KR.dcm", "693_UNCR.dcm"),
    ("rtdose_rle.dcm", "rtdose.dcm"),
    ("JPEG2000.dcm", "JPEG2000_UNC.dcm"),  # JPEG 2000 (lossy syntax) vs its uncompressed twin
]


@pytest.mark.parametrize(("compressed", "plain"), LOSSLESS_PAIRS)
def test_lossless_family_equals_uncompressed_twin(compressed, plain):
    decoded, raw = read_dicom_frames(get_testdata_file(compressed))
    twin = pydicom.dcmread(get_testdata_file(plain)).pixel_array  # pydicom's decode of the twin
    np.testing.assert_array_equal(np.stack(raw), twin.reshape(np.stack(raw).shape))  # stored values: exact
    np.testing.assert_allclose(decoded.frames, _reference(plain), rtol=1e-12, atol=1e-9)  # modality / luma


@pytest.mark.parametrize(
    ("compressed", "plain"),
    [
        ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm"),
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_dcmtk_ebcynp_dcmd.dcm"),
    ],
)
def test_jpeg_baseline_matches_dcmtk_decode_within_one_level(compressed, plain):
    # the *_dcmd files are dcmtk's decode of the same stream; IDCT rounding differs by <= 1 level
    decoded, _ = read_dicom_frames(get_testdata_file(compressed))
    ref = _reference(plain)
    assert decoded.frames.shape == ref.shape
    assert np.abs(decoded.frames - ref).max() <= 1.0


@pytest.mark.parametrize("name", ["JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG-LL.dcm"])
def test_jpeg_lossless_equals_gdcm_decode(name):
    import SimpleITK as sitk

    path = get_testdata_file(name)
    decoded, _ = read_dicom_frames(path)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(path, sitk.sitkFloat64))
    np.testing.assert_array_equal(decoded.frames, ref.reshape(decoded.frames.shape))


def test_undecodable_file_raises_input_error_naming_file():
    with pytest.raises(InputError, match="rtplan.dcm"):
        read_dicom_frames(get_testdata_file("rtplan.dcm"))  # no image
    with pytest.raises(InputError, match="MR_truncated"):
        read_dicom_frames(get_testdata_file("MR_truncated.dcm"))


def test_ct_window_matches_hand_computation():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    decoded, raw = read_dicom_frames(path)
    np.testing.assert_array_equal(decoded.frames[0], hu)
    out = display_frames(decoded, window=(40.0, 400.0), raw=raw)[0]
    lo, hi = 40 - 0.5 - 399 / 2, 40 - 0.5 + 399 / 2  # PS3.3 C.11.2.1.2
    expected = np.where(hu <= lo, 0.0, np.where(hu > hi, 1.0, (hu - 39.5) / 399 + 0.5))
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert 0 < (out == 0).mean() < 1 and 0 < (out == 1).mean() + ((out > 0) & (out < 1)).mean()
    # hand values: -160.5 HU is the bottom, 239.5 HU the top, 40 HU mid-grey
    np.testing.assert_allclose(apply_window(np.array([-161.0, 40.0, 240.0]), 40, 400), [0.0, 0.5 + 0.5 / 399, 1.0])


def test_header_window_used_when_no_explicit_window():
    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    decoded, raw = read_dicom_frames(path)
    if "WindowCenter" in ds:
        expected = apply_window(decoded.frames[0], float(ds.WindowCenter), float(ds.WindowWidth))
    else:
        f = decoded.frames[0]
        expected = (f - f.min()) / (f.max() - f.min())
    np.testing.assert_allclose(display_frames(decoded, raw=raw)[0], expected)


def test_monochrome1_is_inverted(tmp_path):
    src = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for key in ("WindowCenter", "WindowWidth"):
        if key in src:
            del src[key]
    src.save_as(tmp_path / "m2.dcm")
    src.PhotometricInterpretation = "MONOCHROME1"
    src.save_as(tmp_path / "m1.dcm")
    d2, r2 = read_dicom_frames(tmp_path / "m2.dcm")
    d1, r1 = read_dicom_frames(tmp_path / "m1.dcm")
    np.testing.assert_allclose(display_frames(d1, raw=r1), 1.0 - display_frames(d2, raw=r2))


def test_real_monochrome1_radiograph_is_inverted(pydicom_data_dir):
    path = pydicom_data_dir / "dicomdirtests" / "77654033" / "CR1" / "6154"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    decoded, raw = read_dicom_frames(path)
    out = display_frames(decoded, raw=raw)[0]
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    brightest = np.unravel_index(np.argmax(values), values.shape)
    darkest = np.unravel_index(np.argmin(values), values.shape)
    assert out[brightest] < out[darkest]  # high stored value displays dark


def test_multiframe_policies_give_chosen_frames():
    path = get_testdata_file("emri_small.dcm")  # 10 frames
    ref = _reference("emri_small.dcm")
    for policy, expected in (
        ("middle", [5]),
        ("even:3", [1, 5, 8]),
        ("all", list(range(10))),
        ("even:20", list(range(10))),
    ):
        decoded, _ = read_dicom_frames(path, policy)
        assert decoded.frame_indices == expected
        np.testing.assert_array_equal(decoded.frames, ref[expected])
    assert select_slices(4, "even:2") == [1, 3]
    with pytest.raises(InputError):
        select_slices(4, "every")


def test_series_volume_via_simpleitk_matches_pydicom(pydicom_data_dir):
    files = sorted((pydicom_data_dir / "dicomdirtests" / "98892001" / "CT5N").iterdir())
    decoded, chosen = read_series_slices(files, "all")
    zs = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in chosen]
    assert zs == sorted(zs)  # ordered along the slice normal (axial: z)
    for frame, path in zip(decoded.frames, chosen, strict=True):
        ds = pydicom.dcmread(path)
        np.testing.assert_allclose(frame, apply_modality_lut(ds.pixel_array, ds))
    middle, (mid_path,) = read_series_slices(files, "middle")
    assert mid_path == chosen[2] and middle.frame_indices == [2]


def test_fit_square_pads_keeping_aspect():
    img = np.ones((20, 40))
    out = fit_square(img, 16, "pad")
    assert out.shape == (16, 16) and out.dtype == np.float32
    assert np.all(out[:4] == 0) and np.all(out[12:] == 0) and np.allclose(out[4:12], 1.0)
    assert np.allclose(fit_square(img, 16, "stretch"), 1.0)


def test_malformed_12_bit_jpeg_decodes_through_gdcm_like_dcmtk(tmp_path, binary):
    """JPEG-lossy.dcm (12-bit extended JPEG, invalid SOS parameters): every pydicom plugin refuses
    it; the SimpleITK/GDCM fallback must give dcmtk's dcmdjpeg values exactly."""
    import subprocess

    from modan_pacs.pixels.decode import read_dicom_frames

    src = get_testdata_file("JPEG-lossy.dcm")
    with pytest.raises(Exception):
        pydicom.dcmread(src).pixel_array  # (the premise: pydicom alone cannot)
    dcmdjpeg = binary("dcmdjpeg")
    plain = tmp_path / "plain.dcm"
    subprocess.run([dcmdjpeg, src, str(plain)], check=True, capture_output=True)
    reference = pydicom.dcmread(plain)
    decoded, raw = read_dicom_frames(src, "middle")
    np.testing.assert_array_equal(raw[0], reference.pixel_array)
    np.testing.assert_array_equal(
        decoded.frames[0], apply_modality_lut(reference.pixel_array, reference).astype(np.float64)
    )


def test_gdcm_fallback_undoes_the_rescale_it_applies(monkeypatch):
    """Forced fallback on CT_small (RescaleIntercept -1024): stored values equal pydicom's."""
    import modan_pacs.pixels.decode as decode_module

    src = get_testdata_file("CT_small.dcm")
    expected_decoded, expected_raw = decode_module.read_dicom_frames(src, "middle")

    def refuse(*args, **kwargs):
        raise RuntimeError("no plugin (forced by the test)")

    monkeypatch.setattr("pydicom.pixels.iter_pixels", refuse)
    decoded, raw = decode_module.read_dicom_frames(src, "middle")
    assert raw[0].dtype == expected_raw[0].dtype
    np.testing.assert_array_equal(raw[0], expected_raw[0])
    np.testing.assert_array_equal(decoded.frames, expected_decoded.frames)
