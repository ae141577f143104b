"""Loading DiT weights: the official `.pt` layout and the diffusers `DiTTransformer2DModel` folder.

Both load strictly into `ddbench.generators.dit.model.DiT` and compute the official function:
- official: `DiT-XL-2-256x256.pt` (292 keys) or a DiT/Minimax training checkpoint
  (`{"model", "ema", "opt", "args"}`: the EMA weights are taken, as the release's `find_model` does).
  Minimax's gammas are optional: absent ones are 1 (the release loads with strict=False for this);
  every other key must be present, used and of the right shape.
- diffusers: a `facebook/DiT-XL-2-256`-style folder (the pipeline root or its `transformer/`), mapped
  key by key (see `diffusers_to_official`). Its per-block copies of the timestep and label embedders
  must be identical, since the official model has one shared pair (and fine-tuning keeps it tied).
- hub ids: `owner/repo` (a diffusers repo; `transformer/` is fetched) or `owner/repo/file.pt`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Mapping, Optional

import torch

from ddbench.core.errors import CheckpointError
from ddbench.core.hashing import cached_sha256_file
from ddbench.generators.dit.codecs import CODECS, SD_VAE_ENTRIES, diffusion_extra_error, load_sd_vae
from ddbench.generators.dit.config import HEADS_BY_WIDTH, MINIMAX_GAMMA_BLOCKS, DiTConfig
from ddbench.generators.dit.model import DiT
from ddbench.generators.var.loading import strict_load

Source = str | os.PathLike | Mapping[str, torch.Tensor]
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
RELEASE_DIT = "dit_xl_2_256"  # the weights-table row of DiT-XL-2-256x256.pt
GAMMA_KEY = re.compile(r"blocks\.(\d+)\.(attn\.)?gamma[12]$")


# ----- diffusers layout -----
def diffusers_to_official(state: Mapping[str, torch.Tensor], depth: int, where: str) -> dict[str, torch.Tensor]:
    """Map a DiTTransformer2DModel state dict to the official keys; every diffusers key must be used."""
    remaining = dict(state)

    def take(key: str) -> torch.Tensor:
        if key not in remaining:
            raise CheckpointError(f"{where} is not a complete diffusers DiT: missing key {key}")
        return remaining.pop(key)

    out = {"x_embedder.proj.weight": take("pos_embed.proj.weight"), "x_embedder.proj.bias": take("pos_embed.proj.bias")}
    embedders = {"t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
                 "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2"}
    for block in range(depth):
        prefix = f"transformer_blocks.{block}."
        copies = {f"{ours}.{kind}": take(f"{prefix}{theirs}.{kind}") for ours, theirs in embedders.items()
                  for kind in ("weight", "bias")}
        copies["y_embedder.embedding_table.weight"] = take(f"{prefix}norm1.emb.class_embedder.embedding_table.weight")
        for key, value in copies.items():
            if block == 0:
                out[key] = value
            elif value.device.type != "meta" and not torch.equal(out[key], value):
                raise CheckpointError(f"{where}: block {block}'s copy of {key} differs from block 0's; the official DiT "
                                      "has one shared timestep/label embedder, so this model cannot be represented")
        ours = f"blocks.{block}."
        for kind in ("weight", "bias"):
            out[f"{ours}attn.qkv.{kind}"] = torch.cat([take(f"{prefix}attn1.to_{p}.{kind}") for p in "qkv"])
            out[f"{ours}attn.proj.{kind}"] = take(f"{prefix}attn1.to_out.0.{kind}")
            out[f"{ours}mlp.fc1.{kind}"] = take(f"{prefix}ff.net.0.proj.{kind}")
            out[f"{ours}mlp.fc2.{kind}"] = take(f"{prefix}ff.net.2.{kind}")
            out[f"{ours}adaLN_modulation.1.{kind}"] = take(f"{prefix}norm1.linear.{kind}")
    for kind in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{kind}"] = take(f"proj_out_1.{kind}")
        out[f"final_layer.linear.{kind}"] = take(f"proj_out_2.{kind}")
    remaining.pop("pos_embed.pos_embed", None)  # the fixed sin-cos table, recomputed
    if remaining:
        raise CheckpointError(f"{where} has keys the DiT layout does not use: {', '.join(sorted(remaining)[:6])}")
    return out


def diffusers_config(config_json: Mapping, where: str) -> DiTConfig:
    """The DiTConfig of a DiTTransformer2DModel config.json (only the official architecture is accepted)."""
    expected = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate", "attention_bias": True,
                "norm_elementwise_affine": False}
    wrong = [f"{k}={config_json.get(k)!r}" for k, v in expected.items() if config_json.get(k, v) != v]
    if wrong:
        raise CheckpointError(f"{where} is not the DiT architecture ({', '.join(wrong)})")
    heads, head_dim = config_json.get("num_attention_heads", 16), config_json.get("attention_head_dim", 72)
    in_channels = config_json.get("in_channels", 4)
    out_channels = config_json.get("out_channels") or in_channels
    return DiTConfig(input_size=config_json.get("sample_size", 32), patch_size=config_json.get("patch_size", 2),
                     in_channels=in_channels, hidden_size=heads * head_dim, depth=config_json.get("num_layers", 28),
                     num_heads=heads, num_classes=config_json.get("num_embeds_ada_norm", 1000),
                     learn_sigma=out_channels == 2 * in_channels)


def _read_diffusers_folder(folder: Path) -> tuple[dict[str, torch.Tensor], DiTConfig, str]:
    if (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"
    where = str(folder)
    config = diffusers_config(json.loads((folder / "config.json").read_text()), where)
    weights = next((folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder} has a config.json but none of {', '.join(DIFFUSERS_WEIGHTS)}; download the "
                              "weights (sharded folders: merge them or pass the official .pt)")
    if weights.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise diffusion_extra_error(f"reading {weights}") from exc
        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    # the diffusers config has no class-dropout field; the label table says whether a null row exists
    table = state.get("transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight")
    if table is not None and table.shape[0] == config.num_classes:
        config = DiTConfig(**{**config.__dict__, "class_dropout_prob": 0.0})
    return diffusers_to_official(state, config.depth, where), config, where


# ----- official layout -----
def _read_official_file(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    import argparse

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # DiT/Minimax checkpoints keep their args
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); the file is "
                              "truncated or not a torch checkpoint, download it again") from exc
    if isinstance(payload, Mapping) and "ema" in payload:  # a training checkpoint: sample with the EMA
        payload = payload["ema"]
    elif isinstance(payload, Mapping) and isinstance(payload.get("model"), Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a DiT state dict")
    return dict(payload), str(path)


def _hub_path(hub_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError as exc:
        raise diffusion_extra_error(f"loading {hub_id!r} from the hub") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    parts = hub_id.split("/")
    try:
        if len(parts) == 2:
            return Path(snapshot_download(hub_id, allow_patterns=["transformer/*"], local_files_only=offline))
        return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=offline))
    except Exception as exc:
        raise CheckpointError(f"could not fetch {hub_id!r} from the hub ({type(exc).__name__}); when offline, "
                              "download it elsewhere and pass the local path") from exc


def read_dit_weights(source: Source) -> tuple[dict[str, torch.Tensor], Optional[DiTConfig], str]:
    """(official-layout state dict, config if the source states one (diffusers), description)."""
    if isinstance(source, Mapping):
        return dict(source), None, "the given state dict"
    text = os.fspath(source)
    path = Path(text).expanduser()
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?", text):
        path = _hub_path(text)
    if path.is_dir():
        return _read_diffusers_folder(path)
    if not path.is_file():
        raise CheckpointError(f"DiT checkpoint {path} does not exist; pass DiT-XL-2-256x256.pt (from "
                              "https://dl.fbaipublicfiles.com/DiT/models/), a diffusers folder or a hub id such as "
                              "facebook/DiT-XL-2-256")
    state, where = _read_official_file(path)
    return state, None, where


def infer_dit_config(state: Mapping[str, torch.Tensor], num_heads: Optional[int] = None,
                     where: str = "checkpoint") -> DiTConfig:
    """Shapes from the official keys; heads from `num_heads` or the released widths (384, 768, 1024, 1152)."""
    needed = ["x_embedder.proj.weight", "y_embedder.embedding_table.weight", "final_layer.linear.weight",
              "blocks.0.mlp.fc1.weight"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise CheckpointError(f"{where} is not a DiT checkpoint in the official layout: missing {', '.join(missing)}")
    hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key)))
    heads = num_heads or HEADS_BY_WIDTH.get(hidden)
    if heads is None:
        raise CheckpointError(f"{where}: width {hidden} is not a released DiT's; pass num_heads= (heads are not "
                              "stored in the state dict)")
    out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    table_rows = state["y_embedder.embedding_table.weight"].shape[0]
    if "pos_embed" in state:
        grid = math.isqrt(state["pos_embed"].shape[1])
    else:
        raise CheckpointError(f"{where} has no pos_embed, so its latent size is unknown; pass an official checkpoint")
    gamma_blocks = sorted({int(m.group(1)) for key in state if (m := GAMMA_KEY.match(key))})
    if gamma_blocks and gamma_blocks != list(range(len(gamma_blocks))):
        raise CheckpointError(f"{where}: DiffFit gammas on blocks {gamma_blocks}; expected blocks 0..k-1")
    return DiTConfig(input_size=grid * patch, patch_size=patch, in_channels=in_channels, hidden_size=hidden,
                     depth=depth, num_heads=heads, mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
                     num_classes=table_rows - 1, learn_sigma=out_channels == 2 * in_channels,
                     gamma_blocks=len(gamma_blocks) if gamma_blocks else MINIMAX_GAMMA_BLOCKS)


def load_dit(source: Source, num_heads: Optional[int] = None, device: str | torch.device = "cpu") -> DiT:
    """A DiT in eval mode from an official or diffusers checkpoint (strict; absent Minimax gammas are 1).

    `device="meta"` checks a layout without allocating memory.
    """
    state, stated_config, where = read_dit_weights(source)
    config = stated_config or infer_dit_config(state, num_heads, where)
    with torch.device(device):
        model = DiT(config)
    full = dict(state)
    expected = model.state_dict()
    if "pos_embed" not in full:
        full["pos_embed"] = expected["pos_embed"]
    present_gammas = [key for key in full if GAMMA_KEY.match(key)]
    all_gammas = [key for key in expected if GAMMA_KEY.match(key)]
    if present_gammas and len(present_gammas) != len(all_gammas):
        raise CheckpointError(f"{where} has {len(present_gammas)} of the model's {len(all_gammas)} gamma tensors; "
                              "a Minimax checkpoint has all of them, an official one none")
    for key in all_gammas:
        full.setdefault(key, torch.ones_like(expected[key]))
    strict_load(model, full, where)
    return model.to(device).eval().requires_grad_(False)


# ----- identities of weight files, and the released DiT as a generator source -----
def checkpoint_identity(source: str) -> str:
    """sha256 of a local checkpoint (a diffusers folder: of its weights file); a hub id stands for itself."""
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        weights = next((folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path} holds none of {', '.join(DIFFUSERS_WEIGHTS)}")
        return cached_sha256_file(weights)
    if path.is_file():
        return cached_sha256_file(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?", source):
        return f"hub:{source}"
    raise CheckpointError(f"DiT checkpoint {source} does not exist; pass a .pt file, a diffusers folder or a hub id")


def codec_identity(vae: str) -> dict[str, str]:
    """{"vae": sha256} of the SD VAE a run decodes with (the table's, for mse/ema); nothing for fixed codecs."""
    if vae in CODECS:
        return {}
    if vae in SD_VAE_ENTRIES:
        from ddbench.generators import weights

        files = weights.get_entry(SD_VAE_ENTRIES[vae]).files
        return {"vae": next(f.sha256 for f in files if f.filename.endswith(".safetensors"))}
    return {"vae": checkpoint_identity(vae)}


def release_dit(vae: str):
    """The released DiT-XL/2 256x256 (`dit_xl_2_256` in the weights table, downloaded on first use) and
    the SD VAE `vae` as a `GeneratorWeights`, for datasets with ImageNet-1K indices."""
    from ddbench.generators import weights
    from ddbench.generators.class_map import IMAGENET1K

    def load(device, progress):
        path = weights.resolve_weights(RELEASE_DIT, progress=progress, option="--set dit_ckpt=PATH")
        return load_dit(path, device=device), load_sd_vae(vae, device, progress=progress), {
            "weights": f"{RELEASE_DIT} (weights table)", "dit_ckpt": str(path), "codec": vae}

    def identity() -> dict[str, str]:
        return {**weights.table_identity(generator=RELEASE_DIT)(), **codec_identity(vae)}

    return weights.GeneratorWeights(f"released {RELEASE_DIT}", load, identity, 1000, IMAGENET1K)
