"""The phi family's converter: transformers' Phi-2 checkpoints (`phi`) and the legacy remote-code
ones (`phi-msft`) become the same MLC parameters, in MLC's names and packed order; what the
family cannot run is refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from packaging_plugin.sources.convert import ConvertError, convert_checkpoint
from tests.helpers.hf_models import phi_msft_checkpoint
from tests.helpers.runtime import read_tensor_cache

HIDDEN, HEADS, LAYERS, INNER, VOCAB, POSITIONS = 64, 4, 2, 96, 80, 128


def phi_config(**overrides: Any) -> dict[str, Any]:
    """A transformers PhiConfig's config.json (transformers 4 spelling unless overridden)."""
    return {
        "model_type": "phi",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INNER,
        "vocab_size": VOCAB,
        "max_position_embeddings": POSITIONS,
        "partial_rotary_factor": 0.4,
        "rope_theta": 10000.0,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu_new",
        "qk_layernorm": False,
        "tie_word_embeddings": False,
        **overrides,
    }


def phi_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A Phi-2-shaped checkpoint in transformers' names."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        for name, (rows, cols) in {
            "self_attn.q_proj": (HIDDEN, HIDDEN),
            "self_attn.k_proj": (HIDDEN, HIDDEN),
            "self_attn.v_proj": (HIDDEN, HIDDEN),
            "self_attn.dense": (HIDDEN, HIDDEN),
            "mlp.fc1": (INNER, HIDDEN),
            "mlp.fc2": (HIDDEN, INNER),
        }.items():
            tensors[f"{p}.{name}.weight"] = w(rows, cols)
            tensors[f"{p}.{name}.bias"] = w(rows)
        tensors |= {
            f"{p}.input_layernorm.weight": w(HIDDEN),
            f"{p}.input_layernorm.bias": w(HIDDEN),
        }
    tensors |= {
        "model.final_layernorm.weight": w(HIDDEN),
        "model.final_layernorm.bias": w(HIDDEN),
        "lm_head.weight": w(VOCAB, HIDDEN),
        "lm_head.bias": w(VOCAB),
    }
    return tensors


def write(folder: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / "model.safetensors")
    return folder


def chat(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "mlc-chat-config.json").read_text())


def test_phi_and_phi_msft_checkpoints_become_the_same_mlc_parameters(tmp_path: Path) -> None:
    tensors = phi_tensors()
    phi = convert_checkpoint(
        write(tmp_path / "phi", phi_config(), tensors), tmp_path / "a", "q0f32"
    )
    msft_tensors, msft_config = phi_msft_checkpoint(tensors, phi_config())
    assert msft_config["rotary_dim"] == 6  # 0.4 of 16
    msft = convert_checkpoint(
        write(tmp_path / "msft", msft_config, msft_tensors), tmp_path / "b", "q0f32"
    )
    a, b = read_tensor_cache(phi), read_tensor_cache(msft)
    assert list(a)[:5] == [
        "transformer.embd.weight",
        "transformer.h.0.ln.weight",
        "transformer.h.0.ln.bias",
        "transformer.h.0.mixer.Wqkv.weight",
        "transformer.h.0.mixer.Wqkv.bias",
    ]
    assert list(a)[-4:] == [
        "lm_head.ln.weight",
        "lm_head.ln.bias",
        "lm_head.linear.weight",
        "lm_head.linear.bias",
    ]
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(
        a["transformer.h.1.mixer.Wqkv.bias"],
        np.concatenate([tensors[f"model.layers.1.self_attn.{x}_proj.bias"] for x in "qkv"]),
    )
    # Each keeps its own model_config spelling, as MLC writes it for the model_type.
    phi_cfg, msft_cfg = chat(phi)["model_config"], chat(msft)["model_config"]
    assert chat(phi)["model_type"] == "phi" and chat(msft)["model_type"] == "phi-msft"
    assert (phi_cfg["hidden_size"], phi_cfg["partial_rotary_factor"]) == (HIDDEN, 0.4)
    assert (msft_cfg["n_embd"], msft_cfg["rotary_dim"], msft_cfg["n_layer"]) == (HIDDEN, 6, 2)
    assert phi_cfg["context_window_size"] == msft_cfg["context_window_size"] == POSITIONS


def test_phi_q4_quantizes_every_linear_and_the_embedding_but_no_bias(tmp_path: Path) -> None:
    src = write(tmp_path / "phi", phi_config(), phi_tensors())
    stored = read_tensor_cache(convert_checkpoint(src, tmp_path / "out", "q3f16_1"))
    assert stored["transformer.embd.q_weight"].shape == (VOCAB, 8)  # 64 -> 2 groups of 40
    assert stored["lm_head.linear.q_weight"].shape == (VOCAB, 8)
    assert stored["transformer.h.0.mlp.fc2.q_scale"].shape == (HIDDEN, 3)  # 96 -> 3 groups
    assert stored["lm_head.linear.bias"].dtype == np.float16
    assert not any(name.endswith(".bias") and v.dtype == np.uint32 for name, v in stored.items())


def test_transformers_5_rope_parameters_give_the_same_model_config(tmp_path: Path) -> None:
    old = dict(phi_config())
    new = {k: v for k, v in old.items() if k not in ("rope_theta", "partial_rotary_factor")}
    new["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.4,
    }
    tensors = phi_tensors()
    a = convert_checkpoint(write(tmp_path / "4", old, tensors), tmp_path / "a", "q0f32")
    b = convert_checkpoint(write(tmp_path / "5", new, tensors), tmp_path / "b", "q0f32")
    assert chat(a)["model_config"] == chat(b)["model_config"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"qk_layernorm": True}, "qk_layernorm=True is not supported for phi"),
        ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
        ({"tie_word_embeddings": True}, "phi with tie_word_embeddings is not supported"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling is not supported"),
    ],
)
def test_what_phi_cannot_run_is_refused_naming_the_field(
    tmp_path: Path, override: dict[str, Any], message: str
) -> None:
    src = write(tmp_path / "phi", phi_config(**override), phi_tensors())
    with pytest.raises(ConvertError, match=message):
        convert_checkpoint(src, tmp_path / "out", "q0f32")
