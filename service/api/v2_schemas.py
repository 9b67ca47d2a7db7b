"""Bodies of the Open Inference Protocol (KServe v2) REST API, as far as this service uses it.

Reference: kserve/kserve docs/predict-api/v2/required_api.md, and Triton's binary tensor data and model
repository extensions. Tensor data may be flat or nested in row-major order; texts travel as a BYTES
tensor of JSON strings, or in binary after the JSON header (``parameters.binary_data_size``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictBool, StrictFloat, StrictInt, StrictStr

Parameters = dict[str, StrictStr | StrictInt | StrictFloat | StrictBool]


class RequestInput(BaseModel):
    """The one input of every model here: the texts, as BYTES of shape [n] or [n, 1]."""

    name: Literal["text"]
    shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=2)]
    datatype: Literal["BYTES"]
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        None, min_length=1,
        description="The texts, flat or nested row-major; each a string. Absent when the tensor travels in "
        "binary (parameters.binary_data_size).",
    )


class RequestOutput(BaseModel):
    name: StrictStr
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                "data": ["a gripping film", "dull and far too long"]}],
                }
            ]
        }
    )
    id: StrictStr | None = None
    parameters: Parameters | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, int] | None = Field(None, description="binary_data_size when the data is binary")
    data: list[float] | list[str] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class RepositoryIndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repository_name: StrictStr | None = None
    ready: StrictBool | None = Field(None, description="true: only the models that are ready")


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]
    reason: str = ""


class RepositoryLoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: Parameters | None = None
