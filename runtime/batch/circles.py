"""The life-circle tags, seed 002's four classes (region, people, demand, behaviour), and event
presence (definitions in ``tags.py``'s docstring).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from runtime.batch.stays import FREQUENT, GENERAL, MIN_PRESENCE_MS, Presence, StayAreas
from runtime.batch.visits import (
    DAY_MS,
    HOUR_MS,
    LOCAL_OFFSET_MS,
    MINUTE_MS,
    City,
    Visits,
    Window,
    best_in_group,
    group_rows,
    index_of,
    is_weekend,
    local_date,
    lookup,
    split_daily,
    strings,
    tag_table,
)

EVENT_MIN_OVERLAP_MS = 30 * MINUTE_MS
OFFICE_HOURS = (9, 17)
NINE_TO_FIVE_MIN_MS = 6 * HOUR_MS
NINE_TO_FIVE_SHARE = 0.5
BUSINESS_TRAVELLER_DATES = 3
LATE_HOURS = (24, 29)  # 00:00-05:00 after the date: the night of D
NIGHT_OWL_SHARE = 0.25
PEOPLE_CIRCLES = {"office": "office", "education": "campus", "residential": "residential"}
DEMAND_RULES: tuple[tuple[str, frozenset[str]], ...] = (  # a place matches if any of its levels is listed
    ("sports", frozenset({"sports"})),
    ("music", frozenset({"concert-hall", "livehouse", "music-venue", "ktv"})),
    ("travel", frozenset({"airport", "railway", "railway-station"})),
    ("shopping", frozenset({"mall"})),
)


# --- life circles -------------------------------------------------------------------------------


def region_tags(customers: pa.Table, city: City) -> pa.Table:
    """``circle:region:<district>[:home|:work]`` from the home and work cells' places."""
    ids = strings(customers, "customer_id")
    place = {role: city.cell_place(customers.column(f"{role}_cell")) for role in ("home", "work")}
    district = {role: lookup(city.district, p) for role, p in place.items()}
    out = []
    for role in ("home", "work"):
        ok = np.array([d is not None for d in district[role]], dtype=bool)
        names = [f"circle:region:{d}:{role}" for d in district[role][ok]]
        out.append(tag_table(ids[ok], names, 1.0, city.place_id[place[role][ok]]))
        if role == "work":
            ok &= district["work"] != district["home"]
        names = [f"circle:region:{d}" for d in district[role][ok]]
        out.append(tag_table(ids[ok], names, 1.0, city.place_id[place[role][ok]]))
    return pa.concat_tables(out)


