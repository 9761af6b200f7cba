"""A breaker tells its changes of state (walstream.core.breaker.CircuitBreaker.on_change), and
OpenBreakers counts the breakers refusing calls per target kind from them: what the
walstream_target_breaker_open gauge shows."""

from __future__ import annotations

from walstream.core.breaker import BreakerPolicy, BreakerState, CircuitBreaker, OpenBreakers

POLICY = BreakerPolicy(threshold=2, base_open_ms=1_000, max_open_ms=4_000)


def test_each_change_of_state_is_told_once():
    heard: list[BreakerState] = []
    breaker = CircuitBreaker(POLICY, on_change=heard.append)
    breaker.record_success()  # closed stays closed: nothing to tell
    breaker.record_failure(0)
    assert heard == []  # one failure: under the threshold
    breaker.record_failure(0)
    assert heard == [BreakerState.OPEN]
    assert not breaker.allow(999)  # still open: no change
    assert breaker.allow(1_000)  # the probe
    assert not breaker.allow(1_000)  # one probe at a time: no change
    breaker.record_failure(1_000)  # the probe failed: open again, for longer
    assert breaker.open_until_ms == 3_000
    assert breaker.allow(3_000)
    breaker.record_success()
    assert heard == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    assert breaker.state is BreakerState.CLOSED


def test_a_breaker_nobody_listens_to_works_the_same():
    breaker = CircuitBreaker(POLICY)
    breaker.record_failure(0)
    breaker.record_failure(0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow(1_000)
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def failing(breaker: CircuitBreaker, now: int = 0) -> None:
    for _ in range(POLICY.threshold):
        breaker.record_failure(now)


def test_open_breakers_are_counted_per_kind_and_reported_when_the_count_changes():
    reports: list[tuple[str, int]] = []
    board = OpenBreakers(lambda kind, count: reports.append((kind, count)))
    a = CircuitBreaker(POLICY, on_change=board.watch("http:http://a:80"))
    b = CircuitBreaker(POLICY, on_change=board.watch("http:http://b:80"))
    kv = CircuitBreaker(POLICY, on_change=board.watch("kv"))
    failing(a)
    assert reports == [("http", 1)]
    failing(b)
    failing(kv)
    assert reports[1:] == [("http", 2), ("kv", 1)]
    assert a.allow(1_000)  # half-open still refuses calls (but the probe): no new report
    assert reports[-1] == ("kv", 1)
    assert (board.count("http"), board.count("kv"), board.count("kafka")) == (2, 1, 0)
    a.record_success()
    assert reports[-1] == ("http", 1)
    b.allow(1_000)
    b.record_success()
    kv.allow(1_000)
    kv.record_success()
    assert reports[-2:] == [("http", 0), ("kv", 0)]
    assert len(reports) == 6


def test_a_forgotten_breaker_is_no_longer_counted_nor_heard():
    reports: list[tuple[str, int]] = []
    board = OpenBreakers(lambda kind, count: reports.append((kind, count)))
    closed = CircuitBreaker(POLICY, on_change=board.watch("kafka:b1:9092"))
    down = CircuitBreaker(POLICY, on_change=board.watch("kafka:b2:9092"))
    failing(down)
    assert reports == [("kafka", 1)]
    board.forget([("kafka:b1:9092", closed), ("kafka:b2:9092", down)])
    assert reports == [("kafka", 1), ("kafka", 0)]
    assert down.on_change is None
    down.allow(1_000)  # a delivery still holding it: nothing told
    down.record_failure(1_000)
    assert reports == [("kafka", 1), ("kafka", 0)]
    assert board.count("kafka") == 0


def test_without_a_report_the_count_is_kept():
    board = OpenBreakers()
    breaker = CircuitBreaker(POLICY, on_change=board.watch("http:http://a:80"))
    failing(breaker)
    assert board.count("http") == 1
