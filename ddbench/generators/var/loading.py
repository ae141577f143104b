"""Loading VQ-VAE and VAR weights from a path, a state dict, a weights-table name or a hub id.

Shapes are inferred from the checkpoint (depth, width, heads, classes, pyramid; VQ-VAE width, levels,
blocks, vocabulary), then the state dict is loaded strictly; a mismatch names the keys and the fix.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from ddbench.core.errors import CheckpointError
from ddbench.core.files import unreadable_reason
from ddbench.core.progress import NullProgress, Progress
from ddbench.generators.var.configs import RELEASE_PATCH_NUMS, VARConfig, VQVAEConfig
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE

HUB_REPO = "FoundationVision/var"
RELEASE_VQVAE = "vae_ch160v4096z32"  # the weights-table row of the released VQ-VAE every released VAR uses

Source = str | os.PathLike | Mapping[str, torch.Tensor]


def release_manifest() -> dict[str, Any]:
    """{"source": ..., "models": {name: {"parameters": int, "state_dict": {key: shape}}}}."""
    text = resources.files("ddbench.generators.var").joinpath("data/release_manifest.json").read_text()
    return json.loads(text)


# ----- reading a source -----
def _looks_like_hub_id(text: str) -> bool:
    """`owner/repo/file` or `owner/repo:file` that is not an existing local path."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+[/:][\w.-]+", text)) and not Path(text).exists()


def resolve_source_path(text: str, progress: Progress = NullProgress()) -> Path:
    """A local path for a path, a weights-table name (`var_d16`) or a hub id (`FoundationVision/var/var_d16.pth`).

    Table names and hub ids go through the weights table: cache, checksum, download (one path).
    """
    from ddbench.generators import weights

    if not Path(text).expanduser().exists():
        if text in weights.TABLE:
            return weights.resolve_weights(text, progress=progress)
        if _looks_like_hub_id(text):
            repo_id, _, filename = text.replace(":", "/").rpartition("/")
            if repo_id.count("/") != 1 or not filename:
                raise CheckpointError(f"hub id {text!r} must look like 'owner/repo/file.pth' "
                                      f"(e.g. {HUB_REPO}/var_d16.pth), or pass a local path")
            return weights.resolve_weights(weights.entry_for_hub_file(repo_id, filename), progress=progress)
    return Path(text).expanduser()


