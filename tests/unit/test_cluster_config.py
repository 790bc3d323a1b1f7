"""central.cluster's configuration (parse, load, ports) and central.demo.dilate.

No cluster process is started here: ``Cluster`` belongs to the integration tier.
"""

from __future__ import annotations

import dataclasses
import socket
import textwrap
from pathlib import Path

import pytest

from central.cluster import (
    EMBEDDED_DEFAULT,
    ClusterConfig,
    ModelSpec,
    WorkerSpec,
    free_port,
    load_config,
    parse_config,
)
from central.demo import dilate

EMULATED = """
[[models]]
name = "m"
k_ms = 1.0
c_ms = 2.0
slo_ms = 20
"""


def cfg(text: str) -> ClusterConfig:
    return parse_config(textwrap.dedent(text), "test.toml")


def refused(text: str, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        cfg(text)
    assert str(info.value).startswith("cluster config test.toml: ")
    return str(info.value)


# ------------------------------------------------------------- embedded default


def test_embedded_default_matches_its_documentation() -> None:
    c = parse_config(EMBEDDED_DEFAULT)
    assert c.scheduler_address == "tcp://127.0.0.1:5550"
    assert c.policy == "symphony"
    assert c.frontend_address == "tcp://127.0.0.1:5560"
    assert c.default_slo_ms == 100.0
    assert c.models == (
        ModelSpec("symphony", slo_ms=25, k_ms=1.082, c_ms=5.204),
        ModelSpec("mobilenet_v2", slo_ms=1000),
        ModelSpec("minilm", slo_ms=1000),
    )
    assert c.model("symphony").max_batch == 64
    assert c.workers == (
        WorkerSpec("emulated", ("symphony",), gpus=8),
        WorkerSpec("torch", ("mobilenet_v2", "minilm"), device="cpu", threads=1),
    )
    assert c.gpu_count == 9  # 8 emulated + 1 torch device


def test_load_config_without_a_path_is_the_embedded_default() -> None:
    assert load_config(None) == parse_config(EMBEDDED_DEFAULT)


def test_model_lookup_by_name() -> None:
    c = load_config(None)
    assert c.model("minilm").slo_ms == 1000
    with pytest.raises(KeyError):
        c.model("nope")


def test_empty_document_gives_the_defaults() -> None:
    assert cfg("") == ClusterConfig()


def test_worker_options_are_parsed() -> None:
    c = cfg(
        EMULATED
        + """
        [[workers]]
        kind = "emulated"
        models = ["m"]
        gpus = 3
        noise = 0.05
        seed = 7
        data_address = "tcp://127.0.0.1:7000"
    """
    )
    assert c.workers == (
        WorkerSpec("emulated", ("m",), gpus=3, noise=0.05, seed=7, data_address="tcp://127.0.0.1:7000"),
    )


# ---------------------------------------------------------------------- refusals


def test_bad_toml_is_a_value_error_naming_the_file() -> None:
    refused("[scheduler\naddress = 1", r"\(at line 1, column \d+\)")


def test_unknown_section_is_refused() -> None:
    text = refused("[schedular]\naddress = 'x'\n", r"unknown sections \['schedular'\]")
    assert "known: ['frontend', 'models', 'scheduler', 'security', 'workers']" in text


def test_model_without_a_name_is_refused() -> None:
    refused("[[models]]\nslo_ms = 5\n", r"models\[0\] needs a name")


def test_unknown_model_key_is_refused() -> None:
    refused(EMULATED + "sla_ms = 3\n", r"models\[0\]: unknown keys \['sla_ms'\]")


@pytest.mark.parametrize("kind", ['"gpu"', '""'])
def test_unknown_worker_kind_is_refused(kind: str) -> None:
    refused(
        EMULATED + f"[[workers]]\nkind = {kind}\nmodels = ['m']\n",
        r"workers\[0\]\.kind must be 'emulated' or 'torch'",
    )


def test_missing_worker_kind_is_refused() -> None:
    refused(EMULATED + "[[workers]]\nmodels = ['m']\n", r"got None")


def test_unknown_worker_key_is_refused() -> None:
    refused(
        EMULATED + "[[workers]]\nkind = 'emulated'\nmodels = ['m']\ngpu = 2\n",
        r"workers\[0\]: unknown keys \['gpu'\]",
    )


def test_worker_without_models_is_refused() -> None:
    refused(EMULATED + "[[workers]]\nkind = 'emulated'\n", r"workers\[0\] serves no models")


def test_worker_serving_an_undefined_model_is_refused() -> None:
    refused(
        EMULATED + "[[workers]]\nkind = 'emulated'\nmodels = ['m', 'ghost']\n",
        r"workers\[0\] serves 'ghost', which \[\[models\]\] does not define",
    )


@pytest.mark.parametrize("missing", ["k_ms", "c_ms"])
def test_emulated_model_without_profile_is_refused(missing: str) -> None:
    model = "[[models]]\nname = 'm'\nk_ms = 1.0\nc_ms = 2.0\n".replace(f"{missing} =", "#")
    refused(
        model + "[[workers]]\nkind = 'emulated'\nmodels = ['m']\n", "emulated model 'm' needs k_ms and c_ms"
    )


def test_torch_model_needs_no_profile() -> None:
    c = cfg("[[models]]\nname = 'minilm'\n[[workers]]\nkind = 'torch'\nmodels = ['minilm']\n")
    assert c.workers[0].gpus == 1


@pytest.mark.parametrize("gpus", [0, 2])
def test_torch_worker_with_other_than_one_gpu_is_refused(gpus: int) -> None:
    refused(
        f"[[models]]\nname = 'minilm'\n[[workers]]\nkind = 'torch'\nmodels = ['minilm']\ngpus = {gpus}\n",
        r"workers\[0\](: a torch worker drives exactly one device|\.gpus must be an integer >= 1)",
    )


@pytest.mark.parametrize("section, key", [("scheduler", "adress"), ("frontend", "default_slo")])
def test_unknown_scheduler_or_frontend_key_is_refused(section: str, key: str) -> None:
    refused(f"[{section}]\n{key} = 5\n", f"unknown keys \\['{key}'\\]")


@pytest.mark.parametrize("gpus", [0, -1])
def test_emulated_worker_needs_at_least_one_gpu(gpus: int) -> None:
    refused(EMULATED + f"[[workers]]\nkind = 'emulated'\nmodels = ['m']\ngpus = {gpus}\n", "gpus")


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(EMULATED + "[[workers]]\nkind = 'emulated'\nmodels = ['m']\n")
    c = load_config(str(path))
    assert c.model("m") == ModelSpec("m", slo_ms=20, k_ms=1.0, c_ms=2.0)


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[oops]\n")
    with pytest.raises(ValueError, match=f"cluster config {path}: unknown sections"):
        load_config(str(path))


def test_load_config_refuses_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ValueError, match=f"cluster config {missing}: no such file"):
        load_config(str(missing))
    with pytest.raises(ValueError, match="no such file"):
        load_config(str(tmp_path))  # a directory is not a cluster file


