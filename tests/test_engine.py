"""train.engine: one training epoch (shuffling, mixup, distillation) and batched inference."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lungdemo.preprocessing import PreprocessConfig, normalize
from train.augment import AugmentConfig
from train.engine import Distillation, EpochConfig, Split, TrainingParts, predict_logits, train_one_epoch

PRE = PreprocessConfig(image_size=32)
OFF = AugmentConfig(
    scale_min=1.0, scale_max=1.0, rotate_deg=0.0, translate=0.0, hflip=False, brightness=0.0, contrast=0.0, gamma=0.0
)


def linear_model(classes: int = 4, zero: bool = False) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    if zero:  # "no opinion", so only the loss decides where training goes
        nn.init.zeros_(model[1].weight)
        nn.init.zeros_(model[1].bias)
    return model


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


class RecordingLoss(nn.Module):
    """Cross-entropy that remembers each target it was given and the loss it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, float]] = []

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, target)
        self.calls.append((target.clone(), float(loss.detach())))
        return loss


def parts(model: nn.Module, criterion: nn.Module, lr: float = 0.0, seed: int = 0) -> TrainingParts:
    return TrainingParts(
        model, torch.optim.SGD(model.parameters(), lr=lr), criterion, torch.Generator().manual_seed(seed)
    )


def test_every_sample_is_seen_once_and_a_last_batch_of_one_is_skipped() -> None:
    labels = torch.arange(9) % 4
    loss = RecordingLoss()
    mean = train_one_epoch(parts(linear_model(), loss), Split(images(9), labels), EpochConfig(PRE, OFF, 4), 1)
    targets = [t for t, _ in loss.calls]
    assert [len(t) for t in targets] == [4, 4]  # 9 = 4 + 4 + a single one, which is skipped
    seen = torch.cat(targets)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen, labels[order[:8]])  # shuffled by the generator, each sample once
    assert mean == sum(v * 4 for _, v in loss.calls) / 8  # the mean over the samples stepped on


def test_mixup_mixes_the_targets_with_one_weight_per_batch() -> None:
    labels = torch.arange(8)  # 8 classes, all different: any mixing partner has another label
    batch = Split(images(8), labels)
    plain, mixed = RecordingLoss(), RecordingLoss()
    train_one_epoch(parts(linear_model(8), plain), batch, EpochConfig(PRE, OFF, 8), 1)
    reported = train_one_epoch(parts(linear_model(8), mixed), batch, EpochConfig(PRE, OFF, 8, mixup=0.4), 1)

    assert len(plain.calls) == 1  # without mixup: one target, the batch's labels
    assert len(mixed.calls) == 2  # with mixup: the batch's labels and its partners' labels
    (y, loss_y), (y_partner, loss_partner) = mixed.calls
    assert torch.equal(torch.sort(y_partner).values, torch.sort(y).values)  # a permutation of the batch
    assert not torch.equal(y_partner, y)
    # the reported loss is lam * loss(y) + (1 - lam) * loss(partner) for one lam strictly inside (0, 1)
    lam = (reported - loss_partner) / (loss_y - loss_partner)
    assert 0.0 < lam < 1.0


