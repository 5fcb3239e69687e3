"""pytest-mlc-package: package LLMs for on-device apps as a pytest run."""

__version__ = "0.1.0"
