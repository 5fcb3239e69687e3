"""The tiny-model maker for scripts/make_demo_models.py, which imports it from here; it lives in
tests/helpers/hf_models.py with the suite's other support modules."""

from tests.helpers.hf_models import TINY_CONFIG, make_random_model

__all__ = ["TINY_CONFIG", "make_random_model"]
