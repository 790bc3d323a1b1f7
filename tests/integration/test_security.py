"""Client tokens (ZMQ, KServe HTTP and gRPC) and CURVE keys on a live cluster."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException
from zmq.auth import create_certificates, load_certificate

from central.client import Client, Unauthorized, Unavailable, query_stats
from central.cluster import Cluster, ClusterConfig, ModelSpec, WorkerSpec, free_port
from central.plumbing.security import make_keys

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
X = {"x": np.ones(3, np.float32)}


def _config(**security: str) -> ClusterConfig:
    return ClusterConfig(
        f"tcp://127.0.0.1:{free_port()}",
        "symphony",
        f"tcp://127.0.0.1:{free_port()}",
        500.0,
        (ModelSpec("tiny", 500.0, 1.0, 4.0),),
        (WorkerSpec("emulated", ("tiny",), gpus=2),),
        http_port=free_port(),
        grpc_port=free_port(),
        **security,
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


def test_scheduler_authorizes_on_the_key_role_not_the_routing_id(keyed_cluster: tuple[Cluster, Path]) -> None:
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


# ---------------------------------------------------------- the allow-list itself
#
# The peers below hold the cluster's TRUE server public keys (frontend.key,
# scheduler.key), so the only thing wrong with them is their own key pair: they are
# refused by the ZAP allow-list (or by PeerGate), not by a failed server-key check.


def _keyring(keys: Path, dest: Path, role: str, secret: Path) -> Path:
    """A copy of the cluster's ``baton keys`` directory whose ``role`` key pair is
    ``secret`` instead; every public key in it (the servers' too) stays the cluster's."""
    shutil.copytree(keys, dest)
    shutil.copyfile(secret, dest / f"{role}.key_secret")
    return dest


def _stranger(tmp: Path) -> tuple[Path, str]:
    """A fresh key pair, in no allow-list: its secret file and its Z85 public key."""
    public, secret = create_certificates(str(tmp), "stranger")
    return Path(secret), load_certificate(public)[0].decode()


def _log_line(path: Path, *needles: str, timeout_s: float = 15.0) -> str:
    """The first line of ``path`` holding every needle, waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if all(n in line for n in needles):
                return line
        if time.monotonic() > deadline:
            pytest.fail(f"no line with {needles} in {path}; its end:\n{text[-2000:]}")
        time.sleep(0.1)


def _worker_names(cluster: Cluster, keys: Path) -> set[str]:
    stats = query_stats(cluster.config.scheduler_address, keys=str(keys))
    return {w["process"] for w in stats["workers"].values()}


@contextmanager
def _solo_workers(cluster: Cluster, keys: Path, **keyrings: Path) -> Iterator[None]:
    """One extra worker process per ``name=keyring``, each the only server of a model
    ``solo``; each is stopped by its PID on the way out, and waited for until the
    scheduler no longer lists it (the module's cluster stays as it was)."""
    procs = []
    try:
        for name, keyring in keyrings.items():
            cmd = [
                sys.executable,
                "-m",
                "central.cli",
                "worker",
                "--scheduler",
                cluster.config.scheduler_address,
                "--data-address",
                "tcp://127.0.0.1:0",
                "--name",
                name,
                "--emulate",
                "1",
                "--model",
                "solo:1.0:4.0:4",
                "--keys",
                str(keyring),
            ]
            with open(keys.parent / f"{name}.log", "ab") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 10
        while _worker_names(cluster, keys) & set(keyrings) and time.monotonic() < deadline:
            time.sleep(0.2)


def _wait_serving_solo(cluster: Cluster, keys: Path, name: str, timeout_s: float = 20.0) -> None:
    """Until worker ``name`` is registered and the frontend knows its model ``solo``."""
    deadline = time.monotonic() + timeout_s
    while not (
        name in _worker_names(cluster, keys)
        and "solo"
        in query_stats(cluster.config.frontend_address, keys=str(keys), server="frontend")["models"]
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"worker {name} never registered")
        time.sleep(0.2)


def test_curve_allow_list_refuses_a_client_key_not_listed(
    keyed_cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, keys = keyed_cluster
    secret, public = _stranger(tmp_path)
    outsider = _keyring(keys, tmp_path / "outsider", "client", secret)
    listed = _keyring(keys, tmp_path / "listed", "client", keys / "client.key_secret")
    with Client(cluster.config.frontend_address, keys=str(outsider), grace_s=0.5) as c:
        with pytest.raises(Unavailable):
            c.infer("tiny", X, timeout_s=1.5)  # refused in the handshake: no answer at all
    line = _log_line(keys.parent / "frontend.log", "refused a CURVE handshake", public)
    assert "the frontend refused" in line, line
    with pytest.raises(Unavailable):
        query_stats(cluster.config.scheduler_address, keys=str(outsider), timeout_s=1.5)
    _log_line(keys.parent / "scheduler.log", "the scheduler refused a CURVE handshake", public)
    # the same client with a listed key pair (and the same server keys) is served
    with Client(cluster.config.frontend_address, keys=str(listed)) as c:
        assert c.infer("tiny", X)["sum"][0] == 3.0
    assert len(query_stats(cluster.config.scheduler_address, keys=str(listed))["workers"]) == 2


def test_curve_allow_list_refuses_a_worker_key_not_listed(
    keyed_cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, keys = keyed_cluster
    secret, public = _stranger(tmp_path)
    outsider = _keyring(keys, tmp_path / "outsider", "worker", secret)
    listed = _keyring(keys, tmp_path / "listed", "worker", keys / "worker.key_secret")
    before = query_stats(cluster.config.scheduler_address, keys=str(keys))["counters"]
    with _solo_workers(cluster, keys, outsider_worker=outsider, listed_worker=listed):
        _log_line(keys.parent / "scheduler.log", "the scheduler refused a CURVE handshake", public)
        _wait_serving_solo(cluster, keys, "listed_worker")
        with Client(cluster.config.frontend_address, keys=str(keys)) as c:
            assert c.infer("solo", X)["sum"][0] == 3.0  # only listed_worker serves solo
        time.sleep(1.0)  # a registration (retried every second) would have had one more
        stats = query_stats(cluster.config.scheduler_address, keys=str(keys))
    assert "outsider_worker" not in {w["process"] for w in stats["workers"].values()}
    # Refused in the handshake, not later: had it got through, PeerGate would have
    # refused its RegisterWorker (an unknown key), counted it and answered it.
    assert stats["counters"].get("unauthorized", 0) == before.get("unauthorized", 0)
    assert public not in (keys.parent / "scheduler.log").read_text().replace(
        f"CURVE handshake from public key {public}", ""
    )
    assert "scheduler refused a message" not in (keys.parent / "outsider_worker.log").read_text()


def test_peer_gate_refuses_a_worker_holding_the_frontend_key(
    keyed_cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, keys = keyed_cluster
    frontend_public = load_certificate(str(keys / "frontend.key"))[0].decode()
    before = query_stats(cluster.config.scheduler_address, keys=str(keys))["counters"]
    impostor = _keyring(keys, tmp_path / "impostor", "worker", keys / "frontend.key_secret")
    listed = _keyring(keys, tmp_path / "listed", "worker", keys / "worker.key_secret")
    with _solo_workers(cluster, keys, frontend_keyed_worker=impostor, worker_keyed_worker=listed):
        # the handshake passes (the frontend's key is listed); RegisterWorker does not
        line = _log_line(
            keys.parent / "scheduler.log",
            "the scheduler refused a message",
            frontend_public,
            "a frontend key may not send message kind 1",
        )
        _log_line(
            keys.parent / "frontend_keyed_worker.log",
            "scheduler refused a message",
            "a frontend key may not send message kind 1",
        )
        _wait_serving_solo(cluster, keys, "worker_keyed_worker")
        with Client(cluster.config.frontend_address, keys=str(keys)) as c:
            assert c.infer("solo", X)["sum"][0] == 3.0
        time.sleep(1.0)  # a registration (retried every second) would have had one more
        stats = query_stats(cluster.config.scheduler_address, keys=str(keys))
    assert "frontend_keyed_worker" not in {w["process"] for w in stats["workers"].values()}, line
    assert stats["counters"]["unauthorized"] > before.get("unauthorized", 0)
