"""lungdemo.model (and train.pretrained): head sizes, config, ImageNet weights, strict safetensors
loading with one diagnosis of what does not fit. Random weights, tmp_path, no network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from lungdemo.model import LungAlexNet, ModelFormatError, WeightsMismatchError, build_head
from lungdemo.preprocessing import PreprocessConfig
from tests.conftest import TEST_CLASSES, make_model
from train.pretrained import IMAGENET, PretrainedError, apply_pretrained, imagenet_cache_path

# torchvision AlexNet features: conv weights + biases
#   3*64*11*11 + 64 = 23,296;  64*192*5*5 + 192 = 307,392;  192*384*3*3 + 384 = 663,936
#   384*256*3*3 + 256 = 884,992;  256*256*3*3 + 256 = 590,080   -> 2,469,696
FEATURE_PARAMS = 2_469_696


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- architecture ---------------------------------------------------------------------------


def test_head_hidden_zero_is_one_linear_layer() -> None:
    head = build_head(9216, 0, 4, 0.5)
    assert [type(m).__name__ for m in head] == ["Dropout", "Linear"]
    assert n_params(head) == 9216 * 4 + 4  # 36,868


def test_head_layout_follows_torchvision() -> None:
    head = build_head(9216, 32, 4, 0.3)
    assert [type(m).__name__ for m in head] == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert head[0].p == head[3].p == 0.3
    assert (head[1].in_features, head[1].out_features) == (9216, 32)
    assert (head[4].in_features, head[4].out_features) == (32, 32)
    assert (head[6].in_features, head[6].out_features) == (32, 4)
    # 9216*32 + 32 + 32*32 + 32 + 32*4 + 4 = 294,944 + 1,056 + 132
    assert n_params(head) == 296_132


def test_parameter_counts_of_the_model() -> None:
    small = LungAlexNet(class_names=list(TEST_CLASSES), hidden=32)
    assert n_params(small.features) == FEATURE_PARAMS
    assert n_params(small) == FEATURE_PARAMS + 296_132
    assert small.num_classes == 4
    classic = LungAlexNet(class_names=list(TEST_CLASSES), hidden=4096)
    # 9216*4096 + 4096 = 37,752,832; 4096*4096 + 4096 = 16,781,312; 4096*4 + 4 = 16,388
    assert n_params(classic.classifier) == 54_550_532
    assert n_params(classic) == 57_020_228
    # torchvision's AlexNet (61,100,840), less its 1000-class layer, plus a 4-class one
    assert IMAGENET.meta["num_params"] == 61_100_840
    assert n_params(classic) == 61_100_840 - (4096 * 1000 + 1000) + (4096 * 4 + 4)


@pytest.mark.parametrize("size", [64, 96])
def test_forward_shape(size: int) -> None:
    model = make_model(hidden=0, image_size=size)
    with torch.inference_mode():
        out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, 4)


def test_test_time_flip_averages_the_slice_and_its_mirror_in_eval_mode_only() -> None:
    model = make_model(seed=3, hidden=16, image_size=64, test_time_flip=True)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        single, mirrored = model.logits(x), model.logits(x.flip(-1))
        averaged = model(x)
        torch.testing.assert_close(averaged, (single + mirrored) / 2, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(averaged, single, rtol=0, atol=1e-5)  # the mirror view does count
        torch.testing.assert_close(model(x.flip(-1)), averaged, rtol=1e-5, atol=1e-5)  # mirror-invariant
        plain = make_model(seed=3, hidden=16, image_size=64)
        torch.testing.assert_close(plain(x), single)  # same weights without the option: one view
    model.train()  # training sees exactly the batch it is given
    torch.manual_seed(0)
    trained = model(x)
    torch.manual_seed(0)
    torch.testing.assert_close(trained, model.logits(x))
    assert LungAlexNet.from_config(model.config_dict()).test_time_flip is True


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"class_names": ["only"]}, "at least 2 distinct"),
        ({"class_names": ["a", "a"]}, "at least 2 distinct"),
        ({"hidden": -1}, "hidden must be"),
        ({"architecture": "resnet18"}, "unknown architecture 'resnet18'"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
        ({"preprocessing": {"image_size": 64, "bogus": 1}}, r"unknown keys \['bogus'\]"),
        ({"temperature": 0}, "temperature"),
        ({"test_time_flip": "yes"}, "test_time_flip must be true or false, got 'yes'"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, words: str) -> None:
    args = {"class_names": list(TEST_CLASSES), "hidden": 0, **kwargs}
    with pytest.raises(ModelFormatError, match=words):
        LungAlexNet(**args)


# --- ImageNet starting weights ------------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A torchvision AlexNet state dict (random, seeded) saved as .safetensors and .pth."""
    torch.manual_seed(1234)
    state = {k: v.contiguous() for k, v in torchvision.models.alexnet(weights=None).state_dict().items()}
    folder = tmp_path_factory.mktemp("imagenet")
    save_file(state, str(folder / "alexnet.safetensors"))
    torch.save(state, folder / "alexnet-owt-7be5be79.pth")
    return {"state": state, "safetensors": folder / "alexnet.safetensors", "pth": folder / "alexnet-owt-7be5be79.pth"}


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_local_imagenet_state_dict_loads_into_features(imagenet_like: dict, kind: str) -> None:
    model = make_model(seed=0, hidden=32)
    head_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    record = apply_pretrained(model, str(imagenet_like[kind]))
    assert record == {"pretrained": str(imagenet_like[kind]), "tensors": 10}  # 5 convs, weight + bias
    own = model.state_dict()
    for key, value in imagenet_like["state"].items():
        if key.startswith("features."):
            assert torch.equal(own[key], value), key
    # a 32-wide head matches none of ImageNet's classifier shapes: left as initialised
    for key, value in model.classifier.state_dict().items():
        assert torch.equal(value, head_before[key]), key


