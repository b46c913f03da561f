"""Using a trained run: text generation (sampling), scoring a text (scoring), and `CharLM`, the Python API
over both (charlm)."""