def circle_levels(prefix: np.ndarray, rows: np.ndarray, areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``<prefix>``, ``<prefix>:<l2>`` and ``<prefix>:<l2>:<l3>`` (``prefix`` per row) for the
    stay-area ``rows``; at each level the row with the highest share, then stay time, gives the
    value and the key building."""
    out = []
    for level, code in ((0, None), (1, city.l2_code), (2, city.path_code)):
        customer = areas.customer[rows]
        group = customer if code is None else group_rows(customer, code[areas.place[rows]])[1]
        chosen = best_in_group(group, areas.share[rows], areas.stay_ms[rows])
        best = rows[chosen]
        levels = zip(prefix[chosen], city.l2[areas.place[best]], city.l3[areas.place[best]], strict=True)
        names = [":".join(parts[: level + 1]) for parts in levels]
        out.append(tag_table(ids[areas.customer[best]], names, areas.share[best], city.place_id[areas.place[best]]))
    return pa.concat_tables(out)


def people_tags(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``circle:people:<circle>[:<l2>[:<l3>]]`` from the main frequent weekday-daytime place."""
    frequent = np.flatnonzero((areas.slot == 0) & (areas.share >= FREQUENT))
    rows = frequent[best_in_group(areas.customer[frequent], areas.stay_ms[frequent], areas.share[frequent])]
    circle = np.array([PEOPLE_CIRCLES.get(c, "") for c in city.l1[areas.place[rows]]], dtype=object)
    rows, circle = rows[circle != ""], circle[circle != ""]
    return circle_levels(np.array([f"circle:people:{c}" for c in circle], dtype=object), rows, areas, ids, city)


def demand_tags(areas: StayAreas, ids: np.ndarray, city: City) -> pa.Table:
    """``circle:demand:<class>[:<l2>[:<l3>]]`` from general or frequent presence at matching places."""
    out = []
    for name, values in DEMAND_RULES:
        rows = np.flatnonzero((areas.share >= GENERAL) & city.matches(values)[areas.place])
        out.append(circle_levels(np.full(len(rows), f"circle:demand:{name}", dtype=object), rows, areas, ids, city))
    return pa.concat_tables(out)


def nine_to_five_tags(visits: Visits, customers: pa.Table, city: City, window: Window) -> pa.Table:
    """``circle:behaviour:nine-to-five``: long office hours at one office on most weekdays."""
    ids = strings(customers, "customer_id")
    work = city.cell_place(customers.column("work_cell"))
    office = visits.take(city.is_office[visits.place] | (visits.place == work[visits.customer]))
    row, date, overlap = split_daily(office.start_ms, office.end_ms, *OFFICE_HOURS)
    keep = ~is_weekend(date) & window.holds(date)
    row, date, overlap = row[keep], date[keep], overlap[keep]
    (customer, place, _), group = group_rows(office.customer[row], office.place[row], date)
    long = np.bincount(group, weights=overlap, minlength=len(customer)) >= NINE_TO_FIVE_MIN_MS
    (customer, place), group = group_rows(customer[long], place[long])
    share = np.bincount(group, minlength=len(customer)) / max(window.weekdays(), 1)
    best = best_in_group(customer, share)
    best = best[share[best] >= NINE_TO_FIVE_SHARE]
    return tag_table(ids[customer[best]], "circle:behaviour:nine-to-five", share[best], city.place_id[place[best]])


def business_traveller_tags(pres: Presence, ids: np.ndarray, city: City, window: Window) -> pa.Table:
    """``circle:behaviour:business-traveller``: at an airport on several dates."""
    ok = pres.present & city.is_airport[pres.place]
    (customer, place, date), _ = group_rows(pres.customer[ok], pres.place[ok], pres.date[ok])
    dates = np.bincount(group_rows(customer, date)[0][0], minlength=len(ids))
    (customer, place), group = group_rows(customer, place)
    best = best_in_group(customer, np.bincount(group, minlength=len(customer)))
    best = best[dates[customer[best]] >= BUSINESS_TRAVELLER_DATES]
    share = dates[customer[best]] / max(len(window.dates()), 1)
    return tag_table(ids[customer[best]], "circle:behaviour:business-traveller", share, city.place_id[place[best]])


def night_owl_tags(
    visits: Visits, customers: pa.Table, city: City, window: Window, sessions: pa.Table | None = None
) -> pa.Table:
    """``circle:behaviour:night-owl``: up after midnight (sessions, or out) on many dates."""
    ids = strings(customers, "customer_id")
    home, work = (city.cell_place(customers.column(f"{role}_cell")) for role in ("home", "work"))
    away = ~city.is_residential[visits.place] & (visits.place != home[visits.customer])
    out = visits.take(away & (visits.place != work[visits.customer]))
    row, date, overlap = split_daily(out.start_ms, out.end_ms, *LATE_HOURS)
    (customer, date), group = group_rows(out.customer[row], date)
    late = np.bincount(group, weights=overlap, minlength=len(customer)) >= MIN_PRESENCE_MS
    customer, date = customer[late], date[late]
    if sessions is not None and sessions.num_rows:
        who = index_of(sessions.column("customer_id"), customers.column("customer_id"))
        start = np.asarray(sessions.column("start_ms").to_numpy(), dtype=np.int64)
        up = (who >= 0) & ((start + LOCAL_OFFSET_MS) % DAY_MS < (LATE_HOURS[1] - 24) * HOUR_MS)
        customer = np.concatenate([customer, who[up]])
        date = np.concatenate([date, local_date(start[up], LATE_HOURS[0])])
    inside = window.holds(date)
    customer = group_rows(customer[inside], date[inside])[0][0]
    share = np.bincount(customer, minlength=len(ids)) / max(len(window.dates()), 1)
    ok = share >= NIGHT_OWL_SHARE
    return tag_table(ids[ok], "circle:behaviour:night-owl", share[ok])


# --- events -------------------------------------------------------------------------------------


def event_overlap(visits: Visits, venue: int, start_ms: int, end_ms: int, customers: int) -> np.ndarray:
    """Per customer (row of the part's customers): ms of their stays at ``venue`` in the event."""
    at = visits.take(visits.place == venue)
    overlap = np.clip(np.minimum(at.end_ms, end_ms) - np.maximum(at.start_ms, start_ms), 0, None)
    return np.bincount(at.customer, weights=overlap, minlength=customers)


def event_tags(visits: Visits, ids: np.ndarray, city: City) -> pa.Table:
    """``event:<type>:<event_id>`` for enough overlap with an event, and ``event:<type>`` once
    per type (the venue of the earliest such event)."""
    events = city.events.sort_by("start_ms")
    venue = city.place_index(events.column("place_id"))
    out: list[pa.Table] = []
    first: dict[tuple[str, str], Any] = {}
    for i, (event_id, kind) in enumerate(zip(strings(events, "event_id"), strings(events, "type"), strict=True)):
        start, end = events.column("start_ms")[i].as_py(), events.column("end_ms")[i].as_py()
        total = event_overlap(visits, int(venue[i]), start, end, len(ids))
        who = np.flatnonzero(total >= EVENT_MIN_OVERLAP_MS)
        place = lookup(city.place_id, venue[i : i + 1])[0]
        share = np.minimum(total[who] / max(end - start, 1), 1.0)
        out.append(tag_table(ids[who], f"event:{kind}:{event_id}", share, place))
        for customer in ids[who]:
            first.setdefault((customer, kind), place)
    out.append(tag_table([c for c, _ in first], [f"event:{k}" for _, k in first], 1.0, list(first.values())))
    return pa.concat_tables(out)
