"""The scheduler's policy flags: parsed into a ``PolicyConfig`` and passed on to shards."""

from __future__ import annotations

import pytest

from central import cli


def _args(*extra: str):  # type: ignore[no-untyped-def]
    return cli.build_parser().parse_args(["scheduler", *extra])


def test_margin_flags_reach_the_policy_config_and_the_shards() -> None:
    args = _args(
        "--margin-percentile",
        "0.95",
        "--refit-window",
        "128",
        "--stall-window",
        "32",
        "--dispatch-cost-us",
        "1500",
    )
    cfg = cli._policy_config(args)
    assert (cfg.margin_percentile, cfg.refit_window, cfg.stall_window) == (0.95, 128, 32)
    assert cfg.dispatch_cost_ns == 1_500_000
    # a shard started by the matcher with these flags plans with the same numbers
    again = cli._policy_config(_args(*cli._policy_flags(args)))
    assert (again.margin_percentile, again.refit_window, again.stall_window) == (0.95, 128, 32)
    assert again.dispatch_cost_ns == cfg.dispatch_cost_ns


def test_defaults_and_a_bad_value() -> None:
    cfg = cli._policy_config(_args())
    assert (cfg.margin_percentile, cfg.refit_window, cfg.stall_window) == (0.99, 256, 256)
    with pytest.raises(SystemExit, match="baton scheduler: stall_window must be >= 1, got 0"):
        cli._policy_config(_args("--stall-window", "0"))


def test_uncoordinated_knobs_reach_the_baseline_and_are_refused_elsewhere() -> None:
    from central.policy import make_policy
    from central.policy.baselines.uncoordinated import UncoordinatedConfig

    args = _args("--policy", "uncoordinated", "--uncoord-max-batch", "10", "--uncoord-queue-delay-us", "1000")
    options = cli._policy_options(args)
    assert options == UncoordinatedConfig(max_batch=10, max_queue_delay_ns=1_000_000)
    make_policy("uncoordinated", cli._policy_config(args), options=options)  # it builds
    assert cli._policy_options(_args("--policy", "uncoordinated")) is None  # the defaults
    with pytest.raises(SystemExit, match="knobs of --policy uncoordinated, not of symphony"):
        cli._policy_options(_args("--uncoord-max-batch", "10"))
    with pytest.raises(SystemExit, match="max_batch"):
        cli._policy_options(_args("--policy", "uncoordinated", "--uncoord-max-batch", "0"))
