"""The outbox builds every record walstream writes besides a new write; one rule addresses a
wait in the delay tiers, whoever sends it (the API, the deliverer, the delay stage)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from walstream.core import outbox
from walstream.core.delay import parse_delay_headers, parse_due_header
from walstream.core.dlq import (
    CLAIM_PARTITION,
    Claim,
    DlqEntry,
    Marker,
    MarkerKind,
    parse_dlq_record,
)
from walstream.core.ordering import RecordRef
from walstream.core.origin import origin_of
from walstream.core.outbox import markers
from walstream.records import Envelope, Lifecycle, decode_envelope

NOW = 1_700_000_000_000
PACKAGE = Path(__file__).resolve().parents[3] / "walstream"


def test_a_wait_goes_to_its_tier_on_the_destination_partition_wrapped():
    out = outbox.wait(
        b"v",
        b"k",
        due_ms=NOW + 30_000,
        now_ms=NOW,
        dest_topic="wal.a.retry",
        dest_partition=6,
        app_id="app",
        tier_partitions=4,
        origin="wal.a.log[6]@9",
    )
    assert (out.topic, out.partition, out.key, out.value) == ("app.delay.10s", 2, b"k", b"v")
    assert out.timestamp_ms == NOW  # the tier's delay counts from the write into it
    delay = parse_delay_headers(out.headers or [])
    assert delay is not None
    assert (delay.due_ms, delay.dest_topic, delay.dest_partition) == (
        NOW + 30_000,
        "wal.a.retry",
        6,
    )
    assert origin_of(out.headers) == "wal.a.log[6]@9"


def test_a_wait_due_already_goes_straight_to_its_destination():
    out = outbox.wait(
        b"v", None, due_ms=NOW, now_ms=NOW, dest_topic="wal.a.log", dest_partition=1,
        app_id="app", tier_partitions=4, origin="wal.a.log[1]@3",
    )  # fmt: skip
    assert (out.topic, out.partition, out.timestamp_ms) == ("wal.a.log", 1, None)
    assert out.headers == [("wal-origin", b"wal.a.log[1]@3")]
    no_origin = outbox.wait(
        b"v", None, due_ms=NOW, now_ms=NOW, dest_topic="wal.a.log", dest_partition=1,
        app_id="app", tier_partitions=4,
    )  # fmt: skip
    assert no_origin.headers is None


@pytest.mark.parametrize("dest_partition", [0, 3, 5, 11])
@pytest.mark.parametrize("tier_partitions", [1, 4, 6])
def test_api_deliverer_and_delay_stage_address_a_wait_alike(dest_partition, tier_partitions):
    due = NOW + 2 * 3_600_000
    deliverer = outbox.wait(
        b"v", b"k", due_ms=due, now_ms=NOW, dest_topic="wal.a.log",
        dest_partition=dest_partition, app_id="app", tier_partitions=tier_partitions,
    )  # fmt: skip
    api = outbox.Outgoing(deliverer.topic, b"k", b"v", due=(due, "wal.a.log"))
    assert api.placed(dest_partition, tier_partitions) == (
        deliverer.partition,
        deliverer.headers,
    )
    delay = parse_delay_headers(deliverer.headers or [])
    assert delay is not None
    hop = outbox.hop(
        b"v", b"k", deliverer.headers or [], delay, now_ms=NOW + 3_600_000, app_id="app",
        tier_partitions=tier_partitions,
    )  # fmt: skip
    assert hop is not None
    assert (hop.topic, hop.partition) == ("app.delay.10m", deliverer.partition)
    assert hop.headers == deliverer.headers  # the same wait, one tier down
    assert hop.timestamp_ms == NOW + 3_600_000


def test_the_last_stretch_is_no_hop_and_a_hand_over_carries_due_and_origin():
    headers = outbox.wait_headers(NOW + 5_000, "wal.a.retry", 2, "wal.a.log[2]@7")
    delay = parse_delay_headers(headers)
    assert delay is not None
    assert outbox.hop(b"v", b"k", headers, delay, now_ms=NOW, app_id="a", tier_partitions=4) is None
    out = outbox.forward(b"v", b"k", headers, delay)
    assert (out.topic, out.partition, out.key, out.value) == ("wal.a.retry", 2, b"k", b"v")
    assert parse_due_header(out.headers) == NOW + 5_000
    assert origin_of(out.headers) == "wal.a.log[2]@7"
    assert parse_delay_headers(out.headers or []) is None  # not a tier record any more


def test_a_retry_copy_due_soon_goes_to_the_retry_topic_held_until_due():
    out = outbox.retry_copy(
        b"v", b"k", retry_topic="wal.a.retry", partition=3, due_ms=NOW + 100, origin="o[3]@1"
    )
    assert (out.topic, out.partition, out.key) == ("wal.a.retry", 3, b"k")
    assert parse_due_header(out.headers) == NOW + 100
    assert origin_of(out.headers) == "o[3]@1"


def test_a_dlq_entry_reads_back_as_written():
    out = outbox.dlq_entry(
        b"v",
        dlq_topic="wal.a.dlq",
        partition=1,
        record_id="r1",
        namespace="a",
        reason="gave up",
        error_class="http_503",
        source="wal.a.retry[1]@4",
        attempts=3,
        dead_at_ms=NOW,
        origin="wal.a.log[1]@2",
        behind=("r2", "r3"),
        key="k",
    )
    assert (out.topic, out.partition, out.key) == ("wal.a.dlq", 1, b"r1")
    entry = parse_dlq_record(out.key, out.value, out.headers or [], partition=1, offset=0)
    assert isinstance(entry, DlqEntry)
    assert (entry.id, entry.namespace, entry.reason, entry.error_class) == (
        "r1",
        "a",
        "gave up",
        "http_503",
    )
    assert (entry.source, entry.attempts, entry.dead_at_ms) == ("wal.a.retry[1]@4", 3, NOW)
    assert (entry.behind, entry.key, entry.origin) == (("r2", "r3"), "k", "wal.a.log[1]@2")
    assert outbox.poison_id("wal.a.log", 2, 9) == "poison-wal.a.log-2-9"


def test_dlq_close_markers_and_claims_read_back():
    marker = outbox.dlq_close_marker("wal.a.dlq", "r1", 2, 40, MarkerKind.REDRIVEN, NOW)
    assert (marker.topic, marker.partition, marker.value) == ("wal.a.dlq", 2, b"")
    parsed = parse_dlq_record(marker.key, b"", marker.headers or [], partition=2, offset=41)
    assert isinstance(parsed, Marker)
    assert (parsed.id, parsed.kind, parsed.closes, parsed.at_ms) == (
        "r1",
        MarkerKind.REDRIVEN,
        (2, 40),
        NOW,
    )
    unknown = outbox.dlq_close_marker("wal.a.dlq", "r1", -1, -1, MarkerKind.DISCARDED, NOW)
    assert unknown.partition is None
    old_style = parse_dlq_record(unknown.key, b"", unknown.headers or [], partition=0, offset=1)
    assert isinstance(old_style, Marker)
    assert old_style.closes is None
    claim = outbox.redrive_claim("wal.a.dlq", "c1", NOW, 30_000, released=True)
    assert claim.partition == CLAIM_PARTITION
    read = parse_dlq_record(claim.key, b"", claim.headers or [], partition=0, offset=2)
    assert isinstance(read, Claim)
    assert (read.claim, read.at_ms, read.lease_ms, read.released) == ("c1", NOW, 30_000, True)


def test_ordering_markers_decode_back():
    ref = RecordRef("r2", "wal.a.log", 1, 17)
    release = outbox.release_marker("wal.a.retry", "a", ref, b"k", 1, tries=2, due_ms=NOW)
    assert (release.topic, release.partition, release.key) == ("wal.a.retry", 1, b"k")
    kind = markers.marker_kind(release.headers)
    assert kind == markers.MarkerKind.RELEASE
    decoded = markers.decode_marker(kind, release.value)
    assert (decoded.namespace, decoded.record_id, decoded.ref, decoded.tries) == ("a", "r2", ref, 2)
    assert parse_due_header(release.headers) == NOW
    settle = outbox.settle_marker("wal.a.retry", "a", "r1", b"k", None)
    assert settle.partition is None
    kind = markers.marker_kind(settle.headers)
    assert kind == markers.MarkerKind.SETTLE
    assert markers.decode_marker(kind, settle.value).record_id == "r1"
    assert markers.marker_kind([("other", b"x")]) is None


def envelope(deliver_at_ms: int, key: str | None = "k") -> Envelope:
    return Envelope(
        id="r1",
        namespace="a",
        key=key,
        payload={},
        payload_encoding="json",
        target={"type": "kafka", "topic": "out"},
        lifecycle=Lifecycle(deliver_at_ms, NOW),
        idempotency_token="t",
        created_at_ms=NOW,
    )


def test_route_write_sends_a_delayed_write_to_its_tier_and_the_rest_to_the_log():
    due = outbox.route_write(envelope(NOW), "wal.a.log", NOW, "app")
    assert (due.topic, due.key, due.due) == ("wal.a.log", b"k", None)
    later = outbox.route_write(envelope(NOW + 90_000), "wal.a.log", NOW, "app")
    assert (later.topic, later.due) == ("app.delay.1m", (NOW + 90_000, "wal.a.log"))
    ordered = outbox.route_write(envelope(NOW + 90_000), "wal.a.log", NOW, "app", key_ordered=True)
    assert ordered.topic == "wal.a.log"
    keyless = outbox.route_write(
        envelope(NOW + 90_000, key=None), "wal.a.log", NOW, "app", key_ordered=True
    )
    assert keyless.topic == "app.delay.1m"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_kafka_makes_no_routing_decision_and_the_dlq_tools_import_no_worker_stage():
    # the tier choice (next_stop), its addressing and headers are walstream.core.delay's and
    # the outbox's; kafka/ sends what the outbox placed
    for path in sorted((PACKAGE / "kafka").glob("*.py")):
        imported = _imports(path)
        assert "walstream.core.delay" not in imported, f"{path.name} decides where a record waits"
    for path in sorted((PACKAGE / "dlq").glob("*.py")):  # the DLQ tools' package
        assert not any(name.startswith("walstream.agents") for name in _imports(path)), path.name


def test_the_outbox_docstring_and_the_readme_name_the_same_headers():
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme.split("\n## Wire format\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(wal-[a-z-]+)`", section))
    referenced = set(re.findall(r"``(wal-[a-z-]+)``", outbox.__doc__ or ""))
    assert documented == referenced
    assert {"wal-due", "wal-origin", "wal-order", "wal-dlq", "wal-closes"} <= referenced


def test_a_redriven_copy_starts_afresh_on_its_log():
    dead = envelope(NOW)._replace(attempt=5, not_before_ms=NOW + 1, first_attempt_ms=NOW - 1)
    out = outbox.redriven(dead, "wal.a.log", {"type": "kafka", "topic": "other"})
    assert (out.topic, out.partition, out.key, out.headers) == ("wal.a.log", None, b"k", None)
    again = decode_envelope(out.value or b"")
    assert (again.attempt, again.not_before_ms, again.first_attempt_ms, again.redrive) == (
        0,
        0,
        0,
        1,
    )
    assert again.target == {"type": "kafka", "topic": "other"}
    assert decode_envelope(outbox.redriven(again, "wal.a.log").value or b"").redrive == 2


#: Header builders: only the outbox calls them (their modules read the headers back).
BUILDERS = {
    "delay_headers",
    "due_header",
    "entry_headers",
    "claim_headers",
    "marker_headers",
    "origin_headers",
    "carried_origin",
    "marker_value",
}
#: Where the builders and their readers live, and the test fakes that fabricate records.
BUILDER_HOMES = {"core/outbox", "core/dlq", "core/delay.py", "core/origin.py", "testing"}


def test_only_the_outbox_builds_the_records_walstream_writes():
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if any(where == home or where.startswith(f"{home}/") for home in BUILDER_HOMES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                assert name not in BUILDERS, f"{where}:{node.lineno} builds a record's {name}"
