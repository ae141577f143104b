"""Class-conditional next-scale sampling with classifier-free guidance, top-k/top-p and a KV cache.

`ScaleSampler` runs one scale at a time. Given one generator per image (`generators=[...]`), each
row of a batch draws its tokens from its own generator exactly as it would alone (batch 1), so the
batch size never changes which image a seed gives; bf16 autocast runs the transformer and decoder
on CUDA only (sampling filters stay float32; CPU stays float32 throughout). Subclasses (HIERAMP) can override `scale_inputs` to append
extra, never-cached tokens after a scale's tokens with their own mask, `logits_fns` to read or bias
attention logits in chosen blocks, and `on_scale_hidden` to read the hidden states of a scale.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ddbench.core.device import autocast, bf16_autocast_on
from ddbench.generators.var.attention import LogitsFn
from ddbench.generators.var.cpu_kernels import PackedLinears, onednn_linear_available
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE


def filter_top_k_top_p(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Mask (to -inf) logits outside the top k, then outside the smallest set holding top_p mass.

    logits: (..., V). top_k <= 0 or top_p <= 0 disables that filter. Returns a new tensor. A token is
    dropped by top-p when the mass of the tokens at most as likely as it is <= 1 - top_p (the release's
    rule); the most likely token always stays. After top-k only the k survivors are sorted.
    """
    logits = logits.clone()
    vocab = logits.shape[-1]
    candidates = None
    if 0 < top_k < vocab:
        values, order = logits.topk(top_k, dim=-1)  # descending
        logits.masked_fill_(logits < values[..., -1:], -torch.inf)
        if top_p > 0 and not bool((logits.isfinite().sum(-1) > top_k).any()):  # no ties at the k-th value
            candidates = values, order
    if top_p > 0:
        values, order = candidates if candidates is not None else logits.sort(dim=-1, descending=True)
        probabilities = values.softmax(dim=-1)
        mass_at_most_as_likely = 1 - (probabilities.cumsum(dim=-1) - probabilities)
        drop = mass_at_most_as_likely <= (1 - top_p)
        drop[..., 0] = False  # always keep the most likely token
        logits.scatter_(-1, order, values.masked_fill(drop, -torch.inf))
    return logits


#: one generator for the whole batch, or one per row (per-image seeds), or None (global RNG)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def sample_tokens(logits: torch.Tensor, top_k: int, top_p: float, generator: Generators) -> torch.Tensor:
    """(B, l, V) logits -> (B, l) indices, drawn from softmax(filtered logits).

    With a sequence of B generators, row b draws only from generator b, the same draws a batch of
    one would make with it (filtering and softmax are row-wise, multinomial sees an (l, V) matrix).
    """
    batch, length, vocab = logits.shape
    probabilities = filter_top_k_top_p(logits.float(), top_k, top_p).softmax(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probabilities.view(-1, vocab), 1, generator=generator).view(batch, length)
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for a batch of {batch}; pass one per row")
    return torch.stack([torch.multinomial(probabilities[row], 1, generator=row_generator).view(length)
                        for row, row_generator in enumerate(generator)])


def guidance_weight(cfg: float, scale_index: int, num_scales: int) -> float:
    """The linear CFG ramp: t = cfg * si / (S - 1); logits = (1 + t) cond - t uncond."""
    return cfg * scale_index / (num_scales - 1)


@dataclass
class SamplingOptions:
    cfg: float = 1.5
    top_k: int = 900
    top_p: float = 0.96
    use_kv_cache: bool = True
    amp: bool = True  # bf16 autocast for the transformer and decoder, on CUDA only
    # CPU float32 only: prepacked oneDNN linears (GELU fused) and a channels-last, sub-pixel decode
    # (ddbench.generators.var.cpu_kernels); the same tokens and images to float rounding, faster.
    # False runs the plain PyTorch kernels (the code before it, kept to compare against).
    fast_cpu: bool = True
    # fast_cpu with one generator per image: images sampled `cpu_chunk` at a time (decoded two at a
    # time), whatever the batch. Large batches lose time to memory traffic on a CPU (d16, 2 threads:
    # the transformer 3.32 s/img at 4 against 3.89 at 25, the decoder 1.72 at 2 against 1.93 at 25),
    # and one generator per image draws the same tokens at any batch size.
    cpu_chunk: int = 4


#: images the fast_cpu decoder decodes together (see `SamplingOptions.cpu_chunk`)
CPU_DECODE_CHUNK = 2


