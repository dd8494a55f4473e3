"""--device: names, what this machine has, the clear error without CUDA, mixed-precision choice,
channels_last; the predictor and ``python -m lungdemo.predict`` on a chosen device."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lungdemo import device as device_mod
from lungdemo.device import (
    DEVICE_ENV,
    DeviceError,
    Precision,
    add_device_argument,
    batch_to_device,
    check_device_spec,
    choose_precision,
    float32_matmul,
    model_to_device,
    resolve_device,
)
from lungdemo.errors import LungdemoError
from lungdemo.predict import main as predict_main
from lungdemo.predictor import Predictor
from tests.conftest import make_model, make_model_folder

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((REPO / "examples").glob("*.png"))[0]
HAS_CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the message for a machine without CUDA")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch):
    """torch reporting ``n`` CUDA devices: for the choice logic only (nothing runs on them)."""

    def install(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return install


@pytest.mark.parametrize("spec", ["auto", "cpu", "CPU", " cuda ", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(spec: str) -> None:
    assert check_device_spec(spec) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda0", "tpu", "cpu:0"])
def test_device_names_refused_with_the_choices(spec: str) -> None:
    with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N or mps"):
        check_device_spec(spec)


def test_device_error_is_a_lungdemo_error() -> None:
    assert issubclass(DeviceError, LungdemoError) and issubclass(DeviceError, ValueError)


def test_cpu_and_auto_without_gpu(fake_gpus) -> None:
    fake_gpus(0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_takes_the_gpu_when_there_is_one(fake_gpus) -> None:
    fake_gpus(2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    # one process of several (torchrun) takes the GPU of its local rank
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


def test_a_gpu_index_past_the_last_is_refused(fake_gpus) -> None:
    fake_gpus(2)
    with pytest.raises(DeviceError, match=r"no CUDA device 2; this machine has 2 \(0\.\.1\)"):
        resolve_device("cuda:2")
    with pytest.raises(DeviceError, match="no CUDA device 3"):
        resolve_device("cuda", local_rank=3)


def test_cuda_without_cuda_says_what_torch_sees(fake_gpus) -> None:
    fake_gpus(0)
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError) as err:
            resolve_device(spec)
        text = str(err.value)
        assert f"--device {spec}: CUDA is not available here" in text
        assert torch.__version__ in text and "torch.cuda.is_available() is False" in text
        assert "--device cpu" in text


def test_mps_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="mps: Apple's Metal backend is not available"):
        resolve_device("mps")


def parser_with_device(env: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    add_device_argument(p, env=env)
    return p


def test_device_argument_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert parser_with_device(env=False).parse_args([]).device == "auto"
    assert parser_with_device(env=True).parse_args([]).device == "cpu"
    assert parser_with_device(env=True).parse_args(["--device", "CUDA:1"]).device == "cuda:1"
    monkeypatch.setenv(DEVICE_ENV, "  ")
    assert parser_with_device(env=True).parse_args([]).device == "auto"
    assert "LUNGDEMO_DEVICE" in parser_with_device(env=True).format_help()


def test_device_argument_refuses_a_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser_with_device(env=False).parse_args(["--device", "gpu"])
    assert exc.value.code == 2
    assert "'gpu' is not a device: use auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err


def test_precision_is_float32_off_cuda() -> None:
    for dev in ("cpu", "mps"):
        p = choose_precision(torch.device(dev), bf16_supported=True)
        assert p.dtype is None and p.name == "float32" and not p.needs_scaler
    a = torch.randn(4, 4)
    with choose_precision(torch.device("cpu")).autocast():
        assert (a @ a).dtype == torch.float32
    scaler = choose_precision(torch.device("cpu")).grad_scaler()
    assert not scaler.is_enabled()
    loss = (a * 2).sum()
    assert scaler.scale(loss) is loss  # a disabled scaler changes nothing


def test_precision_on_cuda_bf16_or_fp16_with_scaler() -> None:
    gpu = torch.device("cuda", 0)  # a name only: nothing runs on it
    bf16 = choose_precision(gpu, bf16_supported=True)
    assert (bf16.dtype, bf16.needs_scaler, bf16.name) == (torch.bfloat16, False, "bfloat16")
    fp16 = choose_precision(gpu, bf16_supported=False)
    assert (fp16.dtype, fp16.needs_scaler, fp16.name) == (torch.float16, True, "float16")
    assert choose_precision(gpu, mixed=False, bf16_supported=True).dtype is None


def test_requested_precision_overrides_the_device_default() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)  # names only: nothing runs on the GPU
    bf16 = choose_precision(cpu, requested="bfloat16")
    assert (bf16.device_type, bf16.dtype, bf16.needs_scaler) == ("cpu", torch.bfloat16, False)
    a = torch.randn(4, 4)
    with bf16.autocast():
        assert (a @ a).dtype == torch.bfloat16
    assert choose_precision(gpu, requested="float32", bf16_supported=True).dtype is None
    assert choose_precision(cpu, requested="auto").dtype is None
    with pytest.raises(DeviceError, match="this GPU has no bfloat16"):
        choose_precision(gpu, requested="bfloat16", bf16_supported=False)
    with pytest.raises(DeviceError, match="'half' is not a precision: use auto, float32, bfloat16"):
        choose_precision(cpu, requested="half")


def test_autocast_context_really_casts() -> None:
    """The context Precision builds is torch's autocast (tried on the CPU, which has bfloat16)."""
    a = torch.randn(4, 4)
    with Precision("cpu", torch.bfloat16).autocast():
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32


