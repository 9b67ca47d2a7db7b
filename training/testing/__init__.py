"""Tiny real models built with the real pipeline code, in seconds: for tests, demos and benchmarks.

- ``quick.py``: a tiny student (and teacher) trained and exported by the real steps.
- ``tiny_models.py``: random-weight Hugging Face classifier checkpoints built offline (also the
  RoBERTa-Large shape the bench times).
"""
