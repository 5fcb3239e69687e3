"""transformers running the weights our converter stored: the reference a packaged library is
compared with (quantization error is the converter's choice, not a runtime difference)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from packaging_plugin.families import plan_params
from packaging_plugin.quantization.packing import dequantize_groups
from packaging_plugin.quantization.schemes import get_quantization
from tests.helpers.runtime import read_tensor_cache

RENAMED_ON_LOAD = {"embed_out.weight": "lm_head.weight"}  # GPTNeoXForCausalLM


def module_name(source: str, state: dict[str, torch.Tensor]) -> str:
    """The name in the model's state_dict of the checkpoint tensor `source`."""
    return source if source in state else RENAMED_ON_LOAD.get(source, source)


def dequantized_model(
    hf_model: torch.nn.Module, model_dir: Path, quantization: str
) -> torch.nn.Module:
    """transformers with the weights the converter stored (dequantized for q4).

    Each quantized MLC parameter is dequantized and split back into the checkpoint tensors it
    was made of (the converter's own plan: concatenations along axis 0).
    """
    if quantization == "q0f32":
        return hf_model
    stored = read_tensor_cache(model_dir)
    chat = json.loads((model_dir / "mlc-chat-config.json").read_text())
    quant = get_quantization(quantization)
    original = hf_model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for plan in plan_params(chat["model_type"], chat["model_config"]):
        base = plan.name.removesuffix(".weight")
        if f"{base}.q_weight" not in stored:
            continue
        sources = [module_name(source, original) for source in plan.sources]
        weight = dequantize_groups(
            stored[f"{base}.q_weight"],
            stored[f"{base}.q_scale"],
            quant.layout,
            # Without the padding of the last group (q3's groups of 40 rarely fit).
            in_features=original[sources[0]].shape[0 if plan.transposed else -1],
            dtype=np.float32,
            # The KN layouts (q4f16_0, q3f16_0) transpose linear weights; embeddings stay NK.
            transposed=quant.linear_transposed and not plan.embedding,
        )
        if plan.deinterleave:  # back to the checkpoint's row order: [p, b, n] -> [b, p, n]
            blocks, parts = plan.deinterleave
            runs = weight.reshape(parts, blocks, -1, weight.shape[-1]).swapaxes(0, 1)
            weight = runs.reshape(weight.shape)
        axis = -1 if plan.transposed else 0  # GPT-2's Conv1D weights are stored [in, out]
        rows = np.cumsum([original[source].shape[axis] for source in sources])[:-1]
        for source, part in zip(sources, np.split(weight, rows), strict=True):
            state[source] = torch.from_numpy((part.T if plan.transposed else part).copy())
    model = copy.deepcopy(hf_model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert state and not set(state) & set(missing)  # every quantized weight replaced one
    return model
