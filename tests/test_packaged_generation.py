"""Each family added for MLC's own example apps generates transformers' tokens from a PACKAGED
linux library, straight from a Hugging Face checkpoint.

Tiny random models are made by transformers (phi, gpt_neox, gemma3_text, smollm3), saved as
checkpoints, and packaged for linux in ONE run (-n 2), each entry converted on the fly with a
`quantization` key: q0f32 and q4f32_1 for every family, and q3f16_1 (phi) and q3f16_0 (gpt_neox)
for the 3-bit layouts. The run's smoke step generates 16 greedy tokens from the packaged shared
library. Those tokens are checked against transformers running the weights the package bundles
(dequantized for q4 and q3), teacher-forced on the same tokens:

- float32: every one of the 16 tokens is transformers' argmax;
- float16 (q3): the logits of the model's own library, run again here, agree within the float16
  tolerance, and a token may differ from transformers' argmax only at a near-tie (its best two
  logits closer than twice that step's error). The max logit difference is recorded.

The smoke prompt is 30 tokens: longer than Gemma-3's window here (16), so it is prefilled in
chunks and its later tokens attend past the window on the sliding layers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from packaging_plugin.config.devices import system_lib_prefix
from packaging_plugin.run.smoke import DEFAULT_TOKENS
from tests.helpers.hf_models import TINY_CONFIG, make_random_model
from tests.helpers.reference import dequantized_model
from tests.helpers.runtime import KVSession, load_library

pytestmark = pytest.mark.slow  # one packaging run of 11 models

GEMMA3_WINDOW = 16  # the 30-token prompt is prefilled in two chunks of at most 15
# (transformers config class, model class, config on top of TINY_CONFIG)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "phi": ("PhiConfig", "PhiForCausalLM", {"partial_rotary_factor": 0.4}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"rotary_pct": 0.25}),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "num_hidden_layers": 3,
            "sliding_window_pattern": 2,
            "sliding_window": GEMMA3_WINDOW,
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0},
            },
        },
    ),
    "smollm3": (
        "SmolLM3Config",
        "SmolLM3ForCausalLM",
        {"num_hidden_layers": 3, "no_rope_layer_interval": 2},
    ),
}
QUANTIZATIONS = {
    "phi": ("q0f32", "q4f32_1", "q3f16_1"),
    "gpt_neox": ("q0f32", "q4f32_1", "q3f16_0"),
    "gemma3_text": ("q0f32", "q4f32_1"),
    "smollm3": ("q0f32", "q4f32_1"),
}
TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
REL_TOL_F16 = 1e-2  # of the largest |logit|, as in the equivalence tests


def package_checkpoints(app: Path, cache: Path) -> tuple[dict[str, torch.nn.Module], Path]:
    """Checkpoints made by transformers in `app/models/`, packaged for linux into `app/dist`."""
    models, entries = {}, []
    for seed, (family, (config_class, model_class, extra)) in enumerate(FAMILIES.items()):
        config = {**TINY_CONFIG, **TOKENS, **extra}
        models[family] = make_random_model(config_class, model_class, config, seed=100 + seed)
        models[family].save_pretrained(app / "models" / family)
        for quant in QUANTIZATIONS[family]:
            model_id = f"{family}-{quant}"
            entries.append(
                {
                    "model": f"./models/{family}",
                    "model_id": model_id,
                    "quantization": quant,
                    "model_lib": model_id.replace("-", "_"),
                    "estimated_vram_bytes": 100_000_000,
                    "bundle_weight": True,
                }
            )
    config = app / "mlc-package-config.json"
    config.write_text(json.dumps({"device": "linux", "model_list": entries}, indent=2))
    env = {**os.environ, "MLC_LLM_HOME": str(cache)}
    env.pop("MLC_JIT_POLICY", None)
    args = [f"--package-config={config}", f"--package-output={app / 'dist'}", "-n", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-p", "no:randomly", "-q"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    return models, app / "dist"


def test_every_new_family_generates_transformers_tokens_from_its_packaged_library(
    tmp_path: Path, shared_compile_cache: Path, record_property: Callable[[str, object], None]
) -> None:
    hf_models, dist = package_checkpoints(tmp_path / "app", shared_compile_cache)
    report = json.loads((dist / "package-report.json").read_text())
    entries = {model["model_id"]: model for model in report["models"]}
    for family, quants in QUANTIZATIONS.items():
        for quant in quants:
            figures = check_build(hf_models[family], entries[f"{family}-{quant}"], dist, tmp_path)
            for name, value in figures.items():
                record_property(f"{family}-{quant}.{name}", value)


def check_build(
    hf_model: torch.nn.Module, entry: dict[str, Any], dist: Path, work: Path
) -> dict[str, float]:
    """One packaged model against transformers; its float16 figures (empty in float32)."""
    model_id = entry["model_id"]
    quant = model_id.rsplit("-", 1)[1]
    smoke = entry["smoke"]
    prompt, generated = smoke["prompt_ids"], smoke["generated_ids"]
    assert len(generated) == DEFAULT_TOKENS == 16
    if model_id.startswith("gemma3"):
        assert len(prompt) > GEMMA3_WINDOW
    bundle = dist / "bundle" / model_id
    reference = dequantized_model(hf_model, bundle, quant)
    with torch.no_grad():
        full = reference(torch.tensor([prompt + generated])).logits[0].numpy()
    expected = full[len(prompt) - 1 : len(prompt) - 1 + len(generated)]
    chosen = expected.argmax(axis=-1)
    if "f16" not in quant:
        assert generated == chosen.tolist(), model_id
        return {}
    # float16: the model's own library, run here on the same prompt, gives the packaged tokens,
    # and its logits say how far float16 is from the float32 reference at each step.
    lib = load_library(
        Path(entry["library_path"]), system_lib_prefix(entry["model_lib"]), bundle, work / model_id
    )
    session = KVSession(lib, max_total_seq_len=len(prompt) + len(generated) + 1)
    session.add(0)
    tokens, logits = session.greedy(0, prompt, len(generated))
    assert tokens == generated, model_id
    error = np.abs(logits[:-1] - expected).max(axis=-1)
    scale = float(np.abs(expected).max())
    print(f"{model_id}: max |logit diff| {error.max():.2e}, max |logit| {scale:.2f}")
    assert error.max() <= REL_TOL_F16 * scale, model_id
    top_two = np.sort(expected, axis=-1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] > 2 * error
    assert np.asarray(generated)[decided].tolist() == chosen[decided].tolist(), model_id
    return {"max_abs_logit_diff": float(error.max()), "near_ties": int((~decided).sum())}
