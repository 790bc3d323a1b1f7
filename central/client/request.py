"""One request's validation and packing, shared by the ZMQ and the gRPC transports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from central.protocol import LocalProtocolError, arrays

from .errors import BadRequest

__all__ = ["check_request"]


def check_request(
    model: str, inputs: Mapping[str, Any], slo_ms: float | None
) -> tuple[tuple[Any, ...], list[Any]]:
    """Validate one request and pack its inputs (metas, buffers); ``BadRequest`` if wrong."""
    if not isinstance(model, str) or not model:
        raise BadRequest("model must be a non-empty string")
    if not inputs:
        raise BadRequest("inputs must name at least one array")
    if slo_ms is not None and not slo_ms > 0:
        raise BadRequest(f"slo_ms must be > 0, got {slo_ms}")
    try:
        return arrays.pack(inputs)
    except LocalProtocolError as exc:
        raise BadRequest(str(exc)) from None
