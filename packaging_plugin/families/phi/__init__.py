"""The phi family: Phi-2 and Phi-1.5 (`phi`), and the legacy `phi-msft` checkpoints."""
