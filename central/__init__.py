"""Baton's central tier: wire protocol, policy core, scheduler runtime, frontend, SDK."""

__version__ = "0.1.0"