def test_classic_head_also_takes_the_two_hidden_imagenet_layers(imagenet_like: dict) -> None:
    model = LungAlexNet(class_names=list(TEST_CLASSES), hidden=4096)
    record = apply_pretrained(model, str(imagenet_like["safetensors"]))
    assert record["tensors"] == 14  # + classifier.1 and classifier.4, weight and bias
    own = model.state_dict()
    for key in ("classifier.1.weight", "classifier.4.bias"):
        assert torch.equal(own[key], imagenet_like["state"][key])
    assert own["classifier.6.weight"].shape == (4, 4096)  # the 1000-class layer never loads


def test_pretrained_none_changes_nothing() -> None:
    model = make_model(seed=3, hidden=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_pretrained(model, "none") == {"pretrained": "none"}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_pretrained_file_missing(tmp_path: Path) -> None:
    with pytest.raises(PretrainedError, match=re.escape(f"--pretrained file not found: {tmp_path / 'x.pth'}")):
        apply_pretrained(make_model(hidden=0), str(tmp_path / "x.pth"))


def test_pretrained_file_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"definitely not a torch file")
    with pytest.raises(PretrainedError, match=re.escape(f"cannot read {path} as an AlexNet state dict")):
        apply_pretrained(make_model(hidden=0), str(path))


def test_pretrained_file_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    with pytest.raises(PretrainedError, match=re.escape(str(path))) as err:
        apply_pretrained(make_model(hidden=0), str(path))
    assert "not an AlexNet ImageNet state dict" in str(err.value)


def test_imagenet_offline_fails_fast_with_how_to_supply_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected_cache = tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert imagenet_cache_path() == expected_cache
    with pytest.raises(PretrainedError) as err:
        apply_pretrained(make_model(hidden=0), "imagenet")
    msg = str(err.value)
    assert "cannot be reached" in msg
    assert IMAGENET.url in msg  # what to download
    assert str(expected_cache) in msg  # where to put it
    assert "--pretrained /path/to/alexnet-owt-7be5be79.pth" in msg  # or pass it
    assert "--pretrained none" in msg
    assert not expected_cache.exists()


def test_imagenet_from_the_torch_cache_as_the_message_says(
    imagenet_like: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # follow the advice of the offline message: copy the file to the cache path
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cache = imagenet_cache_path()
    cache.parent.mkdir(parents=True)
    cache.symlink_to(imagenet_like["pth"])
    model = make_model(hidden=32)
    record = apply_pretrained(model, "imagenet")
    assert record == {"pretrained": "imagenet", "weights": "AlexNet_Weights.IMAGENET1K_V1", "tensors": 10}
    assert torch.equal(model.state_dict()["features.0.weight"], imagenet_like["state"]["features.0.weight"])


# --- config: what config.json holds ------------------------------------------------------------


def test_config_rebuilds_the_same_model() -> None:
    model = make_model(seed=5, hidden=32, image_size=64, weights_dtype="float16")
    model.set_temperature(1.7)
    config = model.config_dict()
    assert config == {
        "architecture": "alexnet",
        "class_names": list(TEST_CLASSES),
        "dropout": 0.5,
        "hidden": 32,
        "preprocessing": PreprocessConfig(image_size=64).to_dict(),
        "temperature": 1.7,
        "test_time_flip": False,
        "weights_dtype": "float16",
    }
    assert sorted(config) == sorted(LungAlexNet.config_keys()), "every __init__ argument is stored"
    rebuilt = LungAlexNet.from_config(json.loads(json.dumps(config)))
    assert rebuilt.config_dict() == config
    assert rebuilt.preprocess_config == model.preprocess_config


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"class_names": list(TEST_CLASSES), "num_layers": 8}, "unknown keys ['num_layers']"),
        ({"hidden": 32}, "no 'class_names': not a lungdemo config"),
        (["not", "a", "dict"], "a model config must be a JSON object, got list"),
    ],
)
def test_from_config_refuses_what_it_cannot_build(config: object, words: str) -> None:
    with pytest.raises(ModelFormatError, match=re.escape(words)):
        LungAlexNet.from_config(config)  # type: ignore[arg-type]


