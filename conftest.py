"""Repository-level pytest setup.

The plugin reaches pytest through its `pytest11` entry point once the project is installed
(`pip install -e .`). Registering it here as well would load it twice, so this file only does so
for a source tree that is not installed.
"""

from importlib.metadata import entry_points

_installed = any(ep.name == "mlc_package" for ep in entry_points(group="pytest11"))

pytest_plugins = [] if _installed else ["packaging_plugin.plugin"]
