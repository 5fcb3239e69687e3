"""The llama family: llama, mistral, qwen2 and qwen3."""
