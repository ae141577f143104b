"""Frozen CPU inference for classifiers whose weights stay put for a while: a teacher labelling
every training batch, a student being validated. The same function to float rounding, and
faster on this repository's CPU (2 threads, batch 50, timm's models): ResNet-18 1.04-1.09x,
EfficientNet-B0 1.3x, MobileNet-V2 1.9-2x (16 and 32 px).

`frozen_for_inference` traces an eval-mode model with torch.fx and rewrites its graph:
- each `Conv2d` followed by a `BatchNorm2d` (or timm's `BatchNormAct2d`) becomes one convolution
  with the folded weights (`torch.nn.utils.fusion.fuse_conv_bn_weights`);
- the convolutions run on oneDNN with weights prepacked once, with the activation that follows
  (ReLU, ReLU6, SiLU) fused in, and a residual `add` (then ReLU) fused into the convolution that
  feeds it;
- `Identity` and eval-mode `Dropout` are dropped.
Build it again after the weights change: the convolutions hold copies, the other layers (the
classifier head, pooling) are the model's own. A model fx cannot trace (or a torch without the
oneDNN ops) comes back unchanged.
"""

from __future__ import annotations

import operator
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ddbench.core.device import onednn_ops_available, uses_frozen_inference


def onednn_convolution_available() -> bool:
    """Whether this torch build has oneDNN's prepacked, fused convolution (x86 builds with mkldnn)."""
    return onednn_ops_available("_convolution_pointwise", "_reorder_convolution_weight")


