"""Tags per customer: the static consumption, stay-area, life-circle and event-presence families
of the life-circle system (seed 002), one Ray task per customer part.

``run(data)`` writes ``DATA/jobs/tags/part-XXXXX.parquet`` (``layout.TAGS``), the stay-area
analysis the stay tags are read from in ``DATA/jobs/stay-areas/part-XXXXX.parquet``
(``stays.STAY_AREAS``), and ``DATA/jobs/tags/summary.json``. Every family is a pure function of
pyarrow tables and numpy arrays (``tag_part`` runs them all for one part), so it is tested
without Ray.
A first pass over the customers parts computes the population edges (value tiers, intensity);
each part task then works through its part ``CHUNK_CUSTOMERS`` customers at a time, which bounds
its memory (every family is per customer).

Where the code lives: ``consumption.py`` (static consumption and travel), ``stays.py``
(presence, stay areas), ``circles.py`` (life circles, event presence) and ``visits.py`` (the
clock, the window, the city and the visits they all read, shared with the timing job).

Time
----
Clock reasoning is in local time, Asia/Shanghai: a fixed UTC+8 (no daylight saving since 1991);
the customers' ``timezone`` column is not read. A local date D has a *day* part, 08:00-20:00 on D,
and a *night* part, 20:00 on D to 08:00 on D+1 ("the night of D": Friday 22:00 to Saturday 02:00
is Friday's night, a weekday). Weekend dates are Saturday and Sunday.

The observation window is the data's span (``manifest.json``: ``start`` or ``start_ms`` plus
``days``; else the stays' first start to last end), cut at ``now_ms`` when given. Stays are
clipped to it. Its dates are those whose day part starts (08:00) inside it: a ``days``-day window
from local midnight (the generator's) or from UTC midnight has ``days`` dates.

A customer is *present* at a place in a slot (date, day|night) when their stays there in that
slot add up to at least 30 minutes (``MIN_PRESENCE_MS``): passing through does not count.

Tags (``value`` is 1.0 unless said; ``place_id`` is null unless said)
--------------------------------------------------------------------
Static consumption:

- ``value:<1..5>`` value tier: the band of the customer's mean monthly ARPU between the
  population's quintile edges (5 = the top 20%). Edges are computed over all parts first.
- ``arpu-trend:<up|flat|down>``: the least-squares slope of monthly ARPU (oldest first) as a share
  of the mean ARPU, per month: >= +5% up, <= -5% down, else flat; value = that share. Needs two
  months or more.
- ``intensive:<data|voice|sms>``: ``data_gb`` / ``voice_min`` / ``sms_count`` at or above the
  population's 80th percentile (and above 0).
- ``residence:high-value``: the home cell's place has ``price_band`` >= 4; place_id = home.
- ``car-owner``: ``car_owner`` is true.
- ``travel``: any stay at a ``transport > airport`` place; place_id = the airport with most time.

Stay areas, one per customer, place and slot kind (``day|night`` x ``weekday|weekend``):

- ``stay:<frequency>:<l1>><l2>><l3>:<day|night>-<weekday|weekend>``, e.g.
  ``stay:frequent:office>tower>grade-a-tower:day-weekday``. share = dates present in that slot
  kind / dates of that kind (weekday or weekend) in the window; frequency = ``frequent`` (share >=
  50%), ``general`` (>= 20%), ``occasional`` (> 0); value = share; place_id = the place.

Life circles, seed 002's four classes, each with finer levels that repeat the coarse tag with
suffixes; place_id = the key building (the place the tag was read from):

- ``circle:region:<district>`` and ``circle:region:<district>:<home|work>``: the district of the
  home and of the work cell's place (the coarse tag once per district, home first).
- ``circle:people:<office|campus|residential>``, ``...:<l2>`` and ``...:<l2>:<l3>`` (e.g.
  ``circle:people:campus:school:university``): among the places the customer is frequently
  present at on weekday days, the one with the most weekday daytime; its ``category_l1`` office /
  education / residential gives the circle. value = its share.
- ``circle:demand:<sports|music|travel|shopping>``, ``...:<l2>``, ``...:<l2>:<l3>`` (e.g.
  ``circle:demand:sports:stadium:basketball-arena``): general or frequent presence (share >= 20%,
  any slot kind) at a place any of whose category levels is listed in ``DEMAND_RULES``; at each
  level the key building is the one with the highest share; value = that share.
- ``circle:behaviour:nine-to-five``: at least 6 hours within 09:00-17:00 at one office place
  (``category_l1`` office, or the customer's work place) on >= 50% of the window's weekdays;
  value = that share; place_id = that office.
- ``circle:behaviour:business-traveller``: present at an airport on >= 3 distinct dates; value =
  those dates / the window's dates; place_id = the airport present at on most dates.
- ``circle:behaviour:night-owl``: up between 00:00 and 05:00 (the night of D) on >= 25% of the
  window's dates: an app/web session starting then, or >= 30 minutes at a place that is neither
  residential nor the customer's home or work place. value = that share.

Event presence:

- ``event:<type>:<event_id>``: the customer's stays at the event's place overlap the event by at
  least 30 minutes in all; value = overlap / event duration; place_id = the venue.
- ``event:<type>``: at least one such event of that type; place_id = the venue of the first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runtime.batch import layout
from runtime.batch.circles import (
    business_traveller_tags,
    demand_tags,
    event_tags,
    night_owl_tags,
    nine_to_five_tags,
    people_tags,
    region_tags,
)
from runtime.batch.consumption import USAGE, Population, consumption_tags, population, population_part, travel_tags
from runtime.batch.runner import JobTimer, run_parts, write_summary, write_table
from runtime.batch.stays import STAY_AREAS, presence, stay_area_table, stay_areas, stay_tags
from runtime.batch.visits import (
    CHUNK_CUSTOMERS,
    City,
    Window,
    customer_chunks,
    load_city,
    observation_window,
    read_part,
    resolve_visits,
    strings,
)
from runtime.errors import NotFound

JOB = "tags"
STAY_AREAS_JOB = "stay-areas"


# --- one part -----------------------------------------------------------------------------------


def tag_part(
    customers: pa.Table,
    stays: pa.Table,
    city: City,
    window: Window,
    pop: Population,
    sessions: pa.Table | None = None,
) -> tuple[pa.Table, pa.Table]:
    """All tag families for one part's customers: (tags in ``layout.TAGS`` sorted by customer and
    tag, the stay-area analysis in ``STAY_AREAS``)."""
    ids = strings(customers, "customer_id")
    visits = resolve_visits(stays, customers.column("customer_id"), city, window)
    pres = presence(visits, window)
    areas = stay_areas(pres, window)
    families = [
        consumption_tags(customers, city, pop),
        travel_tags(visits, ids, city),
        stay_tags(areas, ids, city),
        region_tags(customers, city),
        people_tags(areas, ids, city),
        demand_tags(areas, ids, city),
        nine_to_five_tags(visits, customers, city, window),
        business_traveller_tags(pres, ids, city, window),
        night_owl_tags(visits, customers, city, window, sessions),
        event_tags(visits, ids, city),
    ]
    tags = pa.concat_tables(families).sort_by([("customer_id", "ascending"), ("tag", "ascending")])
    return tags, stay_area_table(areas, ids, city)


# --- the job ------------------------------------------------------------------------------------


def population_of(data: Path, customer_parts: Sequence[Path]) -> Population:
    """The first pass: edges over every customer of the data set."""
    pieces = run_parts(population_part, list(customer_parts), label="tags: population")

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in pieces]) if pieces else np.zeros(0)

    return population(joined("arpu_mean"), {name: joined(name) for name in USAGE})


@dataclass(frozen=True)
class TagTask:
    data: Path
    part: str  # file name, the same in every per-customer table
    window: Window
    pop: Population


def _tag_task(task: TagTask) -> dict[str, Any]:
    customers = read_part(task.data, "customers", task.part)
    stays = read_part(task.data, "stays", task.part)
    sessions = read_part(task.data, "sessions", task.part, ["customer_id", "start_ms"])
    city = load_city(task.data)
    done = [
        tag_part(*chunk[:2], city, task.window, task.pop, chunk[2])
        for chunk in customer_chunks(customers, CHUNK_CUSTOMERS, stays, sessions)
    ]
    tags = _concat([d[0] for d in done], layout.TAGS).sort_by([("customer_id", "ascending"), ("tag", "ascending")])
    areas = _concat([d[1] for d in done], STAY_AREAS)
    write_table(tags, layout.job_dir(task.data, JOB) / task.part)
    write_table(areas, layout.job_dir(task.data, STAY_AREAS_JOB) / task.part)
    return {
        "customers": customers.num_rows,
        "rows": tags.num_rows,
        "tagged": len(pc.unique(tags.column("customer_id"))),
        "counts": dict(Counter(tags.column("tag").to_pylist())),
        "stay_areas": areas.num_rows,
    }


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _clear(directory: Path) -> None:
    """Drop the part files of an earlier run (it may have had more parts)."""
    for old in directory.glob("part-*.parquet"):
        old.unlink()


def _family(tag: str) -> str:
    head = tag.split(":", 2)
    return ":".join(head[:2]) if head[0] in ("circle", "stay") and len(head) > 1 else head[0]


def summarise(results: Iterable[dict[str, Any]], window: Window, pop: Population, top: int = 100) -> dict[str, Any]:
    """The job summary from the parts' figures."""
    results = list(results)
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    families: Counter[str] = Counter()
    for tag, n in counts.items():
        families[_family(tag)] += n
    return {
        "job": JOB,
        "parts": len(results),
        "customers": sum(r["customers"] for r in results),
        "customers_tagged": sum(r["tagged"] for r in results),
        "rows": sum(r["rows"] for r in results),
        "distinct_tags": len(counts),
        "stay_areas": sum(r["stay_areas"] for r in results),
        "window": window.describe(),
        "population": {"arpu_edges": [round(e, 2) for e in pop.arpu_edges], "intensive": dict(pop.intensive)},
        "families": dict(sorted(families.items())),
        "tag_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]),
    }


def run(data: Path, *, now_ms: int | None = None) -> dict[str, Any]:
    """Tag every customer of ``data`` (as of ``now_ms``, default: the data's end); returns the
    summary, also written to ``jobs/tags/summary.json``."""
    timer = JobTimer()
    data = Path(data)
    customer_parts = layout.parts(data, "customers")
    if not customer_parts:
        raise NotFound(f"data set {data}: no customers parts in {layout.table_dir(data, 'customers')}")
    window = observation_window(data, now_ms=now_ms)
    pop = population_of(data, customer_parts)
    for job in (JOB, STAY_AREAS_JOB):
        _clear(layout.job_dir(data, job))
    tasks = [TagTask(data, part.name, window, pop) for part in customer_parts]
    results = run_parts(_tag_task, tasks, label="tags")
    summary = {**summarise(results, window, pop), **timer.figures()}
    write_summary(layout.job_dir(data, JOB), summary)
    return summary
