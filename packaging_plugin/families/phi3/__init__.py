"""The phi3 family: Phi-3, Phi-3.5 and Phi-4-mini."""
