"""Baton's central tier: wire protocol, plumbing, policy core, scheduler shells, frontend, SDK.

Each subpackage's ``__init__`` says what it owns and what it must not import
(``docs/architecture.md``; ``tests/test_architecture.py`` enforces the rules)."""

__version__ = "0.1.0"
