"""Where the repository and its demo models are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_MODELS = REPO / "configs" / "models"
