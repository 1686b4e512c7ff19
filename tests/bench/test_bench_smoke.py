"""The benchmarks run (on a small stream) and their write accounting holds: a guard
against a bench that silently stops measuring. Timing is never asserted here."""

from tests.bench import ingest


def test_ingest_bench_writes_at_most_one_per_entity_per_batch():
    figures = ingest.run(n_events=4000, n_moto_events=2000, n_fault_schedules=20)
    assert figures["ddb_writes"] > 0
    assert figures["fault_schedules"] == 20 and figures["fault_events"] > 0
    assert (figures["fault_lost"], figures["fault_doubled"]) == (0, 0)
    assert figures["ddb_writes_per_event"] <= 1.5 * figures["entity_floor_per_event"]
    assert figures["naive_writes_per_event"] > figures["ddb_writes_per_event"]
    assert figures["events_per_s"] > 0
    assert figures["floor_events_per_s"] > 0 and figures["ratio_to_floor"] > 0
