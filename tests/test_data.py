"""train.data: folder-name mapping, dataset scanning errors, decoded-image cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train.data as data_mod
from lungdemo.preprocessing import PreprocessConfig
from train.data import CLASS_NAMES, DatasetError, canonical_class, labels_of, load_images, scan_dataset, scan_split

LONG_NAMES = {
    "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": "adenocarcinoma",
    "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa": "large_cell_carcinoma",
    "normal": "normal",
    "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa": "squamous_cell_carcinoma",
}
SHORT_NAMES = {
    "adenocarcinoma": "adenocarcinoma",
    "large.cell.carcinoma": "large_cell_carcinoma",
    "normal": "normal",
    "squamous.cell.carcinoma": "squamous_cell_carcinoma",
}


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(path, "PNG")
    return path


def make_split(root: Path, split: str, names: dict[str, str], per_class: int = 2) -> None:
    for i, folder in enumerate(names):
        for j in range(per_class):
            write_png(root / split / folder / f"img{j}.png", seed=100 * i + j)


# --- folder-name mapping ------------------------------------------------------------------


def test_class_order_is_fixed() -> None:
    assert CLASS_NAMES == ("adenocarcinoma", "large_cell_carcinoma", "normal", "squamous_cell_carcinoma")


@pytest.mark.parametrize(("folder", "expected"), sorted({**LONG_NAMES, **SHORT_NAMES}.items()))
def test_dataset_folder_names(folder: str, expected: str) -> None:
    assert canonical_class(folder) == expected


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("large_cell_carcinoma", "large_cell_carcinoma"),  # underscores instead of dots
        ("squamous_cell_carcinoma_left_hilum_T1_N2_M0_IIIa", "squamous_cell_carcinoma"),
        ("Large.Cell.Carcinoma", "large_cell_carcinoma"),  # case
        ("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib ", "adenocarcinoma"),  # stray space
        ("NORMAL", "normal"),
    ],
)
def test_name_variants(folder: str, expected: str) -> None:
    assert canonical_class(folder) == expected


@pytest.mark.parametrize("folder", ["benign", "adenocarcinomas", "large.cell", "squamous", "normal2", ""])
def test_unknown_folder_is_named_in_the_error(folder: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"unknown class folder '{folder}'")):
        canonical_class(folder)


@pytest.mark.integration
def test_real_dataset_folders_map_to_all_four_classes(data_dir: Path) -> None:
    for split in ("train", "valid", "test"):
        folders = sorted(p.name for p in (data_dir / split).iterdir() if p.is_dir())
        expected = LONG_NAMES if split != "test" else SHORT_NAMES
        assert folders == sorted(expected), split
        assert sorted(canonical_class(f) for f in folders) == list(CLASS_NAMES)


# --- scanning -----------------------------------------------------------------------------


def test_scan_fake_dataset(tmp_path: Path) -> None:
    make_split(tmp_path, "train", LONG_NAMES, per_class=2)
    make_split(tmp_path, "valid", LONG_NAMES, per_class=1)
    make_split(tmp_path, "test", SHORT_NAMES, per_class=3)
    (tmp_path / "test" / "normal" / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    splits = scan_dataset(tmp_path)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [8, 4, 12]
    test = splits["test"]
    assert [s.class_name for s in test] == [c for c in CLASS_NAMES for _ in range(3)]
    assert labels_of(test).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(s.split == "test" for s in test)
    assert test == sorted(test, key=lambda s: s.path)


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"data folder not found: {tmp_path / 'nope'}")):
        scan_dataset(tmp_path / "nope")


def test_missing_split(tmp_path: Path) -> None:
    make_split(tmp_path, "train", LONG_NAMES)
    make_split(tmp_path, "test", SHORT_NAMES)
    with pytest.raises(DatasetError, match=re.escape(f"split folder missing: {tmp_path / 'valid'}")):
        scan_dataset(tmp_path)


def test_empty_split_folder(tmp_path: Path) -> None:
    (tmp_path / "valid").mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"split folder has no class folders: {tmp_path / 'valid'}")):
        scan_split(tmp_path, "valid")


def test_empty_class_folder(tmp_path: Path) -> None:
    make_split(tmp_path, "test", SHORT_NAMES)
    empty = tmp_path / "test" / "normal"
    for f in empty.iterdir():
        f.unlink()
    (empty / ".DS_Store").write_bytes(b"hidden files do not count")
    with pytest.raises(DatasetError, match=re.escape(f"class folder is empty: {empty}")):
        scan_split(tmp_path, "test")


def test_unknown_class_folder_in_split(tmp_path: Path) -> None:
    make_split(tmp_path, "test", SHORT_NAMES)
    write_png(tmp_path / "test" / "benign" / "b.png", seed=1)
    with pytest.raises(DatasetError, match="unknown class folder 'benign'"):
        scan_split(tmp_path, "test")


def test_two_folders_for_one_class(tmp_path: Path) -> None:
    make_split(tmp_path, "train", LONG_NAMES)
    write_png(tmp_path / "train" / "large_cell_carcinoma" / "x.png", seed=9)
    with pytest.raises(DatasetError, match="two folders map to class 'large_cell_carcinoma'") as err:
        scan_split(tmp_path, "train")
    assert "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa" in str(err.value)
    assert "large_cell_carcinoma" in str(err.value)


# --- decoded-image cache ------------------------------------------------------------------


@pytest.fixture
def small_split(tmp_path: Path) -> list:
    make_split(tmp_path / "data", "test", SHORT_NAMES, per_class=2)
    # one JPEG named .png, one RGBA: the cache holds what preprocessing made of them
    Image.new("RGB", (30, 50), (90, 120, 150)).save(tmp_path / "data/test/normal/img1.png", "JPEG")
    rgba = Image.new("RGBA", (30, 30), (200, 200, 200, 255))
    rgba.putpixel((0, 0), (255, 255, 255, 0))
    rgba.save(tmp_path / "data/test/adenocarcinoma/img1.png")
    return scan_split(tmp_path / "data", "test")


def test_load_images_shape_and_values(small_split: list) -> None:
    cfg = PreprocessConfig(image_size=32)
    images = load_images(small_split, cfg)
    assert images.shape == (8, 1, 32, 32) and images.dtype == torch.uint8
    # test/normal/img1.png: a flat 30x50 JPEG of luma 0.299*90 + 0.587*120 + 0.114*150 = 114.45,
    # padded to 50x50 with black columns 0..9 and 40..49, i.e. 0..6.4 and 25.6..32 of 32
    assert small_split[5].path.name == "img1.png" and small_split[5].class_name == "normal"
    normal_jpeg = images[5, 0].int()
    assert (normal_jpeg[:, 8:24] - 114).abs().max() <= 2
    assert (normal_jpeg[:, :6] == 0).all() and (normal_jpeg[:, 27:] == 0).all()


def test_load_images_second_call_reads_the_disk_cache(
    small_split: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PreprocessConfig(image_size=32)
    cache = tmp_path / "cache"
    first = load_images(small_split, cfg, cache_dir=cache)
    files = list(cache.glob("images-*.safetensors"))
    assert len(files) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds the images")

    monkeypatch.setattr(data_mod, "canonical_tensor", no_decoding)
    second = load_images(small_split, cfg, cache_dir=cache)
    assert torch.equal(first, second)
    assert first.dtype == second.dtype == torch.uint8

    # another preprocessing config is another cache entry: it must decode again
    with pytest.raises(AssertionError, match="decoded although"):
        load_images(small_split, PreprocessConfig(image_size=40), cache_dir=cache)
    # and so is a framing code that may frame the files differently
    monkeypatch.setattr(data_mod, "FRAMING_REVISION", data_mod.FRAMING_REVISION + 1)
    with pytest.raises(AssertionError, match="decoded although"):
        load_images(small_split, cfg, cache_dir=cache)


def test_load_images_cache_is_invalidated_by_a_changed_file(small_split: list, tmp_path: Path) -> None:
    cfg = PreprocessConfig(image_size=32)
    cache = tmp_path / "cache"
    before = load_images(small_split, cfg, cache_dir=cache)
    write_png(small_split[0].path, seed=12345, size=(41, 33))  # new content, new size
    after = load_images(small_split, cfg, cache_dir=cache)
    assert len(list(cache.glob("images-*.safetensors"))) == 2
    assert not torch.equal(before[0], after[0])
    assert torch.equal(before[1:], after[1:])
    assert torch.equal(after, load_images(small_split, cfg))  # same as without any cache


def test_load_images_unreadable_cache_is_rebuilt(small_split: list, tmp_path: Path) -> None:
    cfg = PreprocessConfig(image_size=32)
    cache = tmp_path / "cache"
    good = load_images(small_split, cfg, cache_dir=cache)
    (cache_file,) = cache.glob("images-*.safetensors")
    cache_file.write_bytes(b"not safetensors")
    assert torch.equal(load_images(small_split, cfg, cache_dir=cache), good)


def test_failed_cache_write_leaves_no_file(small_split: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while caching: no half-written entry that the next run would read."""
    cache = tmp_path / "cache"

    def half_then_full(tensors, filename, *args, **kwargs) -> None:
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_mod, "save_file", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        load_images(small_split, PreprocessConfig(image_size=32), cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_corrupt_image_names_the_path(small_split: list, tmp_path: Path) -> None:
    bad = small_split[3].path
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=re.escape(f"cannot decode {bad}: the image data is broken or truncated")):
        load_images(small_split, PreprocessConfig(image_size=32), cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-written is cached


def test_text_file_in_class_folder_names_the_path(small_split: list) -> None:
    bad = small_split[6].path
    bad.write_text("not an image")
    with pytest.raises(DatasetError, match=re.escape(f"cannot decode {bad}: not an image file")):
        load_images(small_split, PreprocessConfig(image_size=32))
