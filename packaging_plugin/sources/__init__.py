"""Where a model comes from: HF:// downloads, local folders and Hugging Face checkpoints (converted
and cached), with their weights verified.
"""
