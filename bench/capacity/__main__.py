"""``python -m bench.capacity`` (``baton bench capacity``): see ``bench.capacity.cli``."""

from bench.capacity.cli import main

raise SystemExit(main())
