"""``esp data generate`` and ``esp job <name>``: the batch side, as Ray tasks on the cluster
(``--address``, or the one ``esp up`` started) or on a private local Ray.

Each job reads a data directory (``runtime/batch/layout.py``), writes ``DATA/jobs/<job>/`` and
prints its summary as JSON (also in ``summary.json``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from runtime.cli.data import redis_url_option
from runtime.config.types import document_body
from runtime.errors import EspError

DEFAULT_URL = "http://127.0.0.1:8000"
data_option = click.option(
    "--data", "data", required=True, type=click.Path(file_okay=False, path_type=Path), help="The data directory."
)
address_option = click.option("--address", help="Ray cluster to run on (default: a private local Ray).")
cpus_option = click.option("--num-cpus", default=2, show_default=True, help="CPUs of the private local Ray.")


@contextmanager
def ray_for_jobs(address: str | None, num_cpus: int) -> Iterator[None]:
    """Ray for the job's tasks: the given cluster, else a private local one (stopped after)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    try:
        yield
    finally:
        ray.shutdown()


def _print(summary: dict[str, Any]) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


def _run(fn: Callable[[], dict[str, Any]], address: str | None, num_cpus: int) -> None:
    try:
        with ray_for_jobs(address, num_cpus):
            _print(fn())
    except EspError as exc:
        click.echo(json.dumps({"error": exc.to_dict()}), err=True)
        sys.exit(2)


def load_documents(kind: str, files: tuple[Path, ...], url: str | None) -> list[dict[str, Any]]:
    """Documents of ``kind`` from YAML files, or else from a running ESP's config API."""
    from runtime.config.documents import load_yaml_documents

    if files:
        return [raw for f in files for _, raw in load_yaml_documents(f) if raw.get("kind") == kind]
    from runtime.dev.client import EspClient

    with EspClient(url or DEFAULT_URL) as client:
        return client.request("GET", f"/v1/config/{kind}")["items"]


@click.group()
def data() -> None:
    """Synthetic data for the batch jobs."""