# ------------------------------------------------------------------------ ports


def test_with_ports_changes_the_two_addresses_and_turns_metrics_off() -> None:
    c = load_config(None)
    moved = c.with_ports(41000, 41001)
    assert moved.scheduler_address == "tcp://127.0.0.1:41000"
    assert moved.frontend_address == "tcp://127.0.0.1:41001"
    # the fixed metrics/stats ports of the original would collide: off unless given
    assert moved == dataclasses.replace(
        c,
        scheduler_address="tcp://127.0.0.1:41000",
        frontend_address="tcp://127.0.0.1:41001",
        scheduler_metrics_port=None,
        frontend_metrics_port=None,
        stats_pub=None,
        http_port=None,
        grpc_port=None,
    )
    assert (c.http_port, c.grpc_port) == (8000, 8001)  # the embedded default serves KServe
    given = c.with_ports(
        41000,
        41001,
        scheduler_metrics_port=41002,
        frontend_metrics_port=41003,
        stats_pub_port=41004,
        http_port=41005,
        grpc_port=41006,
    )
    assert (
        given.scheduler_metrics_port,
        given.frontend_metrics_port,
        given.stats_pub,
        given.http_port,
        given.grpc_port,
    ) == (41002, 41003, "tcp://127.0.0.1:41004", 41005, 41006)
    assert c.scheduler_address == "tcp://127.0.0.1:5550"  # the original is untouched


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # bind only: no traffic, closed at once


# ----------------------------------------------------------------------- dilate


def test_dilate_scales_k_c_and_slo_of_that_model_only() -> None:
    c = load_config(None)
    d = dilate(c, 2.0, "symphony")
    m = d.model("symphony")
    assert m.k_ms == pytest.approx(2.164)
    assert m.c_ms == pytest.approx(10.408)
    assert m.slo_ms == pytest.approx(50.0)
    assert m.max_batch == 64 and m.name == "symphony"
    assert d.model("mobilenet_v2") == c.model("mobilenet_v2")
    assert d.model("minilm") == c.model("minilm")
    assert dataclasses.replace(d, models=c.models) == c  # nothing else changed
    assert c.model("symphony").k_ms == 1.082  # the original is untouched


def test_dilate_by_one_is_the_identity() -> None:
    c = load_config(None)
    assert dilate(c, 1.0, "symphony") is c


def test_dilate_without_model_slo_scales_the_configured_default() -> None:
    c = cfg("[frontend]\ndefault_slo_ms = 200\n[[models]]\nname = 'm'\nk_ms = 1.0\nc_ms = 2.0\n")
    assert dilate(c, 2.0, "m").model("m").slo_ms == pytest.approx(400.0)


def test_kserve_ports_are_validated_and_passed_to_the_frontend() -> None:
    with pytest.raises(ValueError, match=r"\[frontend\]\.grpc_port"):
        parse_config('[frontend]\ngrpc_port = "8001"\n')
    c = parse_config("[frontend]\nhttp_port = 18000\ngrpc_port = 18001\n")
    assert (c.http_port, c.grpc_port) == (18000, 18001)


def test_security_section_names_the_keys_and_token() -> None:
    c = parse_config('[security]\nkeys = "/etc/baton/keys"\ntoken_file = "/etc/baton/token"\n')
    assert (c.keys_dir, c.token_file) == ("/etc/baton/keys", "/etc/baton/token")
    with pytest.raises(ValueError, match=r"\[security\]\.keys must be a path"):
        parse_config("[security]\nkeys = 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_config('[security]\ncert = "x"\n')


def test_scheduler_shards_are_parsed_and_checked() -> None:
    assert parse_config("").shards == 1
    assert parse_config("[scheduler]\nshards = 4\n").shards == 4
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        parse_config("[scheduler]\nshards = 0\n")
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        parse_config('[scheduler]\nshards = "2"\n')
    with pytest.raises(ValueError, match="splits the default policy"):
        parse_config('[scheduler]\npolicy = "uncoordinated"\nshards = 2\n')
