"""Loaded models as the batcher calls them: numpy and onnxruntime, no HTTP, no torch.

``contract.py`` is the one runtime interface; ``student.py`` (featurizer + memory-mapped shards + ONNX
head) and ``teacher.py`` (tokenizers + ONNX transformer) implement it. ``onnx_session.py``,
``gather_graph.py`` and ``devices.py`` are how they open sessions and pick execution providers;
``explain.py`` computes a student's exact leave-one-out explanations. A new kind of model is a runtime here.
"""
