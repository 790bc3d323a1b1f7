"""Shared test set-up: nothing here starts processes; integration fixtures live in
tests/integration/conftest.py and stop everything they start, even on failure."""
