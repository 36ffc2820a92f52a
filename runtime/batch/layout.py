"""Where batch data lives and what it looks like: the contract between the synthetic data
generator, the jobs and the profile-store sync.

A data set is a directory of Parquet tables (``pyarrow``), each a directory of part files so
that jobs can fan out one Ray task per part::

    DATA/
      customers/part-00000.parquet ...   one row per customer              CUSTOMERS
      places/places.parquet              the city: places with categories   PLACES
      cells/cells.parquet                radio cells, each in a place (or none) CELLS
      products/products.parquet          what can be offered                PRODUCTS
      events/events.parquet              event definitions (a game, a concert) EVENT_DEFS
      stays/part-00000.parquet ...       signalling: customer in a cell from start to end  STAYS
      sessions/part-*.parquet            app and web sessions               SESSIONS
      calls/part-*.parquet               hotline calls                      CALLS
      adoption/part-*.parquet            product adoption history           ADOPTION
      contacts/part-*.parquet            past campaign contacts and responses CONTACT_HISTORY
      manifest.json                      generator parameters (seed, customers, days, start)

Part files of the per-customer tables are split by customer (``part = crc32(customer) % parts``
is not required; a customer's rows are all in the same part number across tables), so a job
can join the tables of one part without a shuffle.

Job outputs go to ``DATA/jobs/<job>/`` (Parquet parts plus ``summary.json``).

Times are epoch milliseconds (int64), UTC. Place categories are a three-level hierarchy,
``category_l1 > category_l2 > category_l3`` (e.g. ``transport > airport > international-departure-hall``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

CUSTOMERS = pa.schema(
    [
        ("customer_id", pa.string()),
        ("phone", pa.string()),
        ("imei", pa.string()),
        ("age", pa.int16()),
        ("gender", pa.string()),  # f | m
        ("tier", pa.string()),  # bronze | silver | gold | platinum
        ("plan", pa.string()),  # e.g. 5g-plus, 4g-basic, prepaid
        ("arpu", pa.list_(pa.float32())),  # monthly ARPU, oldest first (6 months)
        ("data_gb", pa.float32()),  # monthly averages
        ("voice_min", pa.float32()),
        ("sms_count", pa.float32()),
        ("device_brand", pa.string()),
        ("car_owner", pa.bool_()),
        ("housing_fund", pa.bool_()),
        ("main_bank", pa.string()),
        ("has_card", pa.bool_()),
        ("home_cell", pa.string()),
        ("work_cell", pa.string()),  # null: no regular workplace
        ("timezone", pa.string()),
    ]
)

PLACES = pa.schema(
    [
        ("place_id", pa.string()),
        ("name", pa.string()),
        ("category_l1", pa.string()),  # e.g. residential, office, education, transport, sports, retail, health, leisure
        ("category_l2", pa.string()),  # e.g. estate, tower, university, airport, stadium, mall, hospital, scenic-spot
        ("category_l3", pa.string()),  # e.g. estate-high, grade-a-tower, campus, international-departure-hall
        ("district", pa.string()),  # region level of the life circle
        ("price_band", pa.int8()),  # residential: 1 (low) .. 5 (high); else null
        ("lat", pa.float64()),
        ("lon", pa.float64()),
    ]
)

CELLS = pa.schema([("cell_id", pa.string()), ("place_id", pa.string()), ("lat", pa.float64()), ("lon", pa.float64())])

PRODUCTS = pa.schema(
    [
        ("product", pa.string()),  # e.g. wealth-beginner, roaming-pack, 5g-upgrade, video-pack, car-insurance
        ("domain", pa.string()),  # telecom | bank
        ("name", pa.string()),
    ]
)

EVENT_DEFS = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", pa.string()),  # e.g. cba-game, concert, expo
        ("place_id", pa.string()),
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
    ]
)

STAYS = pa.schema(
    [("customer_id", pa.string()), ("cell_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64())]
)

SESSIONS = pa.schema(
    [
        ("customer_id", pa.string()),
        ("kind", pa.string()),  # app | web
        ("site", pa.string()),  # e.g. official, video, shopping, sports, music, finance, travel
        ("start_ms", pa.int64()),
        ("duration_s", pa.int32()),
    ]
)

CALLS = pa.schema(
    [("customer_id", pa.string()), ("line", pa.string()), ("start_ms", pa.int64()), ("duration_s", pa.int32())]
)

ADOPTION = pa.schema(
    [
        ("customer_id", pa.string()),
        ("product", pa.string()),
        ("adopted", pa.bool_()),  # offered or eligible and took it (True), or did not (False)
        ("at_ms", pa.int64()),
    ]
)

CONTACT_HISTORY = pa.schema(
    [
        ("customer_id", pa.string()),
        ("campaign", pa.string()),
        ("product", pa.string()),
        ("channel", pa.string()),
        ("at_ms", pa.int64()),
        ("responded", pa.bool_()),
        ("converted", pa.bool_()),
        ("control", pa.bool_()),  # in the campaign's control group: not contacted
    ]
)

TABLES: dict[str, pa.Schema] = {
    "customers": CUSTOMERS,
    "places": PLACES,
    "cells": CELLS,
    "products": PRODUCTS,
    "events": EVENT_DEFS,
    "stays": STAYS,
    "sessions": SESSIONS,
    "calls": CALLS,
    "adoption": ADOPTION,
    "contacts": CONTACT_HISTORY,
}
PER_CUSTOMER = ("customers", "stays", "sessions", "calls", "adoption", "contacts")  # split into parts

# --- job outputs --------------------------------------------------------------------------------

TAGS = pa.schema(
    [
        ("customer_id", pa.string()),
        ("tag", pa.string()),  # e.g. value:5, arpu-trend:up, stay:frequent:office>tower>grade-a-tower:day-weekday
        ("value", pa.float32()),  # strength or score where it applies (1.0 otherwise)
        ("place_id", pa.string()),  # key building / place, when the tag is about a place
    ]
)

SCORES = pa.schema([("customer_id", pa.string()), ("product", pa.string()), ("score", pa.float32())])  # 0..100

PLAN = pa.schema(
    [
        ("customer_id", pa.string()),
        ("campaign", pa.string()),
        ("product", pa.string()),
        ("channel", pa.string()),
        ("score", pa.float32()),
    ]
)


def table_dir(data: Path, table: str) -> Path:
    return Path(data) / table


def job_dir(data: Path, job: str) -> Path:
    return Path(data) / "jobs" / job


def parts(data: Path, table: str) -> list[Path]:
    """The part files of a table, in order."""
    return sorted(table_dir(data, table).glob("*.parquet"))
