"""The classifier factory for students and teachers: timm ResNets, MobileNet-V2, EfficientNet-B0
and RDED's ConvNet-D, each with the small-input adaptation used by the distillation literature.

Why the adaptation: ImageNet stems downsample by 4 (ResNet) or 2 (MobileNet/EfficientNet) before
the first block, which leaves a 16 or 32 px image with almost no spatial extent. For inputs of
64 px or less, ResNets get a 3x3 stride-1 `conv1` and no max-pool (RDED's "modified" ResNet-18),
and MobileNet-V2/EfficientNet-B0 get a stride-1 `conv_stem`. Whether a model was adapted is a
property of the weights' shapes, so every model carries a `ModelSpec` (`model.ddbench_spec`, also
under `model.pretrained_cfg["ddbench"]` for timm models) and checkpoints store it, so a saved
model always reloads into the same shape (see `ddbench.models.checkpoint`).

Two ways to build and initialise a model (`init=`, recorded in the spec):
- "timm" (teachers, and students of the `hard_label` evaluator): timm's model and init, which
  zero-initialises the last BatchNorm of every ResNet block; an adapted ResNet stem gets kaiming
  fan_out; MobileNet-V2/EfficientNet-B0 heads N(0, 0.01).
- "torchvision" (the `rded` evaluator's students): the model exactly as RDED builds its students
  (`synthesize/utils.py` `load_model`): torchvision's model for 1000 classes with torchvision's init
  (no zero-init), its dropout and stochastic depth; an adapted ResNet stem is a fresh `nn.Conv2d`
  at PyTorch's default init (created after the model, as RDED replaces `conv1`); the classifier
  keeps the first `num_classes` rows of the 1000-way head (which matters where the init depends
  on the head's width: EfficientNet-B0's U(+-1/sqrt(1000))). Same draws, in the same order, as
  RDED's code: under one torch seed the weights are identical. ConvNet-D is the same either way
  (PyTorch defaults, as RDED's ConvNet).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import timm
import torch
import torchvision
from torch import nn

from ddbench.core.device import uses_channels_last
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.models.convnet import ConvNet

#: inputs this small get the stride-1 stem (RDED: CIFAR 32, Tiny-ImageNet 64)
SMALL_INPUT_MAX = 64


#: the ways `create_model` can build and initialise a model (see the module docstring)
INIT_STYLES = ("timm", "torchvision")


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a model with the same parameter shapes: stored in every checkpoint."""

    arch: str
    num_classes: int
    input_size: int
    small_input: bool
    #: which library built it ("timm" or "torchvision"): their MobileNet/EfficientNet layouts differ
    init: str = "timm"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelSpec":
        """Fields with a default may be absent (checkpoints written before they existed)."""
        known = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                known[f.name] = values[f.name]
            elif f.default is dataclasses.MISSING:
                raise CheckpointError(f"model spec {values} lacks {f.name!r}; the checkpoint is damaged")
        return cls(**known)


Builder = Callable[[int, int, bool, dict[str, Any]], nn.Module]
_BUILDERS: dict[str, Builder] = {}
#: the timm model behind each ddbench arch name (for pretrained weights)
TIMM_NAMES: dict[str, str] = {}


