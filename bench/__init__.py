"""Baton's benchmark programs (``python -m bench`` = ``baton bench``): the simulator, traces,
the live harnesses and the peers. May import anything of Baton's; nothing imports it."""

__all__: list[str] = []
