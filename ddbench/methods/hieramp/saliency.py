"""Writing class-token saliency maps (paper Figures 1 and 5): per-scale maps and an overlay strip.

For each image: `<stem>_maps.npz` (raw maps, `scale_<n>` -> (pn, pn) float32), `<stem>_scale<n>.png`
(each map as a heat image) and `<stem>_overlay.png` (the image, then the image under each scale's
map, left to right, coarse to fine, single-token scales left out). Maps are those of the conditional CFG half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TILE = 96  # overlay tiles are upscaled to at least this many pixels


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats (H, W) -> uint8 (H, W, 3), a blue-cyan-yellow-red ramp."""
    stops = np.array([[0, 0, 128], [0, 160, 255], [255, 230, 0], [220, 0, 0]], dtype=np.float32)
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    weight = (position - low)[..., None]
    return (stops[low] * (1 - weight) + stops[low + 1] * weight).round().astype(np.uint8)


def normalised(saliency: torch.Tensor) -> np.ndarray:
    """(pn, pn) -> [0, 1] by min-max (a flat map becomes zeros)."""
    values = saliency.float()
    span = (values.max() - values.min()).clamp_min(1e-12)
    return ((values - values.min()) / span).numpy()


def save_saliency_maps(folder: Path, stem: str, image: Image.Image, maps: dict[int, torch.Tensor],
                       patch_nums: Sequence[int], alpha: float = 0.5) -> list[Path]:
    """Write the maps of one image (maps: scale -> (l,) saliency of that image); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    side = max(TILE, image.width)
    base = np.asarray(image.convert("RGB").resize((side, side), Image.LANCZOS), dtype=np.float32)
    tiles, written, raw = [base.astype(np.uint8)], [], {}
    for scale_index in sorted(maps):
        pn = patch_nums[scale_index]
        grid = maps[scale_index].reshape(pn, pn).cpu()
        raw[f"scale_{scale_index}"] = grid.numpy().astype(np.float32)
        heat = heat_colours(normalised(grid))
        map_path = folder / f"{stem}_scale{scale_index}.png"
        Image.fromarray(heat).resize((side, side), Image.NEAREST).save(map_path)
        written.append(map_path)
        if pn == 1:
            continue  # a single token: the map is trivially uniform, left out of the overlay strip
        smooth = F.interpolate(grid[None, None].float(), size=(side, side), mode="bilinear", align_corners=False)[0, 0]
        blended = (1 - alpha) * base + alpha * heat_colours(normalised(smooth)).astype(np.float32)
        tiles.append(blended.round().clip(0, 255).astype(np.uint8))
    np.savez(folder / f"{stem}_maps.npz", **raw)
    overlay_path = folder / f"{stem}_overlay.png"
    Image.fromarray(np.concatenate(tiles, axis=1)).save(overlay_path)
    return [*written, folder / f"{stem}_maps.npz", overlay_path]
