"""Support modules of the test suite: what more than one test module uses.

Test modules import from here, never from one another or from conftest.py (which holds the
fixtures only); tests/test_suite_layout.py checks it.
"""
