"""Names the config checks share: the files of a model directory and of a bundle, the keys of
mlc-package-config.json at its top level and in each model_list entry, and the name of the
pytest node of the package-level steps (which no model_id may take).
"""

from __future__ import annotations

PACKAGE_NODE_NAME = "package"

CHAT_CONFIG_NAME = "mlc-chat-config.json"
HF_CONFIG_NAME = "config.json"
APP_CONFIG_NAME = "mlc-app-config.json"

TOP_LEVEL_KEYS = ("device", "model_list", "model_lib_path_for_prepare_libs")
ENTRY_KEYS = (
    "model",
    "model_id",
    "estimated_vram_bytes",
    "bundle_weight",
    "overrides",
    "model_lib",
    "quantization",
)
