"""The gemma3 family: Gemma-3 text models (gemma3_text) and the text model of gemma3."""
