"""The gpt_neox family: GPT-NeoX, Pythia and RedPajama-INCITE."""
