"""The smollm3 family: SmolLM3, llama-shaped with RoPE left out of some layers."""
