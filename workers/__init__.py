"""Baton workers: the window check, executors (emulated and torch), the worker process."""