def test_channels_last_only_on_cuda_and_same_numbers() -> None:
    model = make_model(hidden=16, image_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_to_device(model, torch.device("cpu"))  # CPU: nothing changes, not even the strides
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.stride() == before[k].stride(), k
    x = torch.randn(2, 3, 64, 64)
    assert batch_to_device(x, torch.device("cpu")).stride() == x.stride()
    ref = model(x)
    cl = model_to_device(make_model(hidden=16, image_size=64), torch.device("cpu"), channels_last=True)
    assert cl.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    xc = batch_to_device(x, torch.device("cpu"), channels_last=True)
    assert xc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(xc), ref, rtol=1e-4, atol=1e-5)


def test_float32_matmul_restores_the_flags() -> None:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with float32_matmul():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_predictor_on_a_named_device(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m")
    default = Predictor.from_ref(folder)
    cpu = Predictor.from_ref(folder, device="cpu")
    assert default.device == cpu.device == torch.device("cpu")
    assert cpu.predict(EXAMPLE).probabilities == default.predict(EXAMPLE).probabilities


@no_cuda
def test_predictor_refuses_cuda_here(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Predictor.from_ref(make_model_folder(tmp_path / "m"), device="cuda")


@needs_cuda
def test_predictor_cuda_matches_cpu(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m")
    cpu = Predictor.from_ref(folder, device="cpu").predict(EXAMPLE).probabilities
    gpu = Predictor.from_ref(folder, device="cuda").predict(EXAMPLE).probabilities
    assert list(gpu) == list(cpu)
    for cls in cpu:
        assert gpu[cls] == pytest.approx(cpu[cls], abs=1e-4)


def test_predict_cli_has_device_in_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lungdemo.predict", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert "--device" in out and "LUNGDEMO_DEVICE" in out


@no_cuda
def test_predict_cli_cuda_without_cuda_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_model_folder(tmp_path / "m")
    out = tmp_path / "out.csv"
    assert predict_main([str(EXAMPLE), "--out", str(out), "--model", str(folder), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda: CUDA is not available here")
    assert not out.exists()


def test_predict_cli_device_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_model_folder(tmp_path / "m")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert predict_main([str(EXAMPLE), "--out", str(tmp_path / "o.csv"), "--model", str(folder), "--no-progress"]) == 0
    assert "on cpu" in capsys.readouterr().out


def test_describe_device_cpu() -> None:
    assert device_mod.describe_device(torch.device("cpu")) == "cpu"


@no_cuda
def test_device_check_bench_without_gpu_says_so() -> None:
    run = subprocess.run(
        [sys.executable, "bench/device_check.py"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert run.returncode == 0
    assert "no CUDA GPU here" in run.stdout and "nothing to check" in run.stdout


def run_app(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_app_has_device_in_help() -> None:
    proc = run_app("--help")
    assert proc.returncode == 0 and "--device" in proc.stdout and "LUNGDEMO_DEVICE" in proc.stdout


@no_cuda
@pytest.mark.parametrize("how", ["flag", "env"])
def test_app_cuda_without_cuda_fails_at_once(tmp_path: Path, how: str) -> None:
    folder = make_model_folder(tmp_path / "m")
    if how == "flag":
        proc = run_app("--model", str(folder), "--device", "cuda")
    else:
        proc = run_app("--model", str(folder), LUNGDEMO_DEVICE="cuda")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --device cuda: CUDA is not available here")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


TRAINING_CLIS = {
    "train": ["--data-dir", "{missing}", "--out", "{out}", "--pretrained", "none"],
    "train.teacher": ["--data-dir", "{missing}", "--out", "{out}"],
    "train.evaluate": ["--model", "{missing}", "--data-dir", "{missing}"],
}


@pytest.mark.parametrize("module", sorted(TRAINING_CLIS))
def test_training_clis_have_device_in_help(module: str) -> None:
    parser = importlib.import_module(module if module != "train" else "train.train").get_args_parser()
    assert "--device" in parser.format_help()
    assert parser.parse_args([a.format(missing="x", out="y") for a in TRAINING_CLIS[module]]).device == "auto"


@no_cuda
@pytest.mark.parametrize("module", sorted(TRAINING_CLIS))
def test_training_clis_cuda_without_cuda_fail_at_once(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The device is the first thing checked: the (missing) data and model are never looked at."""
    main = importlib.import_module(module if module != "train" else "train.train").main
    argv = [a.format(missing=tmp_path / "missing", out=tmp_path / "out") for a in TRAINING_CLIS[module]]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda: CUDA is not available here"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", sorted(TRAINING_CLIS))
def test_training_clis_refuse_a_bad_device_name(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(module if module != "train" else "train.train").main
    argv = [a.format(missing=tmp_path / "missing", out=tmp_path / "out") for a in TRAINING_CLIS[module]]
    try:
        status = main([*argv, "--device", "gpu"])
    except SystemExit as exc:  # argparse's own refusal
        status = exc.code
    assert status == 2
    assert "'gpu' is not a device: use auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err
