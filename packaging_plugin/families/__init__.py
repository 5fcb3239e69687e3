"""The model families: the one list of supported `model_type`s, and what each family provides.

Each family is a folder: `config.py` (TVM-free: its `MODEL_TYPES` rules, defaults and the
Hugging Face config.json -> MLC model_config), `mapping.py` (TVM-free: checkpoint tensors -> MLC
parameters) and `model.py` (the `tvm.relax.frontend.nn` model, imported only when compiling).
`_FAMILIES` below is the registry; everything else asks it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from packaging_plugin.families.base.config import ModelTypeRules
from packaging_plugin.families.base.mapping import ParamPlan
from packaging_plugin.families.gemma import config as gemma_config
from packaging_plugin.families.gemma import mapping as gemma_mapping
from packaging_plugin.families.gemma3 import config as gemma3_config
from packaging_plugin.families.gemma3 import mapping as gemma3_mapping
from packaging_plugin.families.gpt2 import config as gpt2_config
from packaging_plugin.families.gpt2 import mapping as gpt2_mapping
from packaging_plugin.families.gpt_neox import config as gpt_neox_config
from packaging_plugin.families.gpt_neox import mapping as gpt_neox_mapping
from packaging_plugin.families.llama import config as llama_config
from packaging_plugin.families.llama import mapping as llama_mapping
from packaging_plugin.families.phi import config as phi_config
from packaging_plugin.families.phi import mapping as phi_mapping
from packaging_plugin.families.phi3 import config as phi3_config
from packaging_plugin.families.phi3 import mapping as phi3_mapping
from packaging_plugin.families.smollm3 import config as smollm3_config
from packaging_plugin.families.smollm3 import mapping as smollm3_mapping

# The registry: each family's config and mapping module, in the order errors list model_types.
_FAMILIES: tuple[tuple[ModuleType, ModuleType], ...] = (
    (llama_config, llama_mapping),
    (gemma_config, gemma_mapping),
    (gemma3_config, gemma3_mapping),
    (phi3_config, phi3_mapping),
    (gpt2_config, gpt2_mapping),
    (phi_config, phi_mapping),
    (gpt_neox_config, gpt_neox_mapping),
    (smollm3_config, smollm3_mapping),
)

_BY_MODEL_TYPE: Mapping[str, tuple[ModuleType, ModuleType]] = {
    model_type: modules for modules in _FAMILIES for model_type in modules[0].MODEL_TYPES
}
# model_type values (as in mlc-chat-config.json) that this packager compiles and converts.
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)
FAMILY_NAMES: tuple[str, ...] = tuple(config.FAMILY for config, _ in _FAMILIES)


def family_of(model_type: str) -> str:
    """The folder of the family that serves `model_type` (KeyError if none)."""
    return _BY_MODEL_TYPE[model_type][0].FAMILY


def rules(model_type: str) -> ModelTypeRules:
    """The size rules of a supported `model_type` (KeyError if unsupported)."""
    return _BY_MODEL_TYPE[model_type][0].MODEL_TYPES[model_type]


def hf_model_config(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """MLC's model_config for the family (keys of MLC's config dataclass), from config.json."""
    return _BY_MODEL_TYPE[model_type][0].hf_model_config(hf, model_type)


def plan_params(model_type: str, model_config: dict[str, Any]) -> list[ParamPlan]:
    """MLC's parameters in the order of the compiled model's packed tuple (`_metadata.params`)."""
    return _BY_MODEL_TYPE[model_type][1].plan_params(model_type, model_config)


def _model_module_name(family: str) -> str:
    return f"packaging_plugin.families.{family}.model"


# Every family's nn model module: what the compile child may import (and its cache key covers).
MODEL_MODULES: tuple[str, ...] = tuple(_model_module_name(name) for name in FAMILY_NAMES)


def model_module(model_type: str) -> ModuleType:
    """The family's nn model module (imports TVM): `create(model_type, config, quant, target)`."""
    return importlib.import_module(_model_module_name(family_of(model_type)))
