"""Baton workers: the window check, executors (emulated and torch), the worker process.
Imports the protocol and plumbing only: never a policy or a scheduler shell; torch only in
``torch_executor`` and ``models``."""
