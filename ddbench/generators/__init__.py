"""Generative backbones shared by methods: `var` (multi-scale VQ-VAE + next-scale transformer)."""
