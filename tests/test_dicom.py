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
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.sequence import Sequence

import lungdemo.dicom as dicom_mod
from lungdemo.decode import WARNING_PREFIX, ImageDecodeError, colourfulness, decode_image, is_dicom
from lungdemo.dicom import LUNG_WINDOW, TRAINED_ON_PNG_NOTE, window
from tests.conftest import make_model

NOT_AN_IMAGE = (
    "not an image file PIL can read (PNG, JPEG, TIFF, BMP, GIF, ...) nor a DICOM file "
    "(DICOM needs its 128-byte preamble and 'DICM' prefix)"
)
NOT_CT_OT = f"{WARNING_PREFIX}this DICOM file is not a CT image (modality OT); the model knows chest CT only"


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
    assert info.notes == [
        "DICOM file (modality CT, 128x128, Explicit VR Little Endian)",
        "rescaled to Hounsfield units (slope 1, intercept -1024), shown in a lung window (center -600, width 1500 HU)",
        TRAINED_ON_PNG_NOTE,
    ]
    assert "PNG renderings" in TRAINED_ON_PNG_NOTE


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
    assert info.notes[1] == (
        "rescaled to Hounsfield units (slope 2, intercept -2048), shown in a lung window (center -600, width 1500 HU)"
    )


def test_monochrome1_is_inverted() -> None:
    plain, _ = decode_image(bundled("CT_small.dcm"))
    ds = read("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted, info = decode_image(to_bytes(ds))
    assert np.array_equal(np.asarray(inverted), 255 - np.asarray(plain))
    assert info.mode == "MONOCHROME1"
    assert "MONOCHROME1 (low values shown white): inverted as a viewer shows it" in info.notes


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
    colour = colourfulness(Image.fromarray(read("SC_rgb_small_odd.dcm").pixel_array))
    assert info.warnings == [
        f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured (colourfulness "
        f"{colour:.0f}, CT slices are gray); the model only knows chest CT, so its answer means little here",
        NOT_CT_OT,
    ]
    assert "colour DICOM (RGB) converted to 8-bit grayscale" in info.notes


def test_deflated_dicom_is_read() -> None:
    ds = read("image_dfl.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    gray, info = decode_image(bundled("image_dfl.dcm"))
    arr = ds.pixel_array.astype(np.float64)
    expected = np.rint((arr - arr.min()) * (255.0 / (arr.max() - arr.min()))).astype(np.uint8)
    assert np.array_equal(np.asarray(gray), expected)
    assert info.notes[1] == "DICOM file (modality OT, 512x512, Deflated Explicit VR Little Endian)"


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
    with pytest.raises(ImageDecodeError) as err:
        decode_image(to_bytes(ds))
    assert str(err.value) == "the DICOM file holds no image: it has no pixel data (it is a CT Image Storage)"


def test_structured_report_holds_no_image() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bundled("reportsi.dcm"))
    assert str(err.value) == "the DICOM file holds no image: it has no pixel data (it is a Basic Text SR Storage)"


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
    with pytest.raises(ImageDecodeError) as err:
        decode_image(to_bytes(ds))
    assert str(err.value) == "DICOM image is 128x128 x 5000 frames = 81,920,000 pixels; the limit is 40,000,000"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bundled("CT_small.dcm"), max_pixels=10_000)
    assert str(err.value) == "DICOM image is 128x128 = 16,384 pixels; the limit is 10,000"


def no_decoder(compression: str) -> str:
    return (
        f"the DICOM pixel data is compressed as {compression}, which this server cannot decode: "
        "send it uncompressed, or as PNG"
    )


def relabelled(name: str, syntax: pydicom.uid.UID) -> bytes:
    """A bundled file whose pixel data is declared in another transfer syntax (bytes unchanged)."""
    ds = read(name)
    ds.file_meta.TransferSyntaxUID = syntax
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("name", "relabel", "compression"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", None, "JPEG-LS Lossless Image Compression"),
        (
            "SC_rgb_jpeg_gdcm.dcm",  # lossless JPEG, Process 14 SV1
            None,
            "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        ),
        ("SC_rgb_jpeg_gdcm.dcm", pydicom.uid.JPEGLossless, "JPEG Lossless, Non-Hierarchical (Process 14)"),
        ("JPGExtended.dcm", None, "JPEG Extended (Process 2 and 4) with 12-bit samples"),
        ("JPEG-lossy.dcm", None, "JPEG Extended (Process 2 and 4) with 12-bit samples"),
    ],
    ids=["jpeg-ls", "lossless-jpeg-sv1", "lossless-jpeg", "12-bit-jpeg", "12-bit-jpeg-nm"],
)
def test_compressed_without_a_decoder_is_refused_before_decoding(
    name: str, relabel: pydicom.uid.UID | None, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bundled(name) if relabel is None else relabelled(name, relabel)
    monkeypatch.setattr(dicom_mod, "pixel_array", lambda *a, **k: pytest.fail("pixel data was decoded"))
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data)
    assert str(err.value) == no_decoder(compression)


# --- compressed pixel data that decodes -----------------------------------------------------------

# SC_rgb*.dcm hold pydicom's 100x100 test pattern: ten 10-row bands of these colours
SC_RGB_BANDS = [
    (255, 0, 0), (255, 128, 128), (0, 255, 0), (128, 255, 128), (0, 0, 255),
    (128, 128, 255), (0, 0, 0), (64, 64, 64), (192, 192, 192), (255, 255, 255),
]  # fmt: skip


def luma(rgb: tuple[int, int, int]) -> int:
    """ITU-R 601-2 luma as PIL computes it: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16."""
    r, g, b = rgb
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def band_grays(gray: Image.Image) -> np.ndarray:
    arr = np.asarray(gray).astype(int)
    assert arr.shape == (100, 100)
    return arr.reshape(10, 10, 100)  # band, row in band, column


@pytest.mark.parametrize(
    ("name", "syntax", "photometric", "tolerance"),
    [
        ("SC_rgb_rle.dcm", "RLE Lossless", "RGB", 0),
        ("SC_rgb_rle_16bit.dcm", "RLE Lossless", "RGB", 0),
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)", "YBR_FULL", 3),  # lossy
        ("SC_rgb_dcmtk_+eb+cr.dcm", "JPEG Baseline (Process 1)", "RGB", 3),
    ],
)
def test_rle_and_baseline_jpeg_colour_decode_to_the_pattern(
    name: str, syntax: str, photometric: str, tolerance: int
) -> None:
    gray, info = decode_image(bundled(name))
    bands = band_grays(gray)
    for band, colour in enumerate(SC_RGB_BANDS):
        assert np.abs(bands[band] - luma(colour)).max() <= tolerance, (band, colour)
    assert info.notes[1:] == [
        NOT_CT_OT,
        f"DICOM file (modality OT, 100x100, {syntax})",
        f"colour DICOM ({photometric}) converted to 8-bit grayscale",
        TRAINED_ON_PNG_NOTE,
    ]
    assert info.notes[0].startswith(f"{WARNING_PREFIX}this does not look like a CT slice: it is strongly coloured")