def register_arch(name: str, timm_name: str | None = None) -> Callable[[Builder], Builder]:
    """Register `builder(num_classes, input_size, small_input, timm_kwargs) -> nn.Module` under `name`."""

    def decorate(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        if timm_name is not None:
            TIMM_NAMES[name] = timm_name
        return builder

    return decorate


def list_archs() -> list[str]:
    """The arch names `create_model` accepts (sorted)."""
    return sorted(_BUILDERS)


def check_archs(archs: Iterable[str], role: str = "architecture") -> None:
    """ConfigError for the first name `create_model` does not know, with the closest known one."""
    for arch in archs:
        if arch not in _BUILDERS:
            close = difflib.get_close_matches(arch, list(_BUILDERS), n=1, cutoff=0.4)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {role} {arch!r}.{hint} Known: {', '.join(list_archs())}.")


def _adapt_resnet_stem(model: nn.Module) -> None:
    """3x3 stride-1 conv1 and no max-pool (RDED's modified ResNet); the new conv is freshly initialised."""
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _adapt_efficientnet_stem(model: nn.Module) -> None:
    """Stride 1 in the stem conv: same weight shape, so pretrained stem weights stay usable."""
    model.conv_stem.stride = (1, 1)


def _small_head_init(model: nn.Module) -> None:
    """N(0, 0.01) classifier weights and zero bias (torchvision's MobileNet-V2 init).

    timm's default head init for the EfficientNet family gives logits with std ~4 at the start;
    trained from scratch on a small set that costs most of the training (digits: loss 5.2 vs 1.9
    after one epoch, and a MobileNet-V2 teacher stuck at 51% instead of the high nineties)."""
    classifier = model.get_classifier()
    if isinstance(classifier, nn.Linear):
        nn.init.normal_(classifier.weight, 0.0, 0.01)
        nn.init.zeros_(classifier.bias)


def _timm_builder(timm_name: str, adapt: Callable[[nn.Module], None]) -> Builder:
    def build(num_classes: int, input_size: int, small_input: bool, timm_kwargs: dict[str, Any]) -> nn.Module:
        model = timm.create_model(timm_name, num_classes=num_classes, **timm_kwargs)
        if small_input:
            adapt(model)
        if adapt is _adapt_efficientnet_stem and not (timm_kwargs.get("pretrained") and num_classes == 1000):
            _small_head_init(model)  # a new head (from scratch, or a pretrained body with a resized head)
        return model

    return build


for _arch, _timm_name, _adapt in [
    ("resnet18", "resnet18", _adapt_resnet_stem),
    ("resnet101", "resnet101", _adapt_resnet_stem),
    ("mobilenet_v2", "mobilenetv2_100", _adapt_efficientnet_stem),
    ("efficientnet_b0", "efficientnet_b0", _adapt_efficientnet_stem),
]:
    register_arch(_arch, _timm_name)(_timm_builder(_timm_name, _adapt))


def _convnet_builder(depth: int) -> Builder:
    def build(num_classes: int, input_size: int, small_input: bool, timm_kwargs: dict[str, Any]) -> nn.Module:
        if timm_kwargs.get("pretrained"):
            raise ConfigError(f"convnet{depth} has no pretrained weights; drop pretrained=True")
        return ConvNet(depth, num_classes, input_size)

    return build


for _depth in (3, 4, 5, 6):
    register_arch(f"convnet{_depth}")(_convnet_builder(_depth))


def _keep_first_classes(classifier: nn.Linear, num_classes: int) -> None:
    """RDED's `pruning_classifier`: keep the head's first `num_classes` rows (no random draw)."""
    classifier.weight = nn.Parameter(classifier.weight.detach()[:num_classes].clone())
    classifier.bias = nn.Parameter(classifier.bias.detach()[:num_classes].clone())
    classifier.out_features = num_classes


def _torchvision_resnet(name: str) -> Builder:
    def build(num_classes: int, input_size: int, small_input: bool, timm_kwargs: dict[str, Any]) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=max(num_classes, 1000))
        if small_input:  # RDED's "_modified" ResNets: a fresh conv1 (PyTorch default init), no max-pool
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        _keep_first_classes(model.fc, num_classes)
        return model

    return build


def _torchvision_mobile(name: str) -> Builder:
    def build(num_classes: int, input_size: int, small_input: bool, timm_kwargs: dict[str, Any]) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None, num_classes=max(num_classes, 1000))
        if small_input:  # ddbench's stride-1 stem (RDED runs these only at 224 px)
            model.features[0][0].stride = (1, 1)
        _keep_first_classes(model.classifier[-1], num_classes)
        return model

    return build


#: the "torchvision" builders; ConvNet-D is ddbench's own under both styles
_TORCHVISION_BUILDERS: dict[str, Builder] = {
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet101": _torchvision_resnet("resnet101"),
    "mobilenet_v2": _torchvision_mobile("mobilenet_v2"),
    "efficientnet_b0": _torchvision_mobile("efficientnet_b0"),
}


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_pretrained_available(arch: str, tag: str | None) -> dict[str, Any]:
    """timm kwargs for pretrained weights; offline without a local copy fails now, not mid-download."""
    timm_name = TIMM_NAMES[arch] + (f".{tag}" if tag else "")
    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:  # noqa: BLE001 - timm raises several types for unknown tags
        pretrained_cfg = None
    if pretrained_cfg is None:
        raise ConfigError(f"timm has no pretrained weights named {timm_name!r}; see timm.list_pretrained('{TIMM_NAMES[arch]}*')")
    if _hf_offline():
        hub_id = pretrained_cfg.hf_hub_id
        cached = False
        if hub_id:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                if isinstance(try_to_load_from_cache(hub_id, filename), str):
                    cached = True
        if not cached:
            raise CheckpointError(
                f"HF_HUB_OFFLINE is set and timm's pretrained weights {timm_name!r} (hub id {hub_id}) are not in "
                "the local Hugging Face cache; download them once online, or pass a local file with "
                "--teacher-ckpt / pretrained_file"
            )
    return {"pretrained": True, "model_name_override": timm_name}


