"""The gemma family: gemma and gemma2."""