def read_state_dict(source: Source) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, description of where it came from). Unwraps {"state_dict"| "model": ...} files."""
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    path = resolve_source_path(os.fspath(source))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a path to a .pth file, a state dict, "
                              f"or a hub id such as {HUB_REPO}/var_d16.pth")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read ({unreadable_reason(exc)}); the file is "
                              "truncated or not a torch checkpoint, download it again") from exc
    if isinstance(payload, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in payload and isinstance(payload[wrapper], Mapping):
                payload = payload[wrapper]
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(payload), str(path)


def checkpoint_num_classes(source: str | os.PathLike) -> int:
    """The class count of a VAR-layout checkpoint (class_emb rows minus the null class), read
    through a memory map so a 1 GB file is not loaded for one shape."""
    path = resolve_source_path(os.fspath(source))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read ({unreadable_reason(exc)}); the file is "
                              "truncated or not a torch checkpoint, download it again") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, Mapping) and isinstance(payload.get(wrapper), Mapping):
            payload = payload[wrapper]
    if not isinstance(payload, Mapping) or "class_emb.weight" not in payload:
        raise CheckpointError(f"{path} is not a VAR checkpoint in the official layout (no class_emb.weight)"
                              f"{_looks_like(payload) if isinstance(payload, Mapping) else ''}")
    return int(payload["class_emb.weight"].shape[0]) - 1


def _require(state_dict: Mapping[str, torch.Tensor], keys: Sequence[str], where: str, kind: str) -> None:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise CheckpointError(f"{where} is not a {kind} checkpoint in the official layout: missing keys: "
                              f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}{_looks_like(state_dict)}")


def _looks_like(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "quantize.embedding.weight" in state_dict:
        return " (this file is a VQ-VAE checkpoint)"
    if "class_emb.weight" in state_dict:
        return " (this file is a VAR transformer checkpoint)"
    return ""


def strict_load(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Strict load that reports missing, unexpected and mis-shaped keys by name."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}" for key, value in expected.items()
                 if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
                 and key != "quantize.ema_vocab_hit_SV"]
    if missing or unexpected or misshaped:
        def listed(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6} more)" if len(items) > 6 else "")
        parts = [f"missing keys: {listed(missing)}" if missing else "",
                 f"unexpected keys: {listed(unexpected)}" if unexpected else "",
                 f"wrong shapes: {listed(misshaped)}" if misshaped else ""]
        raise CheckpointError(f"{where} does not match the model it describes; " + "; ".join(p for p in parts if p)
                              + ". The file is truncated or from another model; download it again or pass the right one")
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state_dict.items()}, strict=True)


# ----- inferring configurations -----
def infer_vqvae_config(state_dict: Mapping[str, torch.Tensor], patch_nums: Optional[Sequence[int]] = None,
                       where: str = "checkpoint") -> VQVAEConfig:
    _require(state_dict, ["encoder.conv_in.weight", "quantize.embedding.weight", "quant_conv.weight"], where, "VQ-VAE")
    vocab_size, z_channels = state_dict["quantize.embedding.weight"].shape
    ch = state_dict["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", key)))
    ch_mult = tuple(state_dict[f"encoder.down.{level}.block.0.conv1.weight"].shape[0] // ch for level in range(levels))
    num_res_blocks = 1 + max(int(m.group(1)) for key in state_dict
                             if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", key)))
    share = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"quantize\.quant_resi\.qresi_ls\.(\d+)\.", key)))
    if patch_nums is None:
        scales = state_dict.get("quantize.ema_vocab_hit_SV", torch.empty(len(RELEASE_PATCH_NUMS), 0)).shape[0]
        patch_nums = RELEASE_PATCH_NUMS if scales == len(RELEASE_PATCH_NUMS) else None
        if patch_nums is None:
            raise CheckpointError(f"{where} has {scales} scales that are not the release's; pass patch_nums=")
    return VQVAEConfig(
        vocab_size=vocab_size, z_channels=z_channels, ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
        using_sa=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in state_dict,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in state_dict,
        share_quant_resi=share, patch_nums=tuple(patch_nums),
    )


def infer_var_config(state_dict: Mapping[str, torch.Tensor], where: str = "checkpoint") -> VARConfig:
    _require(state_dict, ["class_emb.weight", "lvl_1L", "blocks.0.attn.scale_mul_1H11", "head.weight"], where, "VAR")
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key)))
    classes_plus_null, width = state_dict["class_emb.weight"].shape
    scale_of_token = state_dict["lvl_1L"].flatten().long()
    counts = torch.bincount(scale_of_token).tolist()
    patch_nums = tuple(math.isqrt(count) for count in counts)
    if any(side * side != count for side, count in zip(patch_nums, counts)):
        raise CheckpointError(f"{where}: lvl_1L does not describe square token maps ({counts})")
    hidden = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    return VARConfig(depth=depth, embed_dim=width, num_heads=state_dict["blocks.0.attn.scale_mul_1H11"].shape[1],
                     mlp_ratio=hidden / width, num_classes=classes_plus_null - 1, patch_nums=patch_nums)


# ----- public loaders -----
def build_vqvae(config: VQVAEConfig, device: str | torch.device = "cpu") -> VQVAE:
    with torch.device(device):
        return VQVAE(config)


def build_var(config: VARConfig, vqvae_config: VQVAEConfig, device: str | torch.device = "cpu") -> VARTransformer:
    with torch.device(device):
        return VARTransformer(config, vocab_size=vqvae_config.vocab_size, z_channels=vqvae_config.z_channels)


def load_vqvae(source: Source, patch_nums: Optional[Sequence[int]] = None, device: str | torch.device = "cpu") -> VQVAE:
    """A VQ-VAE in eval mode from a release-layout checkpoint (`vae_ch160v4096z32.pth` or a small one).

    patch_nums: the scale pyramid; default the release's. `load_var` resets it to the transformer's.
    """
    state_dict, where = read_state_dict(source)
    model = build_vqvae(infer_vqvae_config(state_dict, patch_nums, where))
    strict_load(model, state_dict, where)
    return model.to(device).eval().requires_grad_(False)


def load_var(source: Source, vqvae: VQVAE | Source, device: str | torch.device = "cpu") -> tuple[VARTransformer, VQVAE]:
    """(transformer, vqvae) in eval mode; the VQ-VAE may be given as a model or as a source to load.

    Depth, width, heads, classes and the pyramid are read from the checkpoint; the VQ-VAE's pyramid is
    set to the transformer's.
    """
    state_dict, where = read_state_dict(source)
    config = infer_var_config(state_dict, where)
    if not isinstance(vqvae, VQVAE):
        vqvae = load_vqvae(vqvae, patch_nums=config.patch_nums, device=device)
    elif tuple(vqvae.patch_nums) != config.patch_nums:
        vqvae.quantize.patch_nums = config.patch_nums
        vqvae.quantize.ema_vocab_hit_SV = vqvae.quantize.ema_vocab_hit_SV.new_zeros(len(config.patch_nums), vqvae.config.vocab_size)
    vocab, z = state_dict["head.weight"].shape[0], state_dict["word_embed.weight"].shape[1]
    if (vocab, z) != (vqvae.config.vocab_size, vqvae.config.z_channels):
        raise CheckpointError(f"{where} predicts {vocab} codes of {z} channels but the VQ-VAE has "
                              f"{vqvae.config.vocab_size} codes of {vqvae.config.z_channels}; pass the matching VQ-VAE")
    model = build_var(config, vqvae.config)
    strict_load(model, state_dict, where)
    return model.to(device).eval().requires_grad_(False), vqvae.to(device)


def release_var(depth: int = 16):
    """The released VAR of `depth` (plain, no class tokens) and its VQ-VAE as a `GeneratorWeights`: rows
    `var_d<depth>` and `vae_ch160v4096z32` of the weights table, downloaded on first use."""
    from ddbench.generators import weights
    from ddbench.generators.class_map import IMAGENET1K

    name = f"var_d{depth}"

    def load(device, progress):
        var_path = weights.resolve_weights(name, progress=progress, option="--set var_ckpt=PATH")
        vqvae_path = weights.resolve_weights(RELEASE_VQVAE, progress=progress, option="--set vqvae_ckpt=PATH")
        model, vqvae = load_var(var_path, vqvae_path, device=device)
        return model, vqvae, {"weights": f"{name} + {RELEASE_VQVAE} (weights table)", "var_ckpt": str(var_path),
                              "vqvae_ckpt": str(vqvae_path)}

    return weights.GeneratorWeights(f"released {name}", load, weights.table_identity(generator=name, vqvae=RELEASE_VQVAE),
                                    1000, IMAGENET1K)