def test_8_bit_jpeg_extended_decodes() -> None:
    """Only 12-bit JPEG Extended is refused: 8-bit samples under that syntax decode like baseline."""
    baseline, _ = decode_image(bundled("SC_rgb_jpeg_dcmtk.dcm"))
    extended, info = decode_image(relabelled("SC_rgb_jpeg_dcmtk.dcm", pydicom.uid.JPEGExtended12Bit))
    assert np.array_equal(np.asarray(extended), np.asarray(baseline))
    assert "DICOM file (modality OT, 100x100, JPEG Extended (Process 2 and 4))" in info.notes


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("MR_small_RLE.dcm", "RLE Lossless"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
    ],
)
def test_lossless_grayscale_equals_the_uncompressed_file(name: str, syntax: str) -> None:
    """16-bit MR: RLE and lossless JPEG 2000 give exactly the slice of the uncompressed MR_small.dcm."""
    plain, plain_info = decode_image(bundled("MR_small.dcm"))
    gray, info = decode_image(bundled(name))
    assert np.array_equal(np.asarray(gray), np.asarray(plain))
    assert np.asarray(gray).std() > 20  # a real picture, not two blank ones
    assert info.notes == [n.replace("Explicit VR Little Endian", syntax) for n in plain_info.notes]


CANNOT_DECODE = "the DICOM pixel data cannot be decoded: broken, truncated or in a form this server does not support"


def short_pixel_data(found: int, expected: int) -> str:
    """pydicom 3.0's words for too few pixel bytes, as the message quotes them on one line."""
    return (
        f"{CANNOT_DECODE} (The number of bytes of pixel data is less than expected ({found} vs {expected} bytes) "
        "- the dataset may be corrupted, have an invalid group 0028 element value, or the transfer syntax may be "
        "incorrect)"
    )


def test_truncated_pixel_data() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bundled("MR_truncated.dcm"))
    assert str(err.value) == short_pixel_data(8130, 8192)


def test_truncated_file() -> None:
    data = bundled("CT_small.dcm")
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data[: len(data) // 2])  # inside the pixel data
    assert str(err.value) == short_pixel_data(13303, 32768)
    # cut inside the header, pydicom stops where the bytes end: the pixel data is missing
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data[:600])
    assert str(err.value) == "the DICOM file holds no image: it has no pixel data (it is a CT Image Storage)"


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
    with pytest.raises(ImageDecodeError) as err:
        decode_image(bomb, max_pixels=10_000)  # bound: 4 bytes x 10,000 pixels + 1 MiB
    assert str(err.value) == (
        "the deflated DICOM file expands past 1,088,576 bytes, more than an image within the pixel limit needs"
    )


def test_without_preamble_is_not_dicom() -> None:
    """pydicom reads preamble-less files only with force=True (a guess at any bytes): refused."""
    data = bundled("no_meta.dcm")
    assert not is_dicom(data)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(data)
    assert str(err.value) == NOT_AN_IMAGE


def test_dicom_is_found_by_content_not_name(tmp_path) -> None:
    path = tmp_path / "slice.png"
    path.write_bytes(bundled("CT_small.dcm"))
    _, info = decode_image(path)
    assert info.format == "DICOM"
