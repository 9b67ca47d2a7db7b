"""The serving process (no torch): layers from the wire down, each importing only the ones below it.

- ``api/`` (HTTP: routes, schemas, middleware) and ``grpc_api/`` (the Open Inference Protocol over gRPC):
  the front ends. A route talks to the registry and its batchers only.
- ``repository/``: the loaded models of a process (``registry.py``) and the model repository on disk
  (``layout.py``; load and unload at run time: ``model_repository.py``).
- ``batcher.py``: dynamic batching, one queue and one worker per model.
- ``runtimes/``: a loaded model as numpy and onnxruntime (``contract.py``, ``student.py``, ``teacher.py``,
  explanations, devices).
- ``answers.py``, ``cascade_policy.py``, ``errors.py``: what an answer holds, which cascade rule a
  request runs under, and the one error hierarchy with its status codes.
- ``ops/``: operations: logging, metrics, the drain sequence, the health check, a child server process.
- ``settings.py``: the process's one settings object; ``app.py``: the app factory; ``__main__.py``: start it.
"""
