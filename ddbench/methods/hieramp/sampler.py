"""Next-scale sampling with per-scale class tokens and optional amplification.

Built on the generator's `ScaleSampler` hooks: `scale_inputs` appends the scale's class token after
its image tokens (attended, never cached) with the step mask; `logits_fns` installs the
`ScaleAmplifier` in the chosen blocks only, so every other block stays on the fused SDPA path.
"""

from __future__ import annotations

from typing import Optional

import torch

from ddbench.core.errors import ConfigError
from ddbench.generators.var.attention import LogitsFn
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.generators.var.vqvae import VQVAE
from ddbench.methods.hieramp.amplify import AmplificationPlan, FusedScaleAmplifier, SaliencyRecord, ScaleAmplifier
from ddbench.methods.hieramp.masks import sampling_step_bias
from ddbench.methods.hieramp.model import ClassTokenVAR


class ClassTokenSampler(ScaleSampler):
    """`var-cls` when `plan` is None, `hieramp` otherwise. Set `record` to keep saliency maps
    (read in `saliency_blocks`, the plan's blocks or the default second-to-last block)."""

    def __init__(self, transformer: ClassTokenVAR, vqvae: VQVAE, options: SamplingOptions = SamplingOptions(),
                 plan: Optional[AmplificationPlan] = None, record: Optional[SaliencyRecord] = None,
                 saliency_blocks: Optional[tuple[int, ...]] = None) -> None:
        if not isinstance(transformer, ClassTokenVAR):
            raise ConfigError("ClassTokenSampler needs a ClassTokenVAR (load it with load_class_token_var)")
        if not options.use_kv_cache:
            raise ConfigError("class-token sampling runs on the KV cache (class tokens are appended per step); "
                              "use ClassTokenVAR.hidden_states for a full teacher-forced pass")
        super().__init__(transformer, vqvae, options)
        self.plan, self.record = plan, record
        depth = len(transformer.blocks)
        self.saliency_blocks = saliency_blocks or (plan.blocks if plan else ((depth - 2) % depth,))
        self._biases: dict[tuple[int, torch.device], torch.Tensor] = {}

    def rows_are_independent(self) -> bool:
        return self.record is None  # a saliency record keeps one entry per batch

    def step_bias(self, scale_index: int, device: torch.device) -> torch.Tensor:
        key = (scale_index, device)
        if key not in self._biases:
            self._biases[key] = sampling_step_bias(self.transformer.patch_nums, scale_index).to(device)
        return self._biases[key]

    def scale_inputs(self, scale_index: int, tokens: torch.Tensor):
        class_token = self.transformer.class_token_batch(scale_index, tokens.shape[0])
        x = torch.cat((tokens, class_token), dim=1)  # (2B, l + 1, C)
        return x, tokens.shape[1], self.step_bias(scale_index, tokens.device)

    def logits_fns(self, scale_index: int) -> Optional[dict[int, LogitsFn]]:
        amplify = self.plan is not None and self.plan.amplifies(scale_index)
        if not amplify and self.record is None:
            return None  # every block on the fast path
        start, end = self.transformer.scale_ranges[scale_index]
        blocks = self.plan.blocks if amplify else self.saliency_blocks[:1]
        # fast_cpu: the fused attention with the amplification in its mask (only the class row explicit)
        amplifier = FusedScaleAmplifier if self.uses_fast_cpu(self.transformer.pos_start.device) else ScaleAmplifier
        first = amplifier(self.plan, scale_index, start, end - start, self.record)
        rest = amplifier(self.plan, scale_index, start, end - start, None)
        return {block: first if i == 0 else rest for i, block in enumerate(blocks)}