# --- weights: safetensors only, strict ---------------------------------------------------------


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    make_model(seed=7, hidden=32, image_size=64).save_weights(path)
    return path


def test_weights_round_trip(weights: Path) -> None:
    model = make_model(seed=7, hidden=32, image_size=64)
    other = make_model(seed=8, hidden=32, image_size=64)
    other.load_weights_file(weights)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key


def test_float16_storage(tmp_path: Path) -> None:
    model = make_model(seed=6, hidden=32, image_size=64)
    half = make_model(seed=6, hidden=32, image_size=64, weights_dtype="float16")
    model.save_weights(tmp_path / "f32.safetensors")
    half.save_weights(tmp_path / "f16.safetensors")
    stored = load_file(str(tmp_path / "f16.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    size32, size16 = ((tmp_path / f"{n}.safetensors").stat().st_size for n in ("f32", "f16"))
    assert 0.45 < size16 / size32 < 0.55

    loaded = make_model(seed=0, hidden=32, image_size=64, weights_dtype="float16")
    loaded.load_weights_file(tmp_path / "f16.safetensors")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}  # computes in float32
    x = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, out = model(x), loaded.eval()(x)
    assert not torch.equal(ref, out)  # the weights really were rounded
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=2e-3)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def _mismatch(weights: Path, **config) -> list[str]:
    """The problems ``load_weights_file`` reports for ``weights`` under a changed config."""
    model = LungAlexNet(**{**make_model(hidden=32, image_size=64).config_dict(), **config})
    with pytest.raises(WeightsMismatchError) as err:
        model.load_weights_file(weights)
    assert str(weights) in str(err.value)
    return err.value.problems


def test_wrong_class_count_in_plain_words_then_shapes(weights: Path) -> None:
    problems = _mismatch(weights, class_names=TEST_CLASSES[:3])
    assert problems == [
        f"the config lists 3 classes {TEST_CLASSES[:3]} but the weights' output layer (classifier.6.weight) "
        "has 4 outputs",
        "shape mismatch: classifier.6.weight: file (4, 32) vs config (3, 32); "
        "classifier.6.bias: file (4,) vs config (3,)",
    ]


def test_wrong_head_width(weights: Path) -> None:
    problems = _mismatch(weights, hidden=64)
    assert problems[0] == "the config says hidden=64 but the weights have a head of width 32"
    assert problems[1].startswith("shape mismatch: classifier.1.weight: file (32, 9216) vs config (64, 9216)")


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet.safetensors"
    torch.manual_seed(0)
    save_file(
        {"conv1.weight": torch.randn(8, 3, 7, 7), "fc.bias": torch.zeros(4), "fc.weight": torch.randn(4, 8)}, str(path)
    )
    problems = _mismatch(path)
    assert problems[0] == (
        "the weights are not a torchvision AlexNet as the config says: 10 of 10 AlexNet feature tensors are "
        "missing or misshapen; the file's tensors start with ['conv1.weight', 'fc.bias', 'fc.weight']"
    )
    assert problems[1].startswith("missing keys: ['classifier.1.bias', 'classifier.1.weight'")
    assert problems[2] == "unexpected keys: ['conv1.weight', 'fc.bias', 'fc.weight']"


def test_missing_and_unexpected_keys(weights: Path) -> None:
    state = load_file(str(weights))
    del state["classifier.6.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    assert _mismatch(weights) == ["missing keys: ['classifier.6.bias']", "unexpected keys: ['extra.weight']"]


def test_truncated_safetensors(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match=re.escape(f"{weights} is not a valid safetensors file")):
        make_model(hidden=32, image_size=64).load_weights_file(weights)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=re.escape(f"weights file not found: {tmp_path / 'x.safetensors'}")):
        make_model(hidden=32).load_weights_file(tmp_path / "x.safetensors")


def test_non_finite_weights(weights: Path) -> None:
    state = load_file(str(weights))
    state["classifier.6.weight"][0, 0] = float("nan")
    save_file(state, str(weights))
    with pytest.raises(ModelFormatError, match=re.escape("holds non-finite values in ['classifier.6.weight']")):
        make_model(hidden=32, image_size=64).load_weights_file(weights)


def test_integer_weights_are_refused(weights: Path) -> None:
    state = load_file(str(weights))
    state["classifier.6.bias"] = torch.zeros(4, dtype=torch.int64)
    save_file(state, str(weights))
    with pytest.raises(
        ModelFormatError, match=re.escape("holds non-float weights: ['classifier.6.bias (torch.int64)']")
    ):
        make_model(hidden=32, image_size=64).load_weights_file(weights)