def test_mixup_feeds_one_mix_of_two_slices_per_row() -> None:
    """Slice i is bright only in band i, so each input row shows which slices it mixes and how much."""
    seen: list[torch.Tensor] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = linear_model(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return self.inner(x)

    bands = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    for i in range(8):
        bands[i, 0, 4 * i : 4 * i + 4] = 255
    train_one_epoch(
        parts(Spy(), nn.CrossEntropyLoss()), Split(bands, torch.arange(8)), EpochConfig(PRE, OFF, 8, mixup=0.4), 1
    )
    (x,) = seen
    mean, std = torch.tensor(PRE.mean).view(1, 3, 1, 1), torch.tensor(PRE.std).view(1, 3, 1, 1)
    weight = (x * std + mean)[:, 0, ::4, 0]  # the brightness of each band, in [0, 1]: (row, band)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))  # the epoch's first draw
    own = weight[torch.arange(8), order]
    partners = []
    for k in range(8):
        others = [b for b in range(8) if b != order[k] and weight[k, b] > 1e-4]
        assert len(others) <= 1, weight[k]  # at most one partner per row
        partners.append(others[0] if others else int(order[k]))  # no other band: mixed with itself
        if others:
            torch.testing.assert_close(weight[k, others[0]], 1 - own[k])
    assert sorted(partners) == list(range(8))  # the partners are a permutation of the batch
    mixed = [k for k in range(8) if partners[k] != order[k]]
    assert mixed, "no row was mixed with another slice"
    lam = own[mixed[0]]
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(own[mixed], lam.expand(len(mixed)))  # one weight for the whole batch


def test_distillation_pulls_the_student_towards_the_teacher() -> None:
    """With all weight on the teacher term, labels saying class 0 lose to a teacher saying 2."""

    class FixedTeacher(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 0.0, 4.0, 0.0]).expand(len(x), 4)

    data = Split(torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8), torch.zeros(16, dtype=torch.long))

    def fit(alpha: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = linear_model(zero=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        cfg = EpochConfig(PRE, AugmentConfig(), 8, distill=Distillation(FixedTeacher(), alpha, 2.0))
        for epoch in range(15):
            train_one_epoch(
                TrainingParts(model, opt, nn.CrossEntropyLoss(), torch.Generator().manual_seed(epoch)), data, cfg, epoch
            )
        return predict_logits(model, data.images, PRE).softmax(1).mean(0)

    labels_only, teacher_only, mixed = fit(0.0), fit(1.0), fit(0.5)
    assert labels_only.argmax() == 0 and teacher_only.argmax() == 2
    assert labels_only[2] < mixed[2] < teacher_only[2]


class Spy(nn.Module):
    """A model that remembers every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = linear_model()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _views(view: str, aug: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's inputs of one epoch of one batch of 8."""
    student, teacher = Spy(), Spy()
    cfg = EpochConfig(PRE, aug, 8, distill=Distillation(teacher.eval(), 0.9, 2.0, view))
    train_one_epoch(parts(student, nn.CrossEntropyLoss()), Split(images(8), torch.zeros(8, dtype=torch.long)), cfg, 1)
    return student.seen[0], teacher.seen[0]


def test_the_clean_view_shows_the_teacher_the_slice_without_the_intensity_changes() -> None:
    """The student gets gamma, window, noise and blur; the teacher the very slices without them."""
    harsh = dataclasses.replace(
        OFF, gamma=0.8, contrast=0.3, brightness=0.2, window=0.15, noise=0.05, downscale_prob=1.0, jpeg_prob=1.0
    )
    student_same, teacher_same = _views("same", harsh)
    student_clean, teacher_clean = _views("clean", harsh)
    torch.testing.assert_close(teacher_same, student_same)  # "same": the student's very batch
    torch.testing.assert_close(student_clean, student_same)  # the clean view draws nothing: same batches
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(teacher_clean, normalize(images(8)[order], PRE))  # no geometry in OFF: as stored
    assert (teacher_clean - student_clean).abs().mean() > 0.1


def test_the_clean_view_keeps_the_moves() -> None:
    """Rotations, zooms, shifts and flips reach the teacher exactly as they reach the student."""
    moves = AugmentConfig(gamma=0.0, contrast=0.0, brightness=0.0)  # geometry only: the views agree
    student, teacher = _views("clean", moves)
    torch.testing.assert_close(teacher, student)
    with pytest.raises(ValueError, match="distillation view"):
        Distillation(nn.Identity(), 0.5, 2.0, "blurred")


def test_predict_logits_in_batches_equals_one_pass_in_eval_mode() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 32 * 32, 4))
    x = images(10)
    out = predict_logits(model, x, PRE, batch_size=3)
    assert not model.training  # dropout off
    with torch.no_grad():
        whole = model(normalize(x, PRE))
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-6)
    assert predict_logits(model, x[:0], PRE).numel() == 0


def test_a_teacher_with_its_own_gray_levels_sees_the_students_views_through_them() -> None:
    """The student standardises gray levels; the teacher trained without keeps its own normalisation."""
    student_pre = dataclasses.replace(PRE, intensity="standardize")
    batch, labels = images(8), torch.zeros(8, dtype=torch.long)
    for view in ("same", "clean"):
        student, teacher = Spy(), Spy()
        distill = Distillation(teacher.eval(), 0.9, 2.0, view, pre=PRE)
        train_one_epoch(
            parts(student, nn.CrossEntropyLoss()),
            Split(batch, labels),
            EpochConfig(student_pre, OFF, 8, distill=distill),
            1,
        )
        order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(student.seen[0], normalize(batch[order], student_pre))  # no moves in OFF
        torch.testing.assert_close(teacher.seen[0], normalize(batch[order], PRE))