class PackedConv2d(nn.Module):
    """A frozen convolution on oneDNN: weight prepacked for its input shape, bias folded in, an
    optional activation after it (`unary`, oneDNN's name) and an optional tensor added before
    that activation (`residual`)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor],
                 input_shape: tuple[int, ...], unary: str = "none", scalars: tuple[float, ...] = (),
                 residual: bool = False) -> None:
        super().__init__()
        self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        weight = weight.detach().contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", torch.ops.mkldnn._reorder_convolution_weight(weight, *self.geometry, list(input_shape)))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.unary, self.scalars, self.residual = unary, list(scalars), residual

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.geometry, self.unary,
                                                           self.scalars, "")
        return torch.ops.mkldnn._convolution_pointwise(x, residual, self.weight, self.bias, *self.geometry, "add", 1.0,
                                                       None if self.unary == "none" else self.unary, self.scalars, "")

    def extra_repr(self) -> str:
        return f"unary={self.unary}, residual={self.residual}"


#: activations oneDNN fuses into a convolution: (oneDNN name, scalars)
Activation = tuple[str, tuple[float, ...]]
_MODULE_ACTIVATIONS: dict[type, Activation] = {
    nn.ReLU: ("relu", ()), nn.ReLU6: ("hardtanh", (0.0, 6.0)), nn.SiLU: ("swish", ())}
_FUNCTION_ACTIVATIONS: dict[Callable, Activation] = {
    F.relu: ("relu", ()), torch.relu: ("relu", ()), F.relu6: ("hardtanh", (0.0, 6.0)), F.silu: ("swish", ())}
NO_ACTIVATION: Activation = ("none", ())


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[Activation]:
    if node.op == "call_module":
        return _MODULE_ACTIVATIONS.get(type(modules[node.target]))
    if node.op == "call_function" and len(node.args) == 1:
        return _FUNCTION_ACTIVATIONS.get(node.target)
    return None


def _foldable_norm(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[tuple[nn.BatchNorm2d, Optional[Activation]]]:
    """The BatchNorm2d `node` runs, if its running statistics can fold into a convolution, and the
    activation it applies itself (timm's `BatchNormAct2d`; None for a plain BatchNorm2d)."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if not isinstance(module, nn.BatchNorm2d) or not module.track_running_stats or module.running_mean is None:
        return None
    if type(module) is nn.BatchNorm2d:
        return module, None
    if type(module) is BatchNormAct2d and type(module.drop) is nn.Identity:
        activation = NO_ACTIVATION if type(module.act) is nn.Identity else _MODULE_ACTIVATIONS.get(type(module.act))
        return (module, activation) if activation is not None else None
    return None


class _Tracer(fx.Tracer):
    """fx's tracer, with timm's BatchNormAct2d kept whole (its forward branches on buffers)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module) is BatchNormAct2d or super().is_leaf_module(module, qualified_name)


def _sole_user(node: fx.Node) -> Optional[fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _residual_operand(node: fx.Node, tail: fx.Node) -> Optional[fx.Node]:
    """The other operand when `node` adds `tail` to a tensor of its shape (a residual add oneDNN
    fuses into the convolution that ends in `tail`), else None."""
    if (node.op != "call_function" or node.target not in (operator.add, torch.add) or len(node.args) != 2
            or node.kwargs or not all(isinstance(arg, fx.Node) for arg in node.args)):
        return None
    first, second = node.args
    if first.meta["tensor_meta"].shape != second.meta["tensor_meta"].shape:
        return None
    return second if first is tail else first


def _drop_identities(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    for node in list(graph.nodes):
        if node.op == "call_module" and type(modules[node.target]) in (nn.Identity, nn.Dropout):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def frozen_for_inference(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """`model` (eval mode, float32 on the CPU) as a graph of folded, prepacked, fused convolutions
    for inputs shaped like `example` (any batch size works; the example's sets oneDNN's layout).
    Returns `model` itself where it cannot: any part in training mode, off the CPU, not float32, no
    oneDNN convolution in this torch, or a model fx cannot trace."""
    if example.device.type != "cpu" or example.dtype != torch.float32 or not onednn_convolution_available():
        return model
    if any(module.training for module in model.modules()) or any(
            p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return model
    try:
        traced = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception:  # data-dependent control flow and the like: run the model as it is
        return model
    modules = dict(traced.named_modules())
    graph = traced.graph
    _drop_identities(graph, modules)
    traced.recompile()
    with torch.no_grad():
        ShapeProp(traced).propagate(example[:1])
    batch = example.shape[0]
    for index, node in enumerate(list(graph.nodes)):
        if node.op != "call_module" or type(modules[node.target]) is not nn.Conv2d:
            continue
        conv = modules[node.target]
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        weight, bias, tail = conv.weight, conv.bias, node
        (unary, scalars), residual = NO_ACTIVATION, None
        follower = _sole_user(tail)
        norm = _foldable_norm(follower, modules) if follower is not None else None
        if norm is not None:
            module, activation = norm
            weight, bias = fuse_conv_bn_weights(weight, bias, module.running_mean, module.running_var, module.eps,
                                                module.weight, module.bias)
            tail = follower
            if activation is not None:
                unary, scalars = activation
        follower = _sole_user(tail)
        activation = _activation(follower, modules) if follower is not None and unary == "none" else None
        if activation is not None:
            (unary, scalars), tail = activation, follower
        elif follower is not None and unary == "none" and (residual := _residual_operand(follower, tail)) is not None:
            tail = follower
            after = _sole_user(tail)
            activation = _activation(after, modules) if after is not None else None
            if activation is not None:
                (unary, scalars), tail = activation, after
        input_shape = (batch, *node.args[0].meta["tensor_meta"].shape[1:])
        name = f"{node.target.replace('.', '_')}_packed_{index}"  # a conv called twice is packed twice
        traced.add_submodule(name, PackedConv2d(conv, weight, bias, input_shape, unary, scalars, residual is not None))
        with graph.inserting_after(tail):
            packed = graph.call_module(name, (node.args[0],) if residual is None else (node.args[0], residual))
        tail.replace_all_uses_with(packed)
        packed.meta = dict(tail.meta)
    graph.eliminate_dead_code()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def inference_model(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """What runs `model` for inference on inputs like `example`: `frozen_for_inference` where
    `core.device.uses_frozen_inference` says so, else `model` itself."""
    return frozen_for_inference(model, example) if uses_frozen_inference(example.device) else model