@data.command("generate")
@click.option("--customers", default=10_000, show_default=True, type=click.IntRange(min=10))
@click.option("--days", default=30, show_default=True, type=click.IntRange(min=1, max=366))
@click.option("--seed", default=7, show_default=True)
@click.option("--parts", type=click.IntRange(min=1), help="Part files per table (default: one per 50,000 customers).")
@click.option("--start", default="2026-10-01", show_default=True, help="First day (UTC).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@address_option
@cpus_option
def generate(
    customers: int, days: int, seed: int, parts: int | None, start: str, out: Path, address: str | None, num_cpus: int
) -> None:
    """A deterministic synthetic city, customers and their behaviour, as partitioned Parquet."""
    from runtime.batch.generate import generate as run_generate

    _run(
        lambda: run_generate(out, customers=customers, days=days, seed=seed, parts=parts, start=start),
        address,
        num_cpus,
    )


@click.group()
def job() -> None:
    """Batch jobs: tags, segments, matrix, allocate, timing, sync, campaign, evaluate."""


@job.command("tags")
@data_option
@address_option
@cpus_option
def job_tags(data: Path, address: str | None, num_cpus: int) -> None:
    """Consumption, stay-area, life-circle and event-presence tags per customer."""
    from runtime.batch import tags

    _run(lambda: tags.run(data), address, num_cpus)


@job.command("segments")
@data_option
@click.option("-f", "files", multiple=True, type=click.Path(exists=True, path_type=Path), help="Segment YAML.")
@click.option("--url", help="Read segment documents from this ESP (default when no -f).")
@click.option("--compare", nargs=2, help="Also compare two segments.")
@address_option
@cpus_option
def job_segments(
    data: Path,
    files: tuple[Path, ...],
    url: str | None,
    compare: tuple[str, str] | None,
    address: str | None,
    num_cpus: int,
) -> None:
    """Materialise segments (tag expressions) as customer sets, with a profile of each."""
    from runtime.batch import segments

    docs = load_documents("segment", files, url)
    _run(lambda: segments.run(data, docs, compare_pairs=[compare] if compare else ()), address, num_cpus)


@job.command("matrix")
@data_option
@click.option("--top-n", default=3, show_default=True)
@address_option
@cpus_option
def job_matrix(data: Path, top_n: int, address: str | None, num_cpus: int) -> None:
    """The customer x product match matrix: a model per product, scores 0-100, holdout AUC."""
    from runtime.batch import matrix

    _run(lambda: matrix.run(data, top_n=top_n), address, num_cpus)


@job.command("allocate")
@data_option
@click.option(
    "-f",
    "plan_file",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Allocation spec (JSON or YAML): campaigns, limits_by_tier, default_limit, channel_capacity.",
)
@address_option
@cpus_option
def job_allocate(data: Path, plan_file: Path, address: str | None, num_cpus: int) -> None:
    """Contact allocation: maximise total match score under contact limits, capacity, quotas."""
    from runtime.batch import allocate

    _run(lambda: allocate.run_spec(data, plan_file), address, num_cpus)


@job.command("timing")
@data_option
@address_option
@cpus_option
def job_timing(data: Path, address: str | None, num_cpus: int) -> None:
    """Crowd peaks and troughs per place category and hour; recommended sending hours."""
    from runtime.batch import timing

    _run(lambda: timing.run(data), address, num_cpus)


@job.command("sync")
@data_option
@redis_url_option
@click.option("--version", "version", help="Batch profile version (default: a timestamp).")
@click.option("--url", help="Read rules and segments from this ESP, for the tag usage report.")
@address_option
@cpus_option
def job_sync(
    data: Path, redis_url: str, version: str | None, url: str | None, address: str | None, num_cpus: int
) -> None:
    """Publish tags, segments and top scores to the profile store, switching at once."""
    from runtime.batch import sync

    used = load_documents("rule", (), url) + load_documents("segment", (), url) if url else None
    _run(lambda: sync.run(data, redis_url, version=version, rules_and_segments=used), address, num_cpus)


@job.command("campaign")
@click.argument("name")
@data_option
@click.option("--url", default=DEFAULT_URL, show_default=True, help="The ESP whose contact policy sends.")
@click.option("--run", "run_id", required=True, help="Names this run (submitting it again changes nothing).")
@click.option("--force", is_flag=True, help="Send now even if the campaign's start is later.")
@address_option
@cpus_option
def job_campaign(name: str, data: Path, url: str, run_id: str, force: bool, address: str | None, num_cpus: int) -> None:
    """Send a batch campaign through the same contact policy and channels as real-time offers."""
    from runtime.batch import campaign
    from runtime.policy.models import Campaign

    [doc] = [d for d in load_documents("campaign", (), url) if d["name"] == name] or [None]
    if doc is None:
        raise click.UsageError(f"no campaign named {name!r} at {url}")
    body = document_body(doc)
    _run(
        lambda: campaign.run(data, Campaign.model_validate(body), base_url=url, run_id=run_id, force=force),
        address,
        num_cpus,
    )


@job.command("evaluate")
@click.argument("name")
@data_option
@click.option("--run", "run_id", help="A run of 'esp job campaign' (default: the historical contacts).")
@click.option("--simulate", is_flag=True, help="Draw responses for the run from the synthetic world first.")
@address_option
@cpus_option
def job_evaluate(name: str, data: Path, run_id: str | None, simulate: bool, address: str | None, num_cpus: int) -> None:
    """Reached, responded, converted, lift against the control group; HTML and xlsx report."""
    from runtime.batch import evaluate

    def go() -> dict[str, Any]:
        if simulate and run_id:
            evaluate.simulate_responses(data, name, run_id)
        return evaluate.run(data, name, run_id=run_id)

    _run(go, address, num_cpus)
