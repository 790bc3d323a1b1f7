"""Shared set-up for the simulator tests: where the real trace lives. It is read from
``../shared/traces/`` beside the repository and never copied into it; tests that need
it skip, saying why, when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

_NAME = "azure_llm_2023_conv.csv"
_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "shared" / "traces" / _NAME,  # ../shared/traces
    Path("/work/shared/traces") / _NAME,
)


@pytest.fixture
def azure_trace() -> Path:
    """The shared Azure LLM conversation trace (CC-BY-4.0, Patel et al., ISCA 2024)."""
    for path in _CANDIDATES:
        if path.is_file():
            return path
    pytest.skip(f"shared trace {_NAME} not found (looked in {[str(p.parent) for p in _CANDIDATES]})")
