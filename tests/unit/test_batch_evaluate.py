"""Campaign evaluation over hand-made target and control tables: rates, lifts and Newcombe
intervals computed by hand, the reports, and the simulated responses of a run."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openpyxl import load_workbook

from runtime.batch import evaluate
from runtime.batch.campaign import AUDIENCE
from runtime.batch.evaluate import Arm
from runtime.batch.layout import CONTACT_HISTORY

Z = 1.959963984540054


def wilson_by_hand(x: int, n: int) -> tuple[float, float]:
    p = x / n
    centre = (2 * n * p + Z**2) / (2 * (n + Z**2))
    half = Z * math.sqrt(Z**2 + 4 * n * p * (1 - p)) / (2 * (n + Z**2))
    return centre - half, centre + half


def newcombe_by_hand(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    (l1, u1), (l2, u2) = wilson_by_hand(x1, n1), wilson_by_hand(x2, n2)
    p1, p2 = x1 / n1, x2 / n2
    return p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


# Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
    ],
)
def test_newcombe_matches_the_published_examples(x1, n1, x2, n2, low, high):
    found = evaluate.newcombe(x1, n1, x2, n2)
    assert found == pytest.approx((low, high), abs=5e-5)


def test_wilson_by_hand():
    assert evaluate.wilson(20, 100) == pytest.approx(wilson_by_hand(20, 100))
    assert evaluate.wilson(0, 10)[0] == 0.0


def test_arm_metrics_by_hand():
    metrics = evaluate.arm_metrics(Arm(100, 20, 8), Arm(50, 5, 1))
    assert metrics["response_rate"] == 0.2
    assert metrics["conversion_rate"] == 0.08
    assert metrics["control_response_rate"] == 0.1
    assert metrics["control_conversion_rate"] == 0.02
    assert metrics["response_lift"] == pytest.approx(0.1)
    assert metrics["response_relative_lift"] == pytest.approx(1.0)
    assert metrics["conversion_lift"] == pytest.approx(0.06)
    assert metrics["conversion_relative_lift"] == pytest.approx(3.0)
    assert metrics["response_lift_ci95"] == pytest.approx(newcombe_by_hand(20, 100, 5, 50), abs=1e-6)
    assert metrics["conversion_lift_ci95"] == pytest.approx(newcombe_by_hand(8, 100, 1, 50), abs=1e-6)


def test_no_control_means_no_lift():
    metrics = evaluate.arm_metrics(Arm(10, 1, 0), Arm(0, 0, 0))
    assert metrics["control_response_rate"] is None
    assert metrics["response_lift"] is None and metrics["response_lift_ci95"] is None


# --- a hand-made contact history -------------------------------------------------------------------
#
# customers c0001..c0200; within each block the first k responded, the first j converted:
#   c0001-c0070  sms target        56 responded  20 converted   gold
#   c0071-c0150  sms control       48 responded   8 converted   c0071-c0100 gold, the rest silver
#   c0151-c0180  app-push target    6 responded   3 converted   silver
#   c0181-c0200  app-push control   2 responded   0 converted   silver
# segment 'rich': c0001-c0010 (target, all responded and converted), c0071-c0075 (control, same)

SEP_1 = int(datetime(2026, 9, 1, 10, tzinfo=timezone.utc).timestamp() * 1000)
BLOCKS = [  # first, last, channel, control, responded, converted, at_ms
    (1, 70, "sms", False, 56, 20, SEP_1),
    (71, 150, "sms", True, 48, 8, SEP_1),
    (151, 180, "app-push", False, 6, 3, SEP_1 + 86_400_000),
    (181, 200, "app-push", True, 2, 0, SEP_1 + 86_400_000),
]


def history(root: Path) -> Path:
    rows = []
    for first, last, channel, control, responded, converted, at_ms in BLOCKS:
        for k, number in enumerate(range(first, last + 1)):
            rows.append(
                {
                    "customer_id": f"c{number:04d}",
                    "campaign": "q3-wealth",
                    "product": "wealth-beginner",
                    "channel": channel,
                    "at_ms": at_ms,
                    "responded": k < responded,
                    "converted": k < converted,
                    "control": control,
                }
            )
    rows.append({**rows[0], "campaign": "another", "customer_id": "c0999"})
    contacts = root / "contacts" / "part-00000.parquet"
    contacts.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=CONTACT_HISTORY), contacts)
    customers = root / "customers" / "part-00000.parquet"
    customers.parent.mkdir(parents=True)
    ids = [f"c{n:04d}" for n in range(1, 201)]
    pq.write_table(
        pa.table({"customer_id": ids, "tier": ["gold" if n <= 100 else "silver" for n in range(1, 201)]}), customers
    )
    members = root / "jobs" / "segments" / "members.parquet"
    members.parent.mkdir(parents=True)
    rich = [f"c{n:04d}" for n in [*range(1, 11), *range(71, 76)]]
    pq.write_table(pa.table({"customer_id": rich, "segment": ["rich"] * len(rich)}), members)
    return root


def by_group(rows: list[dict]) -> dict[str, dict]:
    return {row["group"]: row for row in rows}


def test_history_by_hand(tmp_path: Path):
    summary = evaluate.run(history(tmp_path), "q3-wealth")
    assert summary["source"] == "history" and summary["rows"] == 200
    overall = summary["overall"]
    assert (overall["reached"], overall["responded"], overall["converted"]) == (100, 62, 23)
    assert (overall["control"], overall["control_responded"], overall["control_converted"]) == (100, 50, 8)
    assert overall["response_rate"] == 0.62 and overall["control_response_rate"] == 0.5
    assert overall["response_lift"] == pytest.approx(0.12)
    assert overall["response_lift_ci95"] == pytest.approx(newcombe_by_hand(62, 100, 50, 100), abs=1e-6)
    assert overall["conversion_lift"] == pytest.approx(0.15)

    channel = by_group(summary["breakdowns"]["channel"])
    assert channel["sms"]["response_lift"] == pytest.approx(0.2)  # 56/70 - 48/80: Newcombe's example
    assert channel["sms"]["response_lift_ci95"] == pytest.approx([0.0524, 0.3339], abs=5e-5)
    assert (channel["app-push"]["response_rate"], channel["app-push"]["control_response_rate"]) == (0.2, 0.1)

    tier = by_group(summary["breakdowns"]["tier"])
    assert (tier["gold"]["reached"], tier["gold"]["responded"], tier["gold"]["control"]) == (70, 56, 30)
    assert tier["gold"]["control_responded"] == 30
    assert (tier["silver"]["reached"], tier["silver"]["responded"]) == (30, 6)
    assert (tier["silver"]["control"], tier["silver"]["control_responded"]) == (70, 20)

    segment = by_group(summary["breakdowns"]["segment"])
    assert (segment["rich"]["reached"], segment["rich"]["control"], segment["rich"]["response_lift"]) == (10, 5, 0.0)
    assert (segment["(none)"]["reached"], segment["(none)"]["responded"], segment["(none)"]["converted"]) == (
        90,
        52,
        13,
    )
    assert (segment["(none)"]["control"], segment["(none)"]["control_responded"]) == (95, 45)

    day = by_group(summary["breakdowns"]["day"])
    assert sorted(day) == ["2026-09-01", "2026-09-02"]
    assert day["2026-09-02"]["reached"] == 30
    assert list(by_group(summary["breakdowns"]["product"])) == ["wealth-beginner"]
    written = json.loads((tmp_path / "jobs" / "evaluate" / "q3-wealth" / "summary.json").read_text())
    assert written["overall"] == overall


def test_reports(tmp_path: Path):
    summary = evaluate.run(history(tmp_path), "q3-wealth")
    page = Path(summary["report"]["html"])
    assert page == tmp_path / "jobs" / "evaluate" / "q3-wealth" / "report.html"
    text = page.read_text()
    low, high = newcombe_by_hand(62, 100, 50, 100)
    for shown in ("62.00%", "50.00%", "12.00%", f"[{low * 100:.2f}%, {high * 100:.2f}%]", "[5.24%, 33.39%]", "<svg"):
        assert shown in text
    for offline in ("<script", "http://cdn", "https://"):
        assert offline not in text
    book = load_workbook(summary["report"]["xlsx"])
    assert book.sheetnames == ["overall", "segment", "channel", "product", "tier", "day"]
    sheet = book["overall"]
    header = [cell.value for cell in sheet[1]]
    row = dict(zip(header, [cell.value for cell in sheet[2]], strict=True))
    assert (row["group"], row["Reached"], row["Responded"], row["Response rate"]) == ("all", 100, 62, 0.62)
    assert row["Response lift 95% CI low"] == pytest.approx(low, abs=1e-6)
    channels = {r[0].value: r for r in book["channel"].iter_rows(min_row=2)}
    assert set(channels) == {"sms", "app-push"}


def test_an_unknown_campaign_is_not_found(tmp_path: Path):
    from runtime.errors import NotFound

    with pytest.raises(NotFound, match="ghost"):
        evaluate.run(history(tmp_path), "ghost")


# --- a run with simulated responses ----------------------------------------------------------------


def a_run(root: Path, customers: int = 4000) -> Path:
    directory = root / "jobs" / "campaign" / "q4-wealth" / "r1"
    directory.mkdir(parents=True)
    ids = [f"c{n:05d}" for n in range(customers)]
    control = [n % 2 == 0 for n in range(customers)]
    submitted = [not held and n % 10 != 1 for n, held in enumerate(control)]  # one target in five failed
    table = pa.table([ids, ["sms"] * customers, control, submitted], schema=AUDIENCE)
    pq.write_table(table, directory / "audience.parquet")
    (directory / "summary.json").write_text(json.dumps({"product": "wealth-beginner", "started_ms": SEP_1}))
    truth = root / "truth" / "latent.parquet"
    truth.parent.mkdir(parents=True)
    pq.write_table(pa.table({"customer_id": ids, "finance": [0.5] * customers, "car": [0.0] * customers}), truth)
    return root


def test_preferences_of_products():
    assert evaluate.preference_for("wealth-beginner") == "finance"
    assert evaluate.preference_for("car-insurance") == "car"
    assert evaluate.preference_for("roaming-pack") == "travel"
    assert evaluate.preference_for("5g-upgrade") == "video"
    assert evaluate.preference_for("mystery") is None


def test_affinities_of_any_scale_become_ranks():
    latent = pa.table({"customer_id": ["a", "b", "c", "d"], "travel": [-3.0, 10.0, 0.0, 2.0]})
    assert evaluate.affinities(latent, "roaming-pack") == {"a": 0.125, "b": 0.875, "c": 0.375, "d": 0.625}
    in_range = pa.table({"customer_id": ["a"], "travel": [0.3], "car": [0.9]})
    assert evaluate.affinities(in_range, "mystery") == pytest.approx({"a": 0.6})


def test_simulated_responses_favour_the_contacted(tmp_path: Path):
    data = a_run(tmp_path)
    path = evaluate.simulate_responses(data, "q4-wealth", "r1", seed=7)
    first = pq.read_table(path)
    assert first.schema == evaluate.RESPONSES
    assert pq.read_table(evaluate.simulate_responses(data, "q4-wealth", "r1", seed=7)).equals(first)
    rows = first.to_pylist()
    reached = [r for r in rows if r["reached"]]
    control = [r for r in rows if r["control"]]
    assert len(reached) == 1600 and len(control) == 2000
    # affinity 0.5: contacted 0.03 + 0.22 * 0.5 = 14%, control 0.01 + 0.04 * 0.5 = 3%
    assert 0.11 < sum(r["responded"] for r in reached) / len(reached) < 0.17
    assert 0.015 < sum(r["responded"] for r in control) / len(control) < 0.045
    assert all(r["responded"] or not r["converted"] for r in rows)
    assert all((r["responded_ms"] is not None) == r["responded"] for r in rows)
    assert all(SEP_1 <= r["responded_ms"] < SEP_1 + 3 * 86_400_000 for r in rows if r["responded"])


def test_a_run_is_evaluated_with_its_reached_targets_and_control(tmp_path: Path):
    data = a_run(tmp_path)
    summary = evaluate.run(data, "q4-wealth", run_id="r1", seed=7)
    assert (summary["source"], summary["run"], summary["simulated"]) == ("run", "r1", True)
    assert (summary["overall"]["reached"], summary["overall"]["control"]) == (1600, 2000)
    assert summary["overall"]["response_lift"] > 0
    assert summary["overall"]["response_lift_ci95"][0] > 0
    assert list(by_group(summary["breakdowns"]["day"])) == ["2026-09-01"]
    assert list(by_group(summary["breakdowns"]["channel"])) == ["sms"]
    assert list(by_group(summary["breakdowns"]["tier"])) == ["(none)"]  # no customers table
    assert summary["model"]["contacted_slope"] == 0.22
    assert "contacted_slope = 0.22" in Path(summary["report"]["html"]).read_text()
    again = evaluate.run(data, "q4-wealth", run_id="r1", seed=99)  # responses exist: not drawn again
    assert again["simulated"] is False and again["overall"] == summary["overall"]


def test_without_history_the_latest_run_is_evaluated(tmp_path: Path):
    summary = evaluate.run(a_run(tmp_path), "q4-wealth")
    assert (summary["source"], summary["run"]) == ("run", "r1")
