"""``baton top``: a live terminal dashboard fed by the scheduler's stats. Reads stats over
the SDK and the protocol's records; never imports a policy or a scheduler shell.

``source`` (zmq SUB or polling, plus the pure ``Tracker``) and ``view`` (pure text layout)
import no textual; ``app`` is the textual shell, imported only when the dashboard runs.
``baton`` wires ``central.dashboard.cli.add_top_parser``; nothing is imported here so
that ``python -m central.dashboard.cli`` runs the module cleanly.
"""

__all__: list[str] = []
