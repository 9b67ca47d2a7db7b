"""The Open Inference Protocol over gRPC (KServe's GRPCInferenceService), beside the HTTP app.

``kserve.proto`` is the interface; ``kserve_pb2*.py`` are generated from it by ``make proto`` and
committed, so the service needs no code generator at install or run time (only grpcio and protobuf).
"""
