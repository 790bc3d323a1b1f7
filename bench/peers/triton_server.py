"""Triton peer server: PyTriton's real tritonserver with dynamic batching, N instances.

Run by ``TritonPeer`` under the Triton environment's interpreter (by path; it imports only
the standard library, numpy and PyTriton, never Baton). Theory of operation: PyTriton starts
the ``tritonserver`` binary it ships, HTTP on 127.0.0.1:``--port``, gRPC and metrics off.
The model ``emulated`` takes ``x`` (FP32, one value) and answers ``b`` (INT32, the size of
the batch it ran in). Triton's dynamic batcher gathers requests up to ``--max-batch``,
waiting at most ``--delay-us`` for ``--preferred`` sizes; ``--instances`` copies of the
infer function each run one batch at a time, holding the "device" for ``k*b + c`` (a
coarse ``time.sleep`` then a spin of at most 0.3 ms, like Baton's emulated worker). The
queue policy rejects a request that waited longer than ``--queue-timeout-us`` (0: never),
Triton's own way to shed requests that can no longer meet their SLO.

Triton's Python-backend stub links against libpython: ``LD_LIBRARY_PATH`` gets this
interpreter's ``LIBDIR`` (from ``sysconfig``) before the server starts. Once a request has
gone through, the ready file gets the URL; on SIGTERM the server is stopped and the script
exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sysconfig
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPIN_S = 0.0003


def hold(seconds: float) -> None:
    """Sleep ``seconds`` precisely: coarse sleep, then spin the last ``SPIN_S``."""
    end = time.monotonic() + seconds
    if seconds > SPIN_S:
        time.sleep(seconds - SPIN_S)
    while time.monotonic() < end:
        pass


def make_infer(k_s: float, c_s: float) -> Callable[..., dict[str, Any]]:
    import numpy as np
    from pytriton.decorators import batch

    @batch
    def infer(x: Any) -> dict[str, Any]:
        b = len(x)
        hold(k_s * b + c_s)
        return {"b": np.full((b, 1), b, dtype=np.int32)}

    return infer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--instances", type=int, required=True)
    p.add_argument("--k-ms", type=float, required=True)
    p.add_argument("--c-ms", type=float, required=True)
    p.add_argument("--max-batch", type=int, required=True)
    p.add_argument("--delay-us", type=int, required=True)
    p.add_argument("--preferred", type=int, nargs="*", default=[])
    p.add_argument("--queue-timeout-us", type=int, default=0)
    p.add_argument("--workspace", required=True)
    p.add_argument("--ready-file", required=True)
    args = p.parse_args()

    libdir = sysconfig.get_config_var("LIBDIR")
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = libdir + (":" + old if old else "")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
    from pytriton.model_config.common import TimeoutAction
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        allow_grpc=False,
        allow_metrics=False,
        exit_timeout_secs=5,
    )
    policy = QueuePolicy(
        timeout_action=TimeoutAction.REJECT,
        default_timeout_microseconds=args.queue_timeout_us,
        allow_timeout_override=False,
    )
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=args.delay_us,
        preferred_batch_size=args.preferred or [args.max_batch],
        default_queue_policy=policy,
    )
    k_s, c_s = args.k_ms / 1e3, args.c_ms / 1e3
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name="emulated",
            infer_func=[make_infer(k_s, c_s) for _ in range(args.instances)],
            inputs=[Tensor(name="x", dtype=np.float32, shape=(1,))],
            outputs=[Tensor(name="b", dtype=np.int32, shape=(1,))],
            config=ModelConfig(max_batch_size=args.max_batch, batcher=batcher),
            strict=True,
        )
        triton.run()
        url = f"http://127.0.0.1:{args.port}/v2/models/emulated/infer"
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}
        ).encode()
        urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}), timeout=60
        ).read()
        import pytriton

        tmp = Path(args.ready_file + ".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "pytriton": pytriton.__version__}))
        tmp.rename(args.ready_file)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
