"""KServe v2 on a live cluster, driven by the unmodified tritonclient HTTP and gRPC clients.

The cluster is the embedded default (emulated GPUs with the dilated Symphony profile and
the CPU torch worker with MobileNetV2 and MiniLM) with the frontend's HTTP and gRPC
endpoints on free ports. Outputs are checked against what the model must give (the
emulated model sums its input; MobileNetV2 sees a cat; MiniLM's embedding equals the
one the ZMQ path returns for the same sentence).
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from skimage import data
from tritonclient.utils import InferenceServerException

from central.client import BadRequest, Client, Rejected, text
from central.cluster import Cluster

pytestmark = pytest.mark.integration

CAT_CLASSES = set(range(281, 286))


def _http(cluster: Cluster) -> thttp.InferenceServerClient:
    return thttp.InferenceServerClient(f"127.0.0.1:{cluster.config.http_port}")


def _grpc(cluster: Cluster) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(f"127.0.0.1:{cluster.config.grpc_port}")


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# ------------------------------------------------------------------ health, metadata


@pytest.mark.parametrize("make", [_http, _grpc], ids=["http", "grpc"])
def test_health_and_metadata(kserve_cluster: Cluster, make) -> None:  # type: ignore[no-untyped-def]
    c = make(kserve_cluster)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("symphony") and c.is_model_ready("minilm")
    assert not c.is_model_ready("no_such_model")
    meta = c.get_server_metadata() if make is _http else c.get_server_metadata(as_json=True)
    assert meta["name"] == "baton" and "binary_tensor_data" in meta["extensions"]
    mm = c.get_model_metadata("minilm") if make is _http else c.get_model_metadata("minilm", as_json=True)
    assert mm["name"] == "minilm"
    assert [(i["name"], i["datatype"]) for i in mm["inputs"]] == [("text", "BYTES")]
    assert [(o["name"], o["datatype"], [int(d) for d in o["shape"]]) for o in mm["outputs"]] == [
        ("embedding", "FP32", [384])
    ]
    cfg = (
        c.get_model_config("symphony")
        if make is _http
        else c.get_model_config("symphony", as_json=True)["config"]
    )
    assert cfg["name"] == "symphony"
    assert int(cfg.get("max_batch_size", 0)) == 0  # Baton batches across requests itself
    assert cfg["input"][0]["data_type"] == "TYPE_FP32"
    c.close()


# ------------------------------------------------------------------------- infer


def test_http_infer_binary_and_json(kserve_cluster: Cluster) -> None:
    c = _http(kserve_cluster)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    inp = thttp.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # binary tensor extension (tritonclient's default)
    out = c.infer("symphony", [inp])
    assert out.as_numpy("sum")[0] == x.sum() and out.as_numpy("count")[0] == 12
    inp.set_data_from_numpy(x, binary_data=False)  # plain JSON data, JSON outputs
    out = c.infer("symphony", [inp], outputs=[thttp.InferRequestedOutput("sum", binary_data=False)])
    resp = out.get_response()
    assert [o["name"] for o in resp["outputs"]] == ["sum"]
    assert resp["outputs"][0]["data"] == [float(x.sum())]
    # the SLO as a request parameter
    out = c.infer("symphony", [inp], parameters={"slo_ms": 1000})
    assert out.as_numpy("sum")[0] == x.sum()
    c.close()


def test_real_models_over_http_and_grpc(kserve_cluster: Cluster) -> None:
    sentence = "A man is playing a guitar on stage."
    with Client(kserve_cluster.config.frontend_address) as zmq_client:
        want = zmq_client.infer("minilm", text(sentence))["embedding"]
    h = _http(kserve_cluster)
    t = thttp.InferInput("text", [1], "BYTES")
    t.set_data_from_numpy(np.array([sentence.encode()], dtype=object))
    got = h.infer("minilm", [t]).as_numpy("embedding")
    np.testing.assert_allclose(got, want, atol=1e-5)
    img = thttp.InferInput("image", [len(_jpeg())], "UINT8")
    img.set_data_from_numpy(np.frombuffer(_jpeg(), np.uint8))
    res = h.infer("mobilenet_v2", [img])
    assert int(res.as_numpy("class_ids")[0]) in CAT_CLASSES
    assert res.as_numpy("labels").shape == (5,)
    h.close()
    g = _grpc(kserve_cluster)
    gt = tgrpc.InferInput("text", [1], "BYTES")
    gt.set_data_from_numpy(np.array([sentence.encode()], dtype=object))
    got = g.infer("minilm", [gt], outputs=[tgrpc.InferRequestedOutput("embedding")])
    np.testing.assert_allclose(got.as_numpy("embedding"), want, atol=1e-5)
    g.close()


def test_grpc_infer_and_stream(kserve_cluster: Cluster) -> None:
    g = _grpc(kserve_cluster)
    x = np.full(7, 2.0, np.float32)
    inp = tgrpc.InferInput("x", [7], "FP32")
    inp.set_data_from_numpy(x)
    out = g.infer("symphony", [inp], parameters={"slo_ms": 1000.0})
    assert out.as_numpy("sum")[0] == 14.0
    results: list[object] = []
    g.start_stream(callback=lambda result, error: results.append(error or result))
    for i in range(5):
        inp.set_data_from_numpy(np.full(7, float(i), np.float32))
        g.async_stream_infer("symphony", [inp], request_id=str(i))
    g.stop_stream()  # waits for the stream to drain
    sums = sorted(float(r.as_numpy("sum")[0]) for r in results)  # type: ignore[attr-defined]
    assert sums == [7.0 * i for i in range(5)]
    g.close()


# ------------------------------------------------------------------------ errors


def test_bad_requests_get_the_protocols_error_shape(kserve_cluster: Cluster) -> None:
    h = _http(kserve_cluster)
    inp = thttp.InferInput("x", [2], "FP32")
    inp.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as err:
        h.infer("no_such_model", [inp])
    assert err.value.status() == "404" or str(err.value.status()) == "404"
    assert "no_such_model" in err.value.message()
    wrong = thttp.InferInput("text", [2], "FP32")  # MiniLM takes BYTES
    wrong.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as err:
        h.infer("minilm", [wrong])
    assert str(err.value.status()) == "400"
    h.close()
    # malformed JSON straight over HTTP: 400 with {"error": "..."}
    url = f"http://127.0.0.1:{kserve_cluster.config.http_port}/v2/models/symphony/infer"
    req = urllib.request.Request(url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req, timeout=10)
    assert http_err.value.code == 400
    body = json.loads(http_err.value.read())
    assert set(body) == {"error"} and "JSON" in body["error"]
    # a shape that does not match the data
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0]}]}
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req, timeout=10)
    assert http_err.value.code == 400 and "shape" in json.loads(http_err.value.read())["error"]
    # gRPC: status codes
    g = _grpc(kserve_cluster)
    ginp = tgrpc.InferInput("x", [2], "FP32")
    ginp.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as err:
        g.infer("no_such_model", [ginp])
    assert "NOT_FOUND" in str(err.value.status())
    gbad = tgrpc.InferInput("text", [2], "FP32")
    gbad.set_data_from_numpy(np.ones(2, np.float32))
    with pytest.raises(InferenceServerException) as err:
        g.infer("minilm", [gbad])
    assert "INVALID_ARGUMENT" in str(err.value.status())
    # and the server still serves
    assert g.infer("symphony", [ginp]).as_numpy("sum")[0] == 2.0
    g.close()


# --------------------------------------------------------------------- SDK grpc://


def test_sdk_grpc_client_matches_zmq(kserve_cluster: Cluster) -> None:
    address = f"grpc://127.0.0.1:{kserve_cluster.config.grpc_port}"
    with Client(address) as g, Client(kserve_cluster.config.frontend_address) as z:
        x = {"x": np.linspace(0, 1, 11, dtype=np.float32)}
        assert g.infer("symphony", x)["sum"][0] == pytest.approx(z.infer("symphony", x)["sum"][0])
        e1 = g.infer("minilm", text("a cat on a mat"), slo_ms=2000)["embedding"]
        e2 = z.infer("minilm", text("a cat on a mat"), slo_ms=2000)["embedding"]
        np.testing.assert_allclose(e1, e2, atol=1e-5)
        with pytest.raises(Rejected, match="no_such_model"):
            g.infer("no_such_model", x)
        with pytest.raises(BadRequest):
            g.infer("minilm", {"text": np.ones(3, np.float32)})
        with pytest.raises(BadRequest, match="slo_ms"):
            g.infer("symphony", x, slo_ms=-1)
