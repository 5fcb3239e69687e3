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


# transformers' Phi names -> the legacy remote-code (`phi-msft`) names, which are MLC's own but
# for the embedding; q, k and v are fused into Wqkv there.
_PHI_MSFT_NAMES = {
    "self_attn.dense": "mixer.out_proj",
    "input_layernorm": "ln",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def phi_msft_checkpoint(
    tensors: dict[str, Any], config: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors and config.json of a transformers Phi checkpoint as a `phi-msft` one says them.

    `tensors`: name -> array (numpy or torch); `config`: transformers' config.json keys.
    """
    layers = int(config["num_hidden_layers"])
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = hidden // heads
    out = {"transformer.embd.wte.weight": tensors["model.embed_tokens.weight"]}
    for i in range(layers):
        hf, msft = f"model.layers.{i}", f"transformer.h.{i}"
        for suffix in ("weight", "bias"):
            parts = [tensors[f"{hf}.self_attn.{x}_proj.{suffix}"] for x in "qkv"]
            out[f"{msft}.mixer.Wqkv.{suffix}"] = _concat(parts)
            for ours, theirs in _PHI_MSFT_NAMES.items():
                out[f"{msft}.{theirs}.{suffix}"] = tensors[f"{hf}.{ours}.{suffix}"]
    for suffix in ("weight", "bias"):
        out[f"lm_head.ln.{suffix}"] = tensors[f"model.final_layernorm.{suffix}"]
        out[f"lm_head.linear.{suffix}"] = tensors[f"lm_head.{suffix}"]
    msft_config = {
        "model_type": "phi-msft",
        "n_embd": hidden,
        "n_head": heads,
        "n_head_kv": int(config.get("num_key_value_heads") or heads),
        "n_layer": layers,
        "n_inner": int(config["intermediate_size"]),
        "n_positions": int(config["max_position_embeddings"]),
        "rotary_dim": int(float(config.get("partial_rotary_factor", 0.5)) * head_dim),
        "vocab_size": int(config["vocab_size"]),
        "layer_norm_epsilon": float(config.get("layer_norm_eps", 1e-5)),
        "activation_function": "gelu_new",
        **{k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config},
    }
    return out, msft_config


def _concat(parts: list[Any]) -> Any:
    if hasattr(parts[0], "detach"):  # torch
        import torch

        return torch.cat(parts)
    import numpy as np

    return np.concatenate(parts)
