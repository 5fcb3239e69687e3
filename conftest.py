"""Repository-level pytest configuration.

The plugin reaches pytest through its `pytest11` entry point once the project is installed
(`bash scripts/setup` installs it editable), so nothing registers it here: registering it again
would load it twice. This file must also stay free of `pytest_plugins`, because a run from another
directory with `--package-config=<this repo>/configs/...` loads it as a non-root conftest, where
pytest refuses that variable.
"""
