"""`mlc-app-config.json`: the list of models an MLC app offers, as MLC writes it."""

from __future__ import annotations

import json
from pathlib import Path

from packaging_plugin.config.package_config import ModelEntry

APP_CONFIG_NAME = "mlc-app-config.json"
HF_WEB = "https://huggingface.co/"


def app_config_entry(entry: ModelEntry, model_lib: str) -> dict[str, object]:
    """One model's record. A bundled model always gets `model_path` (its folder in the bundle).

    MLC writes `model_url` for bundled models on Android and turns local paths into broken URLs;
    the app finds bundled weights by `model_path`, so that is what we write on every device.
    """
    record: dict[str, object] = {"model_id": entry.model_id, "model_lib": model_lib}
    if entry.bundle_weight:
        record["model_path"] = entry.model_id
    elif entry.hf_repo is not None:
        revision = entry.hf_revision or "main"
        url = HF_WEB + entry.hf_repo
        record["model_url"] = url if entry.hf_revision is None else f"{url}/tree/{revision}"
    else:
        raise ValueError(
            f"model {entry.model_id!r} is a local directory without bundle_weight: the app would "
            "have no way to obtain its weights"
        )
    record["estimated_vram_bytes"] = entry.estimated_vram_bytes
    return record


def write_app_config(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_list": records}, indent=2) + "\n")
