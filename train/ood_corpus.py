"""Images that are not axial chest CT slices, built in memory from files that packages ship.

The out-of-distribution check (:mod:`lungdemo.ood`) is measured on this corpus, never fitted
or thresholded on it. Every image is an upload as a user would make it (PNG or JPEG bytes,
or a DICOM file as shipped), of the kinds a public demo gets:

* photographs, grayscale and colour: scikit-image's bundled data images, matplotlib's sample
  photographs (Grace Hopper), faces from scikit-image's LFW subset;
* documents and patterns: a text page, a chessboard, scikit-image's text and logo, synthetic
  blobs, a gradient, noise;
* phantoms and other medical images: the Shepp-Logan phantom, a retina, microscopy, a brain
  MR from matplotlib, and pydicom's bundled test files (head CT, MR, nuclear medicine,
  segmentation, ultrasound, RT dose);
* chest slices of the official test split turned upside down, mirrored top to bottom,
  rotated 90 degrees either way, or with inverted gray values (:data:`lungdemo.ood.TRANSFORMS`).

Nothing is downloaded: scikit-image's fetchers are used only for the files its wheel bundles.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lungdemo.decode import decode_image
from lungdemo.ood import TRANSFORMS

TRANSFORMED_PER_CLASS = 2
"""Test slices per class that are turned and inverted (4 classes x 2 slices x 5 transforms = 40)."""
CORPUS_TRANSFORMS = ("rot90", "rot180", "rot270", "flip_vertical", "invert")


@dataclass(frozen=True)
class CorpusImage:
    """One upload that is not an axial chest CT slice."""

    name: str
    kind: str
    data: bytes


def png(img: Image.Image | np.ndarray) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(to_uint8(img))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8, stretched from its own range (booleans: 0/255)."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi <= lo else np.rint((a - lo) * 255.0 / (hi - lo)).astype(np.uint8)


def gray(img: Image.Image) -> Image.Image:
    return img.convert("L")


# --- scikit-image's bundled images --------------------------------------------------------------


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


def skimage_images() -> list[CorpusImage]:
    """Photographs, textures, microscopy, documents: gray versions (the colour check misses those)."""
    out = []
    gray_names = {
        "photograph": ["astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "horse", "clock"],
        "texture": ["brick", "grass", "gravel"],
        "microscopy": ["cell", "immunohistochemistry", "human_mitosis"],
        "medical-other": ["microaneurysms", "retina"],
        "space": ["hubble_deep_field"],
        "document": ["page", "text"],
        "logo": ["logo", "colorwheel"],
        "phantom": ["shepp_logan_phantom"],
        "pattern": ["checkerboard"],
    }
    for kind, names in gray_names.items():
        for name in names:
            try:
                arr = _skimage(name)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # a fetcher that would download (not bundled); under pytest it raises Skipped
                continue
            img = Image.fromarray(to_uint8(arr))
            out.append(CorpusImage(f"skimage-{name}-gray", kind, png(gray(img))))
    for name in ("astronaut", "coffee", "chelsea"):  # colour uploads as they come
        out.append(CorpusImage(f"skimage-{name}-colour", "photograph", jpeg(Image.fromarray(_skimage(name)))))
    motorcycle = _skimage("stereo_motorcycle")[0]
    out.append(CorpusImage("skimage-motorcycle-gray", "photograph", png(gray(Image.fromarray(motorcycle)))))
    faces = _skimage("lfw_subset")
    for i in (0, 50, 120):
        face = Image.fromarray(to_uint8(faces[i])).resize((200, 200), Image.Resampling.BICUBIC)
        out.append(CorpusImage(f"skimage-lfw-face-{i}", "face", png(face)))
    return out


# --- synthetic images ---------------------------------------------------------------------------


def text_page(size: tuple[int, int] = (600, 800)) -> Image.Image:
    page = Image.new("L", size, 245)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=18)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "radiologist"]
    for line in range(30):
        text = " ".join(words[(line + i) % len(words)] for i in range(8))
        draw.text((40, 30 + line * 25), text, fill=20, font=font)
    return page


def chessboard(squares: int = 8, side: int = 400) -> np.ndarray:
    cell = side // squares
    idx = np.indices((squares * cell, squares * cell)) // cell
    return np.where((idx[0] + idx[1]) % 2 == 0, 230, 25).astype(np.uint8)


def synthetic_images() -> list[CorpusImage]:
    from skimage.data import binary_blobs

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:300j, -1:1:300j]
    disk = np.where(xx**2 + yy**2 < 0.8, 180, 0).astype(np.uint8)
    return [
        CorpusImage("synthetic-text-page", "document", png(text_page())),
        CorpusImage("synthetic-chessboard", "pattern", png(chessboard())),
        CorpusImage("synthetic-blobs", "pattern", png(binary_blobs(length=256, rng=0))),
        CorpusImage("synthetic-gradient", "pattern", png(np.tile(np.linspace(0, 255, 320), (240, 1)))),
        CorpusImage("synthetic-noise", "pattern", png(rng.integers(0, 256, (256, 256), dtype=np.uint8))),
        CorpusImage("synthetic-disk", "phantom", png(disk)),
    ]


# --- matplotlib's sample data -------------------------------------------------------------------


def matplotlib_images() -> list[CorpusImage]:
    from matplotlib import cbook

    out = []
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f)
        hopper.load()
    out.append(CorpusImage("matplotlib-grace-hopper-gray", "face", png(gray(hopper))))
    out.append(CorpusImage("matplotlib-grace-hopper-colour", "face", jpeg(hopper)))
    with cbook.get_sample_data("s1045.ima.gz") as f:  # a 256x256 16-bit brain MR slice
        raw = np.frombuffer(f.read(), dtype="<u2").reshape(256, 256)  # opened decompressed
    out.append(CorpusImage("matplotlib-brain-mr", "mr", png(raw.astype(np.float64))))
    return out


# --- pydicom's bundled test files ---------------------------------------------------------------

DICOM_FILES = {
    "693_J2KI.dcm": "ct-head",
    "J2K_pixelrep_mismatch.dcm": "ct-head",
    "MR_small.dcm": "mr",
    "examples_overlay.dcm": "mr",
    "JPEG2000.dcm": "nuclear-medicine",
    "liver_1frame.dcm": "segmentation",
    "image_dfl.dcm": "dicom-other",
    "rtdose_1frame.dcm": "rt-dose",
    "examples_ybr_color.dcm": "ultrasound",
    "examples_palette.dcm": "ultrasound",
}


def dicom_images() -> list[CorpusImage]:
    from pydicom.data import get_testdata_file

    out = []
    for name, kind in DICOM_FILES.items():
        path = get_testdata_file(name)
        if path is not None:
            out.append(CorpusImage(f"pydicom-{name}", kind, Path(path).read_bytes()))
    with gzip.open(get_testdata_file("zipMR.gz")) as f:
        out.append(CorpusImage("pydicom-zipMR", "mr", f.read()))
    # the same head CT as a PNG screenshot: no DICOM modality to give it away
    head, _ = decode_image(Path(get_testdata_file("693_J2KI.dcm")).read_bytes())
    out.append(CorpusImage("pydicom-head-ct-as-png", "ct-head", png(head)))
    mr, _ = decode_image(Path(get_testdata_file("examples_overlay.dcm")).read_bytes())
    out.append(CorpusImage("pydicom-abdomen-mr-as-png", "mr", png(mr)))
    return out


def package_images() -> list[CorpusImage]:
    """Everything that needs no dataset: scikit-image, synthetic, matplotlib and pydicom images."""
    return skimage_images() + synthetic_images() + matplotlib_images() + dicom_images()


# --- transformed test slices --------------------------------------------------------------------


def transformed_slices(paths: list[Path], transforms: tuple[str, ...] = CORPUS_TRANSFORMS) -> list[CorpusImage]:
    """Each slice decoded as the app decodes it, transformed, and re-encoded as PNG."""
    out = []
    for path in paths:
        img, _ = decode_image(path)
        for name in transforms:
            transform: Callable[[Image.Image], Image.Image] = TRANSFORMS[name]
            out.append(CorpusImage(f"test-slice-{path.stem}-{name}", f"chest-{name}", png(transform(img))))
    return out


def pick_test_slices(data_dir: Path, per_class: int = TRANSFORMED_PER_CLASS) -> list[Path]:
    """``per_class`` test slices of each class, spread over the sorted file list (deterministic)."""
    picked = []
    for class_dir in sorted(p for p in (Path(data_dir) / "test").iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        step = max(1, len(files) // per_class)
        picked.extend(files[step // 2 :: step][:per_class])
    return picked


def build_corpus(data_dir: Path | None = None) -> list[CorpusImage]:
    """The package images, plus transformed test slices when the dataset is at ``data_dir``."""
    corpus = package_images()
    if data_dir is not None and (Path(data_dir) / "test").is_dir():
        corpus += transformed_slices(pick_test_slices(data_dir))
    return corpus


# --- a tiny in-distribution set for unit tests --------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def tiny_slices(n: int, seed: int) -> list[Image.Image]:
    """``n`` gray chest slices: the example slices, slightly turned, zoomed and re-contrasted.

    A stand-in for a training split in unit tests (the real dataset is not needed): varied
    enough that validation slices made with another seed are not copies of training ones.
    """
    rng = np.random.default_rng(seed)
    examples = [Image.open(p).convert("L") for p in sorted(EXAMPLES_DIR.glob("*.png"))]
    out = []
    for i in range(n):
        img = examples[i % len(examples)]
        img = img.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
        w, h = img.size
        m = rng.uniform(0.0, 0.06, 4)
        img = img.crop((int(m[0] * w), int(m[1] * h), int(w - m[2] * w), int(h - m[3] * h)))
        arr = np.asarray(img, dtype=np.float64) * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)
        out.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return out
