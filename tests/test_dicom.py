"""DICOM slices through :func:`lungdemo.decode.decode_image`, on pydicom's bundled test files.

Only files shipped inside the pydicom wheel are used (``get_testdata_file`` of a name that is
not bundled would try to download it). Variants (MONOCHROME1, multi-frame, no pixel data,
huge headers, bombs) are made from them in memory.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.sequence import Sequence

import lungdemo.dicom as dicom_mod
from lungdemo.decode import WARNING_PREFIX, ImageDecodeError, decode_image, is_dicom
from lungdemo.dicom import LUNG_WINDOW, TRAINED_ON_PNG_NOTE, window
from tests.conftest import make_model

NOT_AN_IMAGE = "not an image file PIL can read"


def bundled(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as f:
        return f.read()


def read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def lung_window_reference(hu: np.ndarray) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear windowing, written out independently of lungdemo.dicom."""
    center, width = -600.0, 1500.0
    out = np.empty(hu.shape, dtype=np.float64)
    low = hu <= center - 0.5 - (width - 1) / 2
    high = hu > center - 0.5 + (width - 1) / 2
    mid = ~(low | high)
    out[low], out[high] = 0, 255
    out[mid] = ((hu[mid] - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


# --- CT: Hounsfield units and the lung window ---------------------------------------------------


def test_ct_small_is_rescaled_to_hu_and_lung_windowed() -> None:
    ds = read("CT_small.dcm")
    assert (ds.Modality, float(ds.RescaleSlope), float(ds.RescaleIntercept)) == ("CT", 1.0, -1024.0)
    gray, info = decode_image(bundled("CT_small.dcm"))
    assert gray.mode == "L" and gray.size == (128, 128)
    hu = ds.pixel_array.astype(np.float64) * 1.0 - 1024.0
    assert np.array_equal(np.asarray(gray), lung_window_reference(hu))
    assert (info.format, info.mode, info.size, info.n_frames) == ("DICOM", "MONOCHROME2", (128, 128), 1)
    assert info.warnings == []
    assert "lung window (center -600, width 1500 HU)" in " ".join(info.notes)
    assert "slope 1, intercept -1024" in " ".join(info.notes)
    assert info.notes[-1] == TRAINED_ON_PNG_NOTE and "PNG renderings" in TRAINED_ON_PNG_NOTE


def test_lung_window_end_points() -> None:
    center, width = LUNG_WINDOW
    hu = np.array([-2000.0, -1350.0, -600.0, 149.0, 150.0, 3000.0])
    out = window(hu, center, width)
    assert out.tolist() == lung_window_reference(hu).tolist()
    assert out[0] == 0 and out[-1] == 255 and out[2] == 128  # air black, bone white, -600 HU mid-gray


def test_the_files_own_window_is_not_used_for_ct() -> None:
    """The bundled JPEG 2000 CT stores a 40/100 window; the lung window is used all the same."""
    ds = read("693_J2KI.dcm")
    gray, info = decode_image(bundled("693_J2KI.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(np.asarray(gray), lung_window_reference(hu))
    assert "the file's own display window (center 40, width 100) was not used" in info.notes


def test_rescale_from_enhanced_functional_groups() -> None:
    """Enhanced multi-frame CT keeps slope/intercept in the functional groups, not at the top."""
    ds = read("CT_small.dcm")
    stored = ds.pixel_array.astype(np.float64)
    del ds.RescaleSlope, ds.RescaleIntercept
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = "2", "-2048"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    gray, info = decode_image(to_bytes(ds))
    assert np.array_equal(np.asarray(gray), lung_window_reference(stored * 2 - 2048))
    assert "slope 2, intercept -2048" in " ".join(info.notes)


def test_monochrome1_is_inverted() -> None:
    plain, _ = decode_image(bundled("CT_small.dcm"))
    ds = read("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted, info = decode_image(to_bytes(ds))
    assert np.array_equal(np.asarray(inverted), 255 - np.asarray(plain))
    assert info.mode == "MONOCHROME1"
    assert any("MONOCHROME1" in n and "inverted" in n for n in info.notes)


def test_multi_frame_uses_the_first_frame() -> None:
    ds = read("CT_small.dcm")
    first = ds.pixel_array
    frames = [first, np.flipud(first), np.zeros_like(first)]
    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(f.astype("<i2").tobytes() for f in frames)
    gray, info = decode_image(to_bytes(ds))
    assert np.array_equal(np.asarray(gray), lung_window_reference(first.astype(np.float64) - 1024))
    assert info.n_frames == 3
    assert "multi-frame DICOM (3 frames): the first frame was used" in info.notes


# --- other modalities and colour -------------------------------------------------------------------


def test_mr_uses_its_own_window_and_warns_it_is_not_ct() -> None:
    ds = read("MR_small.dcm")
    gray, info = decode_image(bundled("MR_small.dcm"))
    assert np.array_equal(np.asarray(gray), window(ds.pixel_array.astype(np.float64), 600, 1600))
    assert info.warnings == [
        f"{WARNING_PREFIX}this DICOM file is not a CT image (modality MR); the model knows chest CT only"
    ]
    assert info.notes[0] == info.warnings[0]  # warnings come first
    assert "shown in the file's own display window (center 600, width 1600)" in info.notes


def test_colour_dicom_is_converted_and_flagged() -> None:
    gray, info = decode_image(bundled("SC_rgb_small_odd.dcm"))
    assert gray.mode == "L" and gray.size == (3, 3)
    assert any("strongly coloured" in w for w in info.warnings)


def test_deflated_dicom_is_read() -> None:
    ds = read("image_dfl.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    gray, info = decode_image(bundled("image_dfl.dcm"))
    arr = ds.pixel_array.astype(np.float64)
    expected = np.rint((arr - arr.min()) * (255.0 / (arr.max() - arr.min()))).astype(np.uint8)
    assert np.array_equal(np.asarray(gray), expected)
    assert "Deflated Explicit VR Little Endian" in info.notes[1]


def test_dicom_reaches_the_model(tmp_path) -> None:
    from lungdemo.folder import write_model_folder
    from lungdemo.predictor import Predictor

    predictor = Predictor.from_ref(write_model_folder(make_model(seed=1), tmp_path / "model"))
    prediction = predictor.predict(bundled("CT_small.dcm"))
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert TRAINED_ON_PNG_NOTE in prediction.notes and prediction.warnings == []


# --- refused ------------------------------------------------------------------------------------------


def test_no_pixel_data() -> None:
    ds = read("CT_small.dcm")
    del ds.PixelData
    with pytest.raises(ImageDecodeError, match=r"^the DICOM file holds no image: it has no pixel data \(it is a CT"):
        decode_image(to_bytes(ds))


def test_structured_report_holds_no_image() -> None:
    with pytest.raises(ImageDecodeError, match=r"no pixel data \(it is a Basic Text SR Storage\)"):
        decode_image(bundled("reportsi.dcm"))


def test_pixel_count_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(dicom_mod, "pixel_array", no_decoding)
    ds = read("CT_small.dcm")
    ds.Rows = ds.Columns = 40000
    with pytest.raises(ImageDecodeError) as err:
        decode_image(to_bytes(ds))
    assert str(err.value) == "DICOM image is 40000x40000 = 1,600,000,000 pixels; the limit is 40,000,000"

    ds = read("CT_small.dcm")
    ds.NumberOfFrames = 5000  # 128 x 128 x 5000 = 81,920,000
    with pytest.raises(ImageDecodeError, match=r"128x128 x 5000 frames = 81,920,000 pixels; the limit is 40,000,000"):
        decode_image(to_bytes(ds))
    with pytest.raises(ImageDecodeError, match=r"= 16,384 pixels; the limit is 10,000"):
        decode_image(bundled("CT_small.dcm"), max_pixels=10_000)


def test_compressed_without_a_decoder() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bundled("MR_small_jpeg_ls_lossless.dcm"))
    assert str(err.value) == (
        "the DICOM pixel data is compressed as JPEG-LS Lossless Image Compression, which this server "
        "cannot decode: send it uncompressed, or as PNG"
    )


def test_truncated_pixel_data() -> None:
    with pytest.raises(ImageDecodeError, match=r"^the DICOM pixel data cannot be decoded: broken, truncated") as err:
        decode_image(bundled("MR_truncated.dcm"))
    assert "\n" not in str(err.value)


def test_truncated_file() -> None:
    data = bundled("CT_small.dcm")
    with pytest.raises(ImageDecodeError, match=r"^the DICOM pixel data cannot be decoded: .*13303 vs 32768 bytes"):
        decode_image(data[: len(data) // 2])  # inside the pixel data
    # cut inside the header, pydicom stops where the bytes end: the pixel data is missing
    with pytest.raises(ImageDecodeError, match=r"^the DICOM file holds no image: it has no pixel data"):
        decode_image(data[:600])


def test_deflate_bomb_is_refused_with_bounded_memory() -> None:
    """8 MB of zeros deflate to a few kB; the inflation stops at the bound for the pixel limit."""
    data = bundled("image_dfl.dcm")
    fp = DicomBytesIO(data)
    read_preamble(fp, False)
    read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, n: tag.group != 2)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"".join(deflater.compress(b"\0" * 2**20) for _ in range(8)) + deflater.flush()
    bomb = data[: fp.tell()] + body
    assert len(bomb) < 20_000
    with pytest.raises(ImageDecodeError, match=r"^the deflated DICOM file expands past 1,088,576 bytes"):
        decode_image(bomb, max_pixels=10_000)  # bound: 4 bytes x 10,000 pixels + 1 MiB


def test_without_preamble_is_not_dicom() -> None:
    """pydicom reads preamble-less files only with force=True (a guess at any bytes): refused."""
    data = bundled("no_meta.dcm")
    assert not is_dicom(data)
    with pytest.raises(ImageDecodeError, match=NOT_AN_IMAGE) as err:
        decode_image(data)
    assert "'DICM' prefix" in str(err.value)


def test_dicom_is_found_by_content_not_name(tmp_path) -> None:
    path = tmp_path / "slice.png"
    path.write_bytes(bundled("CT_small.dcm"))
    _, info = decode_image(path)
    assert info.format == "DICOM"