class ScaleSampler:
    """Samples images for given labels; batches are doubled for CFG (conditional half first)."""

    extra_cache_room = 16  # room in each preallocated KV cache for tokens a subclass appends per scale

    def __init__(self, transformer: VARTransformer, vqvae: VQVAE, options: SamplingOptions = SamplingOptions()) -> None:
        self.transformer, self.vqvae, self.options = transformer, vqvae, options
        if tuple(vqvae.patch_nums) != tuple(transformer.patch_nums):
            raise ValueError(f"VQ-VAE scales {vqvae.patch_nums} differ from the transformer's {transformer.patch_nums}")
        self._packed_linears = PackedLinears()

    def uses_fast_cpu(self, device: torch.device) -> bool:
        """The `fast_cpu` kernels run on a float32 CPU (not under the bf16 autocast test switch)."""
        return (self.options.fast_cpu and device.type == "cpu" and onednn_linear_available()
                and not (self.options.amp and bf16_autocast_on(device)))

    def _kernels(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.uses_fast_cpu(device):
            return self._packed_linears.installed(self.transformer)
        return contextlib.nullcontext()

    # ----- hooks for subclasses -----
    def scale_inputs(self, scale_index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, Optional[int], Optional[torch.Tensor]]:
        """(x, cache_tokens, attn_bias) for the cached path; the base runs the scale's tokens as they are."""
        return tokens, None, None

    def logits_fns(self, scale_index: int) -> Optional[dict[int, LogitsFn]]:
        return None

    def on_scale_hidden(self, scale_index: int, hidden: torch.Tensor) -> None:
        """Called with the last block's output (2B, l_x, C) of each scale (cached path)."""

    # ----- the loop -----
    @torch.no_grad()
    def sample_indices(self, labels: torch.Tensor, generator: Generators = None) -> list[torch.Tensor]:
        """Per-scale token indices (B, pn*pn) for class labels (B,); `generator` may be one per row."""
        return self._sample(labels, generator)[0]

    def _sample(self, labels: torch.Tensor, generator: Generators) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(per-scale indices, the float32 f_hat (B, z, side, side) they sum to)."""
        with autocast(labels.device, self.options.amp), self._kernels(labels.device):
            return self._sample_indices(labels, generator)

    def _sample_indices(self, labels: torch.Tensor, generator: Generators) -> tuple[list[torch.Tensor], torch.Tensor]:
        model, quantizer, options = self.transformer, self.vqvae.quantize, self.options
        batch, num_scales = labels.shape[0], len(model.patch_nums)
        null = torch.full_like(labels, model.num_classes)
        cond_BD = model.class_emb(torch.cat((labels, null)))  # (2B, C)
        # fast_cpu: each block's AdaLN parameters once, not once per scale (the same numbers)
        modulations = model.block_modulations(cond_BD) if self.uses_fast_cpu(labels.device) else None
        side = model.patch_nums[-1]
        f_hat = cond_BD.new_zeros(batch, model.z_channels, side, side)
        tokens = model.first_scale_tokens(cond_BD)  # (2B, first_l, C)
        caches = model.new_kv_caches(self.extra_cache_room) if options.use_kv_cache else None
        previous_tokens: list[torch.Tensor] = []  # the uncached path re-runs them every scale
        indices: list[torch.Tensor] = []
        for scale_index, pn in enumerate(model.patch_nums):
            length = pn * pn
            if options.use_kv_cache:
                x, cache_tokens, attn_bias = self.scale_inputs(scale_index, tokens)
                hidden = model.run_blocks(x, cond_BD, attn_bias=attn_bias, kv_caches=caches, cache_tokens=cache_tokens,
                                          logits_fns=self.logits_fns(scale_index), modulations=modulations)
                self.on_scale_hidden(scale_index, hidden)
                hidden = hidden[:, :length]
            else:
                previous_tokens.append(tokens)
                end = model.scale_ranges[scale_index][1]
                prefix = torch.cat(previous_tokens, dim=1)
                hidden = model.run_blocks(prefix, cond_BD, attn_bias=model.attn_bias_for_masking[:, :, :end, :end],
                                          modulations=modulations)
                hidden = hidden[:, end - length:]
            logits = model.logits(hidden, cond_BD).float()  # (2B, l, V)
            t = guidance_weight(options.cfg, scale_index, num_scales)
            logits = (1 + t) * logits[:batch] - t * logits[batch:]
            scale_indices = sample_tokens(logits, options.top_k, options.top_p, generator)
            indices.append(scale_indices)
            with torch.autocast(labels.device.type, enabled=False):  # the residual sum stays float32
                f_hat = f_hat.float() + quantizer.upsampled_contribution(
                    scale_index, quantizer.embed_indices(scale_indices, pn), side).float()
            if scale_index + 1 < num_scales:
                next_input = quantizer.next_scale_input(f_hat, scale_index + 1)
                tokens = model.scale_tokens(scale_index + 1, next_input).repeat(2, 1, 1)
        return indices, f_hat

    def rows_are_independent(self) -> bool:
        """Whether a batch can be sampled in parts (no state gathered over the whole batch)."""
        return True

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1], float32."""
        chunk = self.options.cpu_chunk
        if (self.uses_fast_cpu(labels.device) and generator is not None and not isinstance(generator, torch.Generator)
                and 0 < chunk < len(labels) and self.rows_are_independent()):  # one generator per row: the same draws
            return torch.cat([self.sample(labels[start:start + chunk], generator[start:start + chunk])
                              for start in range(0, len(labels), chunk)])
        indices, f_hat = self._sample(labels, generator)
        if self.uses_fast_cpu(labels.device):  # f_hat is what indices_to_image would sum, in the same order
            images = torch.cat([self.vqvae.fhat_to_image(part, fast=True) for part in f_hat.split(CPU_DECODE_CHUNK)])
        else:
            with autocast(labels.device, self.options.amp):
                images = self.vqvae.indices_to_image(indices)
        return images.float().add(1).mul(0.5)


def sample_images(transformer: VARTransformer, vqvae: VQVAE, labels: Sequence[int] | torch.Tensor, *,
                  cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96, generator: Generators = None,
                  use_kv_cache: bool = True) -> torch.Tensor:
    """Convenience wrapper: images (B, 3, H, W) in [0, 1] for the given class labels."""
    device = next(transformer.parameters()).device
    labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    options = SamplingOptions(cfg=cfg, top_k=top_k, top_p=top_p, use_kv_cache=use_kv_cache)
    return ScaleSampler(transformer, vqvae, options).sample(labels, generator)
