"""Client tokens (ZMQ, KServe HTTP and gRPC) and CURVE keys on a live cluster."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from central.client import Client, Unauthorized, Unavailable, query_stats
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.runtime.security import make_keys

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
X = {"x": np.ones(3, np.float32)}


def _config(**security: str) -> ClusterConfig:
    return ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}", "symphony", f"tcp://127.0.0.1:{free_port()}", 500.0,
        (ModelSpec("tiny", 500.0, 1.0, 4.0),), (WorkerSpec("emulated", ("tiny",), gpus=2),),
        http_port=free_port(), grpc_port=free_port(), **security,
    )


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("token")
    (d / "token").write_text(TOKEN + "\n")
    c = Cluster(_config(token_file=str(d / "token")), log_dir=str(d))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def test_zmq_clients_need_the_token(token_cluster: Cluster) -> None:
    address = token_cluster.config.frontend_address
    with Client(address) as c, pytest.raises(Unauthorized, match="token"):
        c.infer("tiny", X)
    with Client(address, token="wrong") as c, pytest.raises(Unauthorized):
        c.infer("tiny", X)
    with Client(address, token=TOKEN) as c:
        assert c.infer("tiny", X)["sum"][0] == 3.0
    with pytest.raises(Unauthorized):
        query_stats(address, server="frontend")  # stats too
    assert query_stats(address, server="frontend", token=TOKEN)["counters"]["unauthorized"] >= 3


def test_kserve_http_and_grpc_need_the_token(token_cluster: Cluster) -> None:
    cfg = token_cluster.config
    base = f"http://127.0.0.1:{cfg.http_port}"
    assert urllib.request.urlopen(f"{base}/v2/health/live", timeout=5).status == 200  # open
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/v2/models/tiny", timeout=5)
    assert err.value.code == 401 and "Bearer" in json.loads(err.value.read())["error"]
    h = thttp.InferenceServerClient(f"127.0.0.1:{cfg.http_port}")
    inp = thttp.InferInput("x", [3], "FP32")
    inp.set_data_from_numpy(X["x"])
    with pytest.raises(InferenceServerException) as e:
        h.infer("tiny", [inp])
    assert str(e.value.status()) == "401"
    out = h.infer("tiny", [inp], headers={"Authorization": f"Bearer {TOKEN}"})
    assert out.as_numpy("sum")[0] == 3.0
    h.close()
    g = tgrpc.InferenceServerClient(f"127.0.0.1:{cfg.grpc_port}")
    assert g.is_server_live()  # health stays open
    gi = tgrpc.InferInput("x", [3], "FP32")
    gi.set_data_from_numpy(X["x"])
    with pytest.raises(InferenceServerException) as e:
        g.infer("tiny", [gi])
    assert "UNAUTHENTICATED" in str(e.value.status())
    out = g.infer("tiny", [gi], headers={"authorization": f"Bearer {TOKEN}"})
    assert out.as_numpy("sum")[0] == 3.0
    g.close()
    with Client(f"grpc://127.0.0.1:{cfg.grpc_port}") as c, pytest.raises(Unauthorized):
        c.infer("tiny", X)
    with Client(f"grpc://127.0.0.1:{cfg.grpc_port}", token=TOKEN) as c:
        assert c.infer("tiny", X)["sum"][0] == 3.0


# -------------------------------------------------------------------------- CURVE


@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    d = tmp_path_factory.mktemp("curve")
    keys = d / "keys"
    make_keys(keys)
    config = dataclasses.replace(_config(keys_dir=str(keys)), http_port=None, grpc_port=None)
    c = Cluster(config, log_dir=str(d))
    c.start()
    try:
        yield c, keys
    finally:
        c.stop()


def test_curve_cluster_serves_clients_with_the_client_key(keyed_cluster: tuple[Cluster, Path]) -> None:
    cluster, keys = keyed_cluster
    with Client(cluster.config.frontend_address, keys=str(keys)) as c:
        assert c.infer("tiny", X)["sum"][0] == 3.0
    stats = query_stats(cluster.config.scheduler_address, keys=str(keys))
    assert len(stats["workers"]) == 2


def test_curve_refuses_clients_without_keys_or_with_foreign_keys(
    keyed_cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, _ = keyed_cluster
    with Client(cluster.config.frontend_address, grace_s=0.5) as c, pytest.raises(Unavailable):
        c.infer("tiny", X, timeout_s=1.5)  # no handshake without keys: no answer at all
    foreign = tmp_path / "foreign"
    make_keys(foreign)  # the same roles, other keys: not in the cluster's allow-list
    with Client(cluster.config.frontend_address, keys=str(foreign), grace_s=0.5) as c:
        with pytest.raises(Unavailable):
            c.infer("tiny", X, timeout_s=1.5)
    with pytest.raises(Unavailable):
        query_stats(cluster.config.scheduler_address, keys=str(foreign), timeout_s=1.5)
    assert cluster.alive() == [r for r, _ in cluster.procs]


def test_scheduler_authorizes_on_the_key_role_not_the_routing_id(
    keyed_cluster: tuple[Cluster, Path]
) -> None:
    import zmq
    from zmq.auth import load_certificate

    from central.protocol import DEFAULT_LIMITS, Error, RegisterWorker, Status, decode, encode

    cluster, keys = keyed_cluster
    public, secret = load_certificate(str(keys / "client.key_secret"))
    server, _ = load_certificate(str(keys / "scheduler.key"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server
    sock.setsockopt(zmq.IDENTITY, b"w-pretending-to-be-a-worker")  # a worker-like routing id
    sock.connect(cluster.config.scheduler_address)
    try:
        spec = ((0, ("tiny",), (("tiny", 1_000_000, 1_000_000, 8),)),)
        sock.send_multipart(encode(RegisterWorker("impostor", "tcp://127.0.0.1:9", spec)))
        assert sock.poll(5000), "no answer from the scheduler"
        msg, _ = decode(sock.recv_multipart(), DEFAULT_LIMITS)
        assert isinstance(msg, Error) and msg.code == Status.UNAUTHORIZED, msg
        assert "client key may not send" in msg.message
    finally:
        sock.close(linger=0)
    stats = query_stats(cluster.config.scheduler_address, keys=str(keys))
    assert len(stats["workers"]) == 2 and stats["counters"]["unauthorized"] >= 1
