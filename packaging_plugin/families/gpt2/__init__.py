"""The gpt2 family."""
