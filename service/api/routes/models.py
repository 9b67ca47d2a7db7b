"""GET /v1/models: what is loaded, with its manifest facts and where it runs."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RegistryDep, SettingsDep
from service.api.responses import METADATA_ERRORS
from service.api.schemas import ModelInfo, ModelsResponse
from service.repository.registry import ServedModel

router = APIRouter(prefix="/v1", tags=["v1"], responses=METADATA_ERRORS)


def model_info(model: ServedModel, default: bool) -> ModelInfo:
    facts = model.facts
    details = facts.details
    return ModelInfo(
        name=facts.name,
        kind=facts.kind,
        default=default,
        ready=model.ready,
        labels=facts.labels,
        vocab_size=details.get("vocab_size"),
        embedding_dim=details.get("embedding_dim"),
        hidden_dim=details.get("hidden_dim"),
        dtype=details.get("dtype"),
        max_length=details.get("max_length"),
        device=model.device,
        providers=model.providers,
        device_note=model.device_note or None,
        max_batch_size=model.batcher.max_batch_size,
        metrics=facts.metrics,
        created_at=facts.created_at,
        cascade=details.get("cascade"),
    )


@router.get("/models", response_model=ModelsResponse, summary="Loaded models")
async def list_models(registry: RegistryDep, settings: SettingsDep) -> ModelsResponse:
    kinds = {m.kind for m in registry.models}
    defaults = {registry.get(kind).name for kind in kinds}
    return ModelsResponse(
        device_requested=settings.device,
        models=[model_info(m, m.name in defaults) for m in registry.models],
    )
