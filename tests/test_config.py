"""train.config: the parser made from the config dataclasses, and their JSON round trip."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from lungdemo.loading import SHIPPED_MODEL_DIR
from lungdemo.preprocessing import PreprocessConfig
from train.augment import AugmentConfig
from train.config import AUG, BEFORE_THE_FIELD, TRAINING_ARGS_NAME, TeacherConfig, TrainConfig, cli
from train.data import DEFAULT_CACHE_DIR
from train.teacher import get_args_parser as teacher_parser
from train.train import get_args_parser

REQUIRED = ["--data-dir", "data", "--out", "runs/x"]


def parse(*argv: str) -> TrainConfig:
    return TrainConfig.from_namespace(get_args_parser().parse_args([*REQUIRED, *argv]))


def test_defaults_are_the_dataclass_defaults() -> None:
    assert parse() == TrainConfig(data_dir=Path("data"), out=Path("runs/x"))
    teacher = TeacherConfig.from_namespace(teacher_parser().parse_args(REQUIRED))
    assert teacher == TeacherConfig(data_dir=Path("data"), out=Path("runs/x"))
    assert (teacher.epochs, teacher.lr) == (20, 3e-4)  # the teacher's own defaults
    assert parse().cache_dir == teacher.cache_dir == DEFAULT_CACHE_DIR


def test_preprocessing_flags_default_to_the_preprocess_config() -> None:
    assert parse().preprocess == PreprocessConfig()
    assert parse("--image-size", "64", "--resize", "pad").preprocess == PreprocessConfig(image_size=64, resize="pad")
    searched = parse("--resize", "slice_crop_pad", "--slice-search", "standardized").preprocess
    assert searched == PreprocessConfig(resize="slice_crop_pad", slice_search="standardized")
    with pytest.raises(SystemExit):
        parse("--slice-search", "brighter")


def test_every_augment_field_is_a_flag_named_after_it() -> None:
    """Each field gets a non-default value through ``--field-name`` and lands in that field."""
    argv, expected = [], {}
    for f in fields(AugmentConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            argv.append(flag if not f.default else "--no-" + f.name.replace("_", "-"))
            expected[f.name] = not f.default
        else:
            value = type(f.default)(f.default + 1)
            argv += [flag, str(value)]
            expected[f.name] = value
    assert parse(*argv).augment == AugmentConfig(**expected)


def test_old_flag_names_still_work() -> None:
    assert parse("--rotate", "5").augment.rotate_deg == 5.0
    assert parse("--rotate-deg", "6").augment.rotate_deg == 6.0
    assert parse("--no-hflip").augment.hflip is False


@dataclass(frozen=True)
class MoreAugment(AugmentConfig):
    """An augmentation config with two fields more, as a later augmentation adds them."""

    noise_std: float = 0.0
    vflip: bool = False


@dataclass(frozen=True)
class MoreConfig(TrainConfig):
    augment: MoreAugment = field(default_factory=MoreAugment, metadata=cli(group=AUG))


@dataclass(frozen=True)
class OddConfig(TrainConfig):
    sizes: tuple[int, ...] = field(default=(1, 2), metadata=cli())


def test_a_field_added_to_the_augment_config_becomes_a_flag() -> None:
    parser = MoreConfig.add_arguments(argparse.ArgumentParser())
    cfg = MoreConfig.from_namespace(parser.parse_args([*REQUIRED, "--noise-std", "0.1", "--vflip", "--rotate", "3"]))
    assert cfg.augment == MoreAugment(rotate_deg=3.0, noise_std=0.1, vflip=True)
    assert MoreConfig.from_json(cfg.to_json()) == cfg


def test_json_round_trip_keeps_the_types() -> None:
    cfg = parse("--teacher", "runs/teacher", "--mixup", "0.2", "--push-to-hub", "user/repo", "--no-calibrate")
    data = json.loads(json.dumps(cfg.to_json()))  # through real JSON text
    assert data["teacher"] == ["runs/teacher"] and data["rotate_deg"] == 10.0 and "augment" not in data
    back = TrainConfig.from_json(data)
    assert back == cfg
    assert isinstance(back.data_dir, Path) and isinstance(back.out, Path) and isinstance(back.cache_dir, Path)
    assert back.teacher == (Path("runs/teacher"),)
    assert TrainConfig.from_json(parse().to_json()).teacher == ()


def test_several_teachers_are_one_flag_and_round_trip() -> None:
    cfg = parse("--teacher", "runs/t2", "runs/t3")
    assert cfg.teacher == (Path("runs/t2"), Path("runs/t3"))
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    # a record written when --teacher took one folder reads back as that one teacher
    assert TrainConfig.from_json({**cfg.to_json(), "teacher": "runs/t2"}).teacher == (Path("runs/t2"),)


OLD_RECORD = Path(__file__).parent / "data" / "kd1_training_args.json"
"""``training_args.json`` of the model shipped before v2, written before the config existed."""


def test_the_shipped_training_args_read_back_exactly() -> None:
    record = json.loads((SHIPPED_MODEL_DIR / TRAINING_ARGS_NAME).read_text())
    cfg = TrainConfig.from_json(record["args"])
    written = cfg.to_json()
    # one teacher is written as a list of one since --teacher takes several
    as_now = {
        **record["args"],
        "teacher": [record["args"]["teacher"]]
        if isinstance(record["args"].get("teacher"), str)
        else record["args"].get("teacher"),
    }
    assert {key: written[key] for key in record["args"]} == as_now
    assert set(written) - set(record["args"]) <= set(BEFORE_THE_FIELD)  # fields added since, as they were meant
    assert cfg.augment == AugmentConfig(**record["augmentation"])


def test_an_old_record_reads_back() -> None:
    """kd1's ``args`` (written before the config existed, ``rotate`` and all) load as a config."""
    record = json.loads(OLD_RECORD.read_text())
    stored = record["args"]
    cfg = TrainConfig.from_json(stored)
    assert cfg.teacher == (Path(stored["teacher"]),) and cfg.data_dir == Path(stored["data_dir"])
    assert cfg.augment == AugmentConfig(**record["augmentation"])
    assert cfg.augment.rotate_deg == stored["rotate"]
    assert (cfg.hidden, cfg.epochs, cfg.distill_alpha, cfg.patience) == (
        stored["hidden"],
        stored["epochs"],
        stored["distill_alpha"],
        stored["patience"],
    )
    assert cfg.device == "cpu"  # recorded before --device existed: it ran on the CPU
    added_later = {k: v for k, v in AugmentConfig().to_dict().items() if k not in stored and k != "rotate_deg"}
    switches = ("window", "downscale_prob", "noise", "jpeg_prob")  # augmentations added since: off by default
    assert set(switches) <= added_later.keys() and not any(added_later[k] for k in switches)
    assert cfg.to_json() == {
        "device": "cpu",  # fields added later, with what their absence means
        "slice_fill": False,
        "slice_deskew": 0.0,
        "slice_deskew_keep": 0.0,
        "slice_search": "levels",  # the body searched in the gray levels as uploaded
        "distill_view": "same",  # the teacher saw the student's batch
        "intensity": "none",  # gray levels as decoded
        "precision": "auto",
        "ood_check": True,
        **added_later,
        **{k: v for k, v in stored.items() if k != "rotate"},
        "rotate_deg": stored["rotate"],
        "teacher": [stored["teacher"]],  # --teacher takes several folders now
    }


def test_json_numbers_become_the_field_type_and_wrong_types_are_named() -> None:
    base = parse().to_json()
    assert TrainConfig.from_json({**base, "lr": 1}).lr == 1.0 and isinstance(
        TrainConfig.from_json({**base, "lr": 1}).lr, float
    )
    with pytest.raises(ValueError, match="training argument 'epochs': expected int, got '30'"):
        TrainConfig.from_json({**base, "epochs": "30"})
    with pytest.raises(ValueError, match="training argument 'freeze_features': expected bool, got 1"):
        TrainConfig.from_json({**base, "freeze_features": 1})


def test_unknown_stored_arguments_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = TrainConfig.from_json({**parse().to_json(), "removed_flag": 3})
    assert cfg == parse()
    assert "ignoring arguments this version does not know: removed_flag" in caplog.text


def test_a_field_type_without_a_command_line_form_is_refused() -> None:
    with pytest.raises(TypeError, match="config field 'sizes': no command-line form"):
        OddConfig.add_arguments(argparse.ArgumentParser())
