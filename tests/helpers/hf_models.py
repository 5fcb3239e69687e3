"""Tiny random Hugging Face models made by transformers from a config (no download).

Used by the equivalence tests and by scripts/make_demo_models.py, so that the demo models of the
newer families are made exactly as the tested ones: transformers writes the checkpoint, our
converter turns it into an MLC model directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The sizes of every tiny model (transformers' key names; each family maps them to its own).
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 512,
}


def make_random_model(
    config_class: str, model_class: str, config: dict[str, Any], seed: int
) -> torch.nn.Module:
    """A transformers model with random weights scaled so logits are O(1..10), not ~0.

    Weights depend only on the seed and the torch version (pinned in the test extra).
    """
    import torch  # here: importing TINY_CONFIG must not need torch
    import transformers

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
