"""``esp scale`` refuses what it cannot do before it touches Ray: exactly one of its options, and
a running ESP recorded in the state directory."""

from __future__ import annotations

from click.testing import CliRunner

from runtime.cli.main import main


def test_scale_needs_exactly_one_thing_to_change(tmp_path):
    for args in ([], ["--actors", "2", "--api", "2"], ["--rebalance", "--actors", "3"]):
        result = CliRunner().invoke(main, ["scale", "--state-dir", str(tmp_path), *args])
        assert result.exit_code == 2, (args, result.output)
        assert "one of --actors N, --rebalance or --api N" in result.output


def test_scale_refuses_counts_below_one(tmp_path):
    result = CliRunner().invoke(main, ["scale", "--state-dir", str(tmp_path), "--actors", "0"])
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output


def test_scale_says_when_nothing_runs(tmp_path):
    result = CliRunner().invoke(main, ["scale", "--state-dir", str(tmp_path), "--actors", "4"])
    assert result.exit_code == 1 and "ESP is not up" in result.output