def create_model(
    arch: str,
    num_classes: int,
    input_size: int,
    *,
    pretrained: bool = False,
    pretrained_tag: str | None = None,
    pretrained_file: str | os.PathLike | None = None,
    small_input: bool | None = None,
    init: str = "timm",
) -> nn.Module:
    """A classifier for `input_size` px RGB images with `num_classes` outputs.

    `small_input=None` adapts the stem when `input_size <= 64`. `pretrained` loads timm's
    ImageNet weights (tag `pretrained_tag`, e.g. "tv_in1k" for torchvision's ResNet-18) from the
    local cache, or from `pretrained_file`; the classifier head is re-initialised when
    `num_classes != 1000`. With HF_HUB_OFFLINE set and no local copy this raises at once.
    `init` picks timm's model and init or torchvision's as RDED builds it (module docstring);
    "torchvision" builds from scratch only.
    """
    check_archs([arch])
    if num_classes < 1 or input_size < 1:
        raise ConfigError(f"{arch}: num_classes ({num_classes}) and input_size ({input_size}) must be positive")
    if init not in INIT_STYLES:
        raise ConfigError(f"unknown model init {init!r}; use one of {', '.join(INIT_STYLES)}")
    if init == "torchvision" and (pretrained or pretrained_file is not None):
        raise ConfigError(f"{arch}: init='torchvision' builds from scratch; pretrained weights load with init='timm'")
    adapt = input_size <= SMALL_INPUT_MAX if small_input is None else small_input
    timm_kwargs: dict[str, Any] = {}
    if pretrained_file is not None:
        if not os.path.isfile(pretrained_file):
            raise CheckpointError(f"pretrained file {pretrained_file} does not exist")
        timm_kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": os.fspath(pretrained_file)}}
    elif pretrained:
        if arch not in TIMM_NAMES:
            raise ConfigError(f"{arch} has no pretrained weights; drop pretrained=True")
        timm_kwargs = _check_pretrained_available(arch, pretrained_tag)
    name_override = timm_kwargs.pop("model_name_override", None)
    builder = _TORCHVISION_BUILDERS.get(arch, _BUILDERS[arch]) if init == "torchvision" else _BUILDERS[arch]
    if name_override is not None:
        builder = _timm_builder(name_override, _adapt_resnet_stem if arch.startswith("resnet") else _adapt_efficientnet_stem)
    try:
        model = builder(num_classes, input_size, adapt, timm_kwargs)
    except Exception as exc:  # noqa: BLE001 - hub, network and state-dict errors all mean the same here
        if timm_kwargs.get("pretrained"):
            raise CheckpointError(
                f"could not load pretrained weights for {arch}: {exc}. Set HF_HUB_OFFLINE=1 to fail fast "
                "offline, download them once online, or pass a local file"
            ) from exc
        raise
    spec = ModelSpec(arch=arch, num_classes=num_classes, input_size=input_size, small_input=adapt, init=init)
    model.ddbench_spec = spec
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg = {**model.pretrained_cfg, "ddbench": spec.to_dict()}
    return model


def model_spec(model: nn.Module) -> ModelSpec:
    """The spec a model was built with (raises for models that did not come from `create_model`)."""
    spec = getattr(model, "ddbench_spec", None)
    if spec is None:
        raise ConfigError(f"{type(model).__name__} was not built by ddbench.models.create_model; it has no spec to save")
    return spec


def create_from_spec(spec: ModelSpec) -> nn.Module:
    """Rebuild an (untrained) model with the exact shapes `spec` describes."""
    return create_model(spec.arch, spec.num_classes, spec.input_size, small_input=spec.small_input, init=spec.init)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to `device`, in the memory format its convolutions run fastest in there
    (`core.device.uses_channels_last`: channels_last on CUDA and, by default, on the CPU)."""
    layout = torch.channels_last if uses_channels_last(torch.device(device)) else torch.contiguous_format
    return model.to(device).to(memory_format=layout)
