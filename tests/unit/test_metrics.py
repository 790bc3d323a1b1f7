"""The Prometheus text rendering, the /metrics HTTP handler, and the config keys.

No sockets: ``http_response`` is a pure function of the request head, and the scheduler
and frontend are only constructed (never served) to render their empty families.
"""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from central.cluster import load_config, parse_config
from central.frontend.server import Frontend, FrontendConfig
from central.plumbing.metrics import (
    CONTENT_TYPE,
    Family,
    Histogram,
    escape_label_value,
    http_response,
    render,
)
from central.runtime.scheduler import Scheduler, SchedulerConfig


def _parse(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


# ---------------------------------------------------------------------- render


def test_label_values_are_escaped_and_round_trip() -> None:
    nasty = 'a"b\\c\nd'
    assert escape_label_value(nasty) == 'a\\"b\\\\c\\nd'
    text = render([Family("baton_x_total", "counter", "x").add(3, model=nasty)])
    assert 'model="a\\"b\\\\c\\nd"' in text
    (sample,) = _parse(text)["baton_x"].samples  # type: ignore[attr-defined]
    assert sample.labels == {"model": nasty}
    assert sample.value == 3


def test_help_and_type_lines_come_first_and_help_is_escaped() -> None:
    text = render(
        [
            Family("baton_a_total", "counter", "line one\nback\\slash").add(1),
            Family("baton_b", "gauge", "a gauge").add(0.5, worker="0"),
        ]
    )
    lines = text.splitlines()
    assert lines[0] == "# HELP baton_a_total line one\\nback\\\\slash"
    assert lines[1] == "# TYPE baton_a_total counter"
    assert lines[2] == "baton_a_total 1"
    assert lines[3:6] == ["# HELP baton_b a gauge", "# TYPE baton_b gauge", 'baton_b{worker="0"} 0.5']
    assert text.endswith("\n")


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    h = Histogram((0.1, 1.0, 10.0))
    for v in (0.05, 0.1, 0.5, 2.0, 20.0, 30.0):
        h.observe(v)
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (10.0, 4), (math.inf, 6)]
    text = render([Family("baton_h_seconds", "histogram", "h").add(h, model="m")])
    assert 'baton_h_seconds_bucket{model="m",le="0.1"} 2' in text
    assert 'baton_h_seconds_bucket{model="m",le="+Inf"} 6' in text
    assert 'baton_h_seconds_count{model="m"} 6' in text
    fam = _parse(text)["baton_h_seconds"]
    assert fam.type == "histogram"  # type: ignore[attr-defined]
    buckets = [s.value for s in fam.samples if s.name.endswith("_bucket")]  # type: ignore[attr-defined]
    assert buckets == sorted(buckets) == [2, 3, 4, 6]
    total = next(s.value for s in fam.samples if s.name.endswith("_sum"))  # type: ignore[attr-defined]
    assert total == pytest.approx(52.65)


def test_special_values_render_in_the_format() -> None:
    text = render([Family("baton_g", "gauge", "g").add(math.inf, k="a").add(math.nan, k="b")])
    assert 'baton_g{k="a"} +Inf' in text and 'baton_g{k="b"} NaN' in text


@pytest.mark.parametrize(
    "family",
    [
        Family("baton_count", "counter", "no _total"),
        Family("bad-name", "gauge", "x"),
        Family("baton_x", "summary", "unknown kind"),
        Family("baton_g", "gauge", "bad label").add(1, le="1"),
        Family("baton_h", "histogram", "not a histogram").add(1),
    ],
)
def test_malformed_families_are_our_bug(family: Family) -> None:
    with pytest.raises(ValueError):
        render([family])


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        Histogram((1.0, 1.0))
    with pytest.raises(ValueError):
        Histogram(())


# ------------------------------------------------------------------------ http


def _split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, body = answer.split(b"\r\n\r\n", 1)
    status, *headers = head.decode().split("\r\n")
    return status, dict(h.split(": ", 1) for h in headers), body


def test_get_metrics_answers_200_with_the_text() -> None:
    status, headers, body = _split(
        http_response(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", lambda: "baton_up 1\n")
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["Content-Length"] == str(len(body))
    assert headers["Connection"] == "close"
    assert body == b"baton_up 1\n"
    # a query string does not change the path
    assert http_response(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", lambda: "").startswith(b"HTTP/1.1 200 OK")


def test_other_paths_methods_and_garbage() -> None:
    def never() -> str:
        raise AssertionError("rendered for a non-200 answer")

    assert _split(http_response(b"GET / HTTP/1.1\r\n\r\n", never))[0] == "HTTP/1.1 404 Not Found"
    assert _split(http_response(b"GET /metricsx HTTP/1.1\r\n\r\n", never))[0].endswith("404 Not Found")
    assert _split(http_response(b"POST /metrics HTTP/1.1\r\n\r\n", never))[0].endswith(
        "405 Method Not Allowed"
    )
    assert _split(http_response(b"\x00\xff nonsense\r\n\r\n", never))[0].endswith("400 Bad Request")
    head_only = http_response(b"HEAD /metrics HTTP/1.1\r\n\r\n", lambda: "abc")
    status, headers, body = _split(head_only)
    assert status.endswith("200 OK") and headers["Content-Length"] == "3" and body == b""


# ------------------------------------------------------------ component families


def test_fresh_scheduler_and_frontend_render_parseable_metrics() -> None:
    sched = _parse(Scheduler(SchedulerConfig()).render_metrics())
    for name in (
        "baton_scheduler_requests",
        "baton_scheduler_batch_size",
        "baton_scheduler_queue_seconds",
        "baton_scheduler_worker_busy_ratio",
        "baton_scheduler_model_profile_k_seconds",
    ):
        assert name in sched
    fe = _parse(Frontend(FrontendConfig()).render_metrics())
    for name in (
        "baton_frontend_requests_accepted",
        "baton_frontend_replies",
        "baton_frontend_request_latency_seconds",
        "baton_frontend_requests_pending",
    ):
        assert name in fe


# ---------------------------------------------------------------------- config


def test_embedded_default_turns_metrics_and_stats_on() -> None:
    c = load_config(None)
    assert c.scheduler_metrics_port == 9550
    assert c.stats_pub == "tcp://127.0.0.1:5551"
    assert c.frontend_metrics_port == 9560


def test_metrics_keys_are_parsed_and_checked() -> None:
    c = parse_config(
        '[scheduler]\nmetrics_port = 0\nstats_pub = "tcp://127.0.0.1:7"\n[frontend]\nmetrics_port = 1234\n'
    )
    assert (c.scheduler_metrics_port, c.stats_pub, c.frontend_metrics_port) == (0, "tcp://127.0.0.1:7", 1234)
    off = parse_config("")
    assert (off.scheduler_metrics_port, off.stats_pub, off.frontend_metrics_port) == (None, None, None)
    with pytest.raises(ValueError, match="metrics_port"):
        parse_config('[frontend]\nmetrics_port = "x"\n')
    with pytest.raises(ValueError, match="stats_pub"):
        parse_config("[scheduler]\nstats_pub = 5551\n")
    with pytest.raises(ValueError, match="unknown keys"):
        parse_config("[frontend]\nstats_pub = 'tcp://127.0.0.1:1'\n")
