"""Ray Serve peer server: N replicas of an emulated model behind ``@serve.batch``.

Run by ``RayPeer`` under the Ray environment's interpreter (by path; it imports only the
standard library and Ray, never Baton or numpy). Theory of operation: a local Ray instance
(no dashboard, usage stats off, node address 127.0.0.1) runs Serve with its HTTP proxy on
127.0.0.1:``--port``. The deployment has ``--replicas`` replicas; each gathers requests with
``@serve.batch(max_batch_size, batch_wait_timeout_s)`` and runs one batch at a time
(``max_concurrent_batches=1``), holding the "device" for ``k*b + c``: a coarse
``asyncio.sleep`` then a spin of at most 0.3 ms, like Baton's emulated worker. The answer is
the batch size, as text. Once a request has gone through, the ready file gets the URL; on
SIGTERM Serve and Ray are shut down and the script exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

SPIN_S = 0.0003


async def hold(seconds: float) -> None:
    """Sleep ``seconds`` precisely: coarse sleep, then spin the last ``SPIN_S``."""
    end = time.monotonic() + seconds
    if seconds > SPIN_S:
        await asyncio.sleep(seconds - SPIN_S)
    while time.monotonic() < end:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--k-ms", type=float, required=True)
    p.add_argument("--c-ms", type=float, required=True)
    p.add_argument("--max-batch", type=int, required=True)
    p.add_argument("--wait-us", type=int, required=True)
    p.add_argument("--ready-file", required=True)
    args = p.parse_args()

    import ray
    from ray import serve

    k_s, c_s = args.k_ms / 1e3, args.c_ms / 1e3
    ray.init(
        num_cpus=max(4, args.replicas + 2),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    # after ray.init, which installs a SIGTERM handler of its own that kills the driver
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})

        @serve.deployment(
            num_replicas=args.replicas,
            ray_actor_options={"num_cpus": 0},
            max_ongoing_requests=max(256, 8 * args.max_batch),
        )
        class Emulated:
            @serve.batch(
                max_batch_size=args.max_batch,
                batch_wait_timeout_s=args.wait_us / 1e6,
                max_concurrent_batches=1,
            )
            async def run(self, items: list[int]) -> list[str]:
                await hold(k_s * len(items) + c_s)
                return [str(len(items))] * len(items)

            async def __call__(self, request: object) -> str:
                return await self.run(1)

        serve.run(Emulated.bind(), name="peer", route_prefix="/infer")
        url = f"http://127.0.0.1:{args.port}/infer"
        urllib.request.urlopen(urllib.request.Request(url, data=b"0"), timeout=60).read()
        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "ray": ray.__version__}))
        tmp.rename(args.ready_file)
        while not stop.wait(0.5):
            pass
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
