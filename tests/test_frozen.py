"""train.frozen: a teacher's batch norms folded into its convolutions, the same function, faster."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from train.frozen import activations_in_place, fold_batch_norm, pad_inside, teacher_for_inference
from train.teacher import TeacherEnsemble, build_teacher


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Batch norm statistics far from the identity, as after fine-tuning, so folding them matters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("arch", ["efficientnet-lite0", "efficientnet-lite1"])
def test_a_lite_teacher_folds_every_norm_and_predicts_the_same(arch: str) -> None:
    teacher = _trained_looking(build_teacher(4, imagenet=False, arch=arch), 0)
    before = _norms(teacher)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want = teacher(x)
        folded = fold_batch_norm(teacher)
        got = folded(x)
    assert before > 40 and _norms(folded) == 0  # the wheel's "same"-padding convs are Conv2d subclasses
    assert _norms(teacher) == before  # the loaded teacher is left as it was
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_an_ensemble_is_folded_whole_and_averages_as_before() -> None:
    members = [_trained_looking(build_teacher(4, imagenet=False), s) for s in (1, 2)]
    ensemble = TeacherEnsemble(members).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ensemble(x)
        fast = teacher_for_inference(ensemble)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert _norms(fast) == 0
    assert not any(p.requires_grad for p in fast.parameters())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_model_still_learning_is_refused() -> None:
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norm(build_teacher(4, imagenet=False).train())


class _SharedConv(nn.Module):
    """One conv called twice: folding its norm into it would change the other call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) + self.conv(x)


class _Branchy(nn.Module):
    """A forward that branches on the data, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) if x.sum() > 0 else x


def test_a_conv_used_elsewhere_keeps_its_norm() -> None:
    model = _trained_looking(_SharedConv(), 3)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        folded = fold_batch_norm(model)
        torch.testing.assert_close(folded(x), model(x))
    assert _norms(folded) == 1


def test_an_untraceable_teacher_runs_unfolded_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    model = _trained_looking(_Branchy(), 4)
    with caplog.at_level(logging.WARNING, logger="train.frozen"):
        assert fold_batch_norm(model) is model
    assert "cannot trace _Branchy" in caplog.text


def _pads(model: nn.Module) -> int:
    return sum(isinstance(m, nn.ZeroPad2d) for m in model.modules())


def test_symmetric_pads_move_into_their_convolutions_and_asymmetric_ones_stay() -> None:
    teacher = _trained_looking(build_teacher(4, imagenet=False), 5)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want = teacher(x)
        graph = fold_batch_norm(teacher)
        moved = pad_inside(graph)
        got = graph(x)
    assert moved > 0 and _pads(graph) == _pads(teacher) - moved > 0  # stride-2 pads are (0, 1): they stay
    assert all(
        isinstance(m, nn.Conv2d) and m.padding == (1, 1)
        for m in graph.modules()
        if m.__class__ is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1)
    )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


class _Shared(nn.Module):
    """An activation whose input is read again afterwards, and one applied to a view."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU6()
        self.fresh = nn.ReLU()
        self.on_view = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.fresh(self.conv(x))
        return self.act(y) + y + z + self.on_view(y.flatten(1)).sum()


def test_only_activations_on_unshared_fresh_outputs_work_in_place() -> None:
    model = _Shared().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
        graph = fold_batch_norm(model)
        assert activations_in_place(graph) == 1
        torch.testing.assert_close(graph(x), want)
    assert graph.fresh.inplace and not graph.act.inplace and not graph.on_view.inplace
    assert not model.fresh.inplace  # the model it came from is unchanged
    assert activations_in_place(model) == 0  # not an fx graph: nothing to see
