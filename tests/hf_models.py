"""Tiny random Hugging Face models made by transformers from a config (no download).

Used by the equivalence tests and by scripts/make_demo_models.py, so that the demo models of the
newer families are made exactly as the tested ones: transformers writes the checkpoint, our
converter turns it into an MLC model directory.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers


def make_random_model(
    config_class: str, model_class: str, config: dict[str, Any], seed: int
) -> torch.nn.Module:
    """A transformers model with random weights scaled so logits are O(1..10), not ~0.

    Weights depend only on the seed and the torch version (pinned in the test extra).
    """
    hf_config = getattr(transformers, config_class)(**config)
    hf_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # RMSNorm / LayerNorm
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.3 * torch.randn_like(p))
            else:  # fan-in scaled, so activations stay O(1) through the layers
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model
