"""CPU per event by kind of process over a run: real processes burning real CPU, measured from
/proc (the same reads ``esp bench`` makes of Redis, Serve and the actors)."""

from __future__ import annotations

import subprocess
import sys
import time

from runtime.dev.process_cpu import LOAD_CLIENT, CpuMeter, cpu_seconds

BURN = (
    "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
    "print('done', flush=True)\ntime.sleep(60)"
)


def burn_here(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_child_counts_as_its_kind_and_this_process_as_the_load_client():
    meter = CpuMeter().start()
    # the trailing argument only names the child as Redis, as its command line would
    child = subprocess.Popen(
        [sys.executable, "-c", BURN.format(s=0.4), "redis-server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        burn_here(0.2)
        meter.stop()
    finally:
        child.kill()
        child.wait()
    spent = meter.seconds_by_kind()
    assert 0.35 <= spent["redis"] <= 1.0  # it started during the run: counted from zero
    assert spent[LOAD_CLIENT] >= 0.18
    result = meter.result(1000)
    assert result["us_per_event"]["redis"] == round(spent["redis"] / 1000 * 1e6, 2)
    assert next(iter(result["us_per_event"])) == "redis"  # most first
    assert result["total_us_per_event"] >= result["us_per_event"]["redis"] + result["us_per_event"][LOAD_CLIENT] - 0.01
    assert result["cores_busy"] is not None and result["cores_busy"] > 0


def test_a_finished_child_that_was_waited_for_counts_in_its_parent():
    meter = CpuMeter().start()
    subprocess.run(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"],
        check=True,
    )
    meter.stop()
    assert meter.seconds_by_kind()[LOAD_CLIENT] >= 0.28  # its time is in this process's cutime


def test_a_process_that_is_gone_reads_as_none():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_seconds(child.pid) is None


def test_the_sequence_table_says_where_each_run_spent_its_cpu():
    from runtime.dev.bench import sequence_markdown

    run = {"senders": 4, "events": 1000, "cpu": {"us_per_event": {"redis": 11.7, "serve_replica": 4.9}}}
    run["cpu"] |= {"total_us_per_event": 16.6, "cores_busy": 1.7}
    table = sequence_markdown(
        {"runs": [run], "customers": 10, "batch_size": 100, "max_out_of_order_s": 0.0, "reorder_wait_ms": 2000}
    )
    assert "4 sender(s), CPU per event: 16.6 µs (1.7 cores busy): redis 11.7, serve_replica 4.9" in table
