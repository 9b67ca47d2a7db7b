"""The core that training and serving share: the featurizer, the model format (reader and writer),
atomic file writes, the cascade rule and the project's error base.

It depends on numpy, scipy-free numpy code and pydantic only (no torch, no onnxruntime), so both sides
can import it; nothing here imports ``training`` or ``service``.
"""
