"""VAR with one learnable class token per scale and a shared classifier head (paper section 3.3).

`ClassTokenVAR` is a `VARTransformer` plus `cls_tokens.{si}` (1, 1, C) and `class_head`
(Linear(C, num_classes)): its state dict is a superset of the official layout, and a plain VAR
checkpoint loads into it with freshly initialised (seeded) class tokens.

Class tokens carry no position or level embedding. The classifier reads the last block's attention
output (after proj, before gamma and the residual) at the class-token positions.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ddbench.core.errors import CheckpointError
from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import VARConfig
from ddbench.generators.var.loading import Source, load_var, read_state_dict
from ddbench.generators.var.transformer import VARTransformer
from ddbench.generators.var.vqvae import VQVAE
from ddbench.methods.hieramp.masks import class_token_positions, image_token_positions, training_attention_bias

CLASS_TOKEN_PREFIXES = ("cls_tokens.", "class_head.")


class ClassTokenVAR(VARTransformer):
    """Next-scale transformer with per-scale class tokens; `class_loss_weight` is lambda (1.0)."""

    def __init__(self, config: VARConfig, vocab_size: int, z_channels: int) -> None:
        super().__init__(config, vocab_size, z_channels)
        width = config.embed_dim
        self.cls_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, width)) for _ in self.patch_nums)
        self.class_head = nn.Linear(width, config.num_classes)
        # not persistent: derived from the pyramid, so checkpoints keep the official keys only
        self.register_buffer("cls_attn_bias", training_attention_bias(self.patch_nums), persistent=False)
        self.register_buffer("cls_positions", class_token_positions(self.patch_nums), persistent=False)
        self.register_buffer("image_positions", image_token_positions(self.patch_nums), persistent=False)

    def init_class_tokens(self, generator: Optional[torch.Generator] = None) -> None:
        """Class tokens and head drawn like the other embeddings (trunc. normal, std sqrt(1/3C))."""
        std = math.sqrt(1 / self.config.embed_dim / 3)
        with torch.no_grad():
            for token in self.cls_tokens:
                nn.init.trunc_normal_(token, std=std, a=-2 * std, b=2 * std, generator=generator)
            nn.init.trunc_normal_(self.class_head.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
            nn.init.zeros_(self.class_head.bias)

    def init_weights(self, generator: Optional[torch.Generator] = None) -> None:
        super().init_weights(generator)
        self.init_class_tokens(generator)

    def class_token_batch(self, scale_index: int, batch: int) -> torch.Tensor:
        """(batch, 1, C) copies of the class token of one scale."""
        return self.cls_tokens[scale_index].expand(batch, 1, -1)

    def interleave(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) pyramid tokens -> (B, L + N, C) with each scale's class token after its tokens."""
        pieces = []
        for scale_index, (start, end) in enumerate(self.scale_ranges):
            pieces += [x[:, start:end], self.class_token_batch(scale_index, x.shape[0])]
        return torch.cat(pieces, dim=1)

    def forward_with_class_logits(self, labels: torch.Tensor, teacher_input: torch.Tensor,
                                  drop_generator: Optional[torch.Generator] = None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: (token logits (B, L, V), class logits (B, N, num_classes)).

        Labels are dropped to the null class at cond_drop_rate in training mode (for the tokens'
        conditioning only; the class loss uses the true labels).
        """
        cond_labels = labels
        if self.training and self.config.cond_drop_rate > 0:
            cond_labels = self.drop_labels(labels, drop_generator)
        cond_BD = self.class_emb(cond_labels)
        x = self.interleave(self.embed_sequence(cond_BD, teacher_input))
        captured: list[torch.Tensor] = []
        handle = self.blocks[-1].attn.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            hidden = self.run_blocks(x, cond_BD, attn_bias=self.cls_attn_bias)
        finally:
            handle.remove()
        class_logits = self.class_head(captured[0][:, self.cls_positions])  # (B, N, num_classes)
        token_logits = self.logits(hidden[:, self.image_positions], cond_BD)  # (B, L, V)
        return token_logits, class_logits

    def forward(self, labels: torch.Tensor, teacher_input: torch.Tensor,
                drop_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Token logits (B, L, V) of the class-token model (same signature as VARTransformer)."""
        return self.forward_with_class_logits(labels, teacher_input, drop_generator)[0]

    def hidden_states(self, labels: torch.Tensor, teacher_input: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, L, C) at the image positions, without label dropping (eval)."""
        cond_BD = self.class_emb(labels)
        x = self.interleave(self.embed_sequence(cond_BD, teacher_input))
        return self.run_blocks(x, cond_BD, attn_bias=self.cls_attn_bias)[:, self.image_positions]


def class_token_loss(token_logits: torch.Tensor, class_logits: torch.Tensor, target_tokens: torch.Tensor,
                     labels: torch.Tensor, class_loss_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Token CE + lambda * class CE with the labels repeated per scale; (loss, detached metrics)."""
    token_loss = F.cross_entropy(token_logits.flatten(0, 1), target_tokens.flatten())
    num_scales = class_logits.shape[1]
    class_loss = F.cross_entropy(class_logits.flatten(0, 1), labels.repeat_interleave(num_scales))
    metrics = {"token_loss": token_loss.detach(), "class_loss": class_loss.detach(),
               "class_accuracy": (class_logits.argmax(-1) == labels[:, None]).float().mean()}
    return token_loss + class_loss_weight * class_loss, metrics


def load_class_token_var(source: Source, vqvae: VQVAE | Source, device: str | torch.device = "cpu",
                         init_seed: int = 0, require_class_tokens: bool = False) -> tuple[ClassTokenVAR, VQVAE, bool]:
    """(model, vqvae, had_class_tokens) in eval mode from a HIERAMP or a plain VAR checkpoint.

    A plain checkpoint gets class tokens and head drawn from `init_seed`; `require_class_tokens`
    turns that case into a CheckpointError (distilling with untrained class tokens is meaningless).
    """
    state_dict, where = read_state_dict(source)
    extra = {key: state_dict.pop(key) for key in list(state_dict) if key.startswith(CLASS_TOKEN_PREFIXES)}
    plain, vqvae = load_var(state_dict, vqvae, device="cpu")  # validates the official layout and the VQ-VAE
    model = ClassTokenVAR(plain.config, plain.vocab_size, plain.z_channels)
    model.init_class_tokens(torch_generator(init_seed, "hieramp-class-token-init"))
    model.load_state_dict(plain.state_dict(), strict=False)
    del plain
    if extra:
        expected = {key: value for key, value in model.state_dict().items() if key.startswith(CLASS_TOKEN_PREFIXES)}
        missing = sorted(set(expected) - set(extra))
        unexpected = sorted(set(extra) - set(expected))
        misshaped = [f"{key} {tuple(extra[key].shape)} != {tuple(value.shape)}" for key, value in expected.items()
                     if key in extra and extra[key].shape != value.shape]
        if missing or unexpected or misshaped:
            raise CheckpointError(f"{where}: class-token keys do not match the model (missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]}, wrong shapes {misshaped[:4]}); the file is from "
                                  "another pyramid or class count")
        model.load_state_dict({key: value.float() for key, value in extra.items()}, strict=False)
    elif require_class_tokens:
        raise CheckpointError(f"{where} is a plain VAR checkpoint without class tokens; fine-tune it first with "
                              "`ddbench hieramp finetune --from <it> --dataset <name>`")
    return model.to(device).eval().requires_grad_(False), vqvae.to(device), bool(extra)
