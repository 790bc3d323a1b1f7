"""The frontend: clients in, metadata to the scheduler, payloads to workers, answers out."""

from .server import TRANSITIONS, Frontend, FrontendConfig, Phase

__all__ = ["Frontend", "FrontendConfig", "Phase", "TRANSITIONS"]
