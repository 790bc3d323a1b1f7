"""The frontend: clients in, metadata to the scheduler, payloads to workers, answers out.
Imports the protocol and plumbing only: never a policy or a scheduler shell."""

from .server import TRANSITIONS, Frontend, FrontendConfig, Phase

__all__ = ["Frontend", "FrontendConfig", "Phase", "TRANSITIONS"]
