"""The whole commit flow, driven by the pure decisions alone: many transactions interleaved,
records out of order and re-sent, applies failing and workers dying mid-commit; every
transaction commits once, in seq order, and the rows end as the sequence says."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from walstream.core.lww import Outcome, Version, should_apply
from walstream.core.mutations import (
    AlreadyCommitted,
    Apply,
    CommitPolicy,
    DeadLetter,
    Forget,
    Ignore,
    MutateItems,
    MutationLimits,
    Operation,
    Reject,
    Requeue,
    Stored,
    TxnState,
    after_failure,
    chunk_key,
    chunk_keys,
    committed,
    decode_marker,
    decode_op_chunk,
    decode_state,
    decode_tombstone,
    encode_marker,
    encode_op_chunk,
    encode_state,
    encode_tombstone,
    items_records,
    kv_envelope,
    on_chunk,
    on_forget,
    on_marker,
    reassemble,
    state_key,
    tombstone_key,
    wake_marker,
)
from walstream.core.retry import Failure, RetryPolicy
from walstream.namespaces.config import BackoffPolicy
from walstream.targets.kv import upsert_params

NS = "pds"
T0 = 1_700_000_000_000
POLICY = CommitPolicy(
    limits=MutationLimits(completion_timeout_ms=3_600_000, chunk_bytes=64 * 1024),
    retry=RetryPolicy(
        backoff=BackoffPolicy(base_ms=100, multiplier=2.0, cap_ms=1_000, jitter=0.2),
        max_attempts=6,
    ),
)
BUSY = Failure(error_class="TargetUnavailableError", message="locked", retriable=True)


class Crash(Exception):
    """The worker dies: what it did not write to the table is lost, its record read again."""


@dataclass
class Rig:
    rnd: random.Random
    crash_rate: float
    now: int = T0
    table: dict[str, bytes] = field(default_factory=dict)
    #: (due, n, topic, raw): the log topics and the delay tiers
    pending: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    rows: dict[tuple[str, str], tuple[Version, bytes | None]] = field(default_factory=dict)
    applies: list[tuple[str, int]] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    #: (txn, seq) -> applies still to refuse
    failing: dict[tuple[str, int], int] = field(default_factory=dict)
    n: int = 0

    def send(self, topic: str, raw: bytes, delay_ms: int = 0) -> None:
        self.n += 1
        self.pending.append((self.now + delay_ms, self.n, topic, raw))

    def _get(self, key, decode):
        raw = self.table.get(key)
        return None if raw is None else decode(raw)

    def run(self, until: int) -> None:
        """Handle every record due up to ``until`` (those sent meanwhile too)."""
        steps = 0
        while True:
            steps += 1
            assert steps < 100_000
            due = [p for p in self.pending if p[0] <= self.now]
            if not due:
                upcoming = [p[0] for p in self.pending if p[0] <= until]
                if not upcoming:
                    self.now = max(self.now, until)
                    return
                self.now = min(upcoming)
                continue
            record = self.rnd.choice(due)  # topics and partitions interleave freely
            snapshot, sent = dict(self.table), len(self.pending)
            try:
                self.handle(record[2], record[3])
            except Crash:
                self.table = snapshot  # the changelog lost what the dead worker wrote
                del self.pending[sent:]  # and it sent nothing after the crash
                continue  # its offset was not committed: the record is read again
            self.pending.remove(record)
            self.now += 1

    def handle(self, topic: str, raw: bytes) -> None:
        if topic == "ops":
            c = decode_op_chunk(raw)
            skey = state_key(c.namespace, c.txn_id)
            tomb = self._get(tombstone_key(c.namespace, c.txn_id), decode_tombstone)
            state, outcome, deadline = on_chunk(
                self._get(skey, decode_state), tomb, c, POLICY, now_ms=self.now
            )
            if isinstance(outcome, Stored):
                assert state is not None
                self.table[chunk_key(c.namespace, c.txn_id, c.seq, c.chunk)] = raw
                self.table[skey] = encode_state(state)
            if deadline is not None:
                assert state is not None
                self.send("markers", encode_marker(wake_marker(state, deadline)), deadline.delay_ms)
            return
        m = decode_marker(raw)
        tkey = tombstone_key(m.namespace, m.txn_id)
        tomb = self._get(tkey, decode_tombstone)
        if isinstance(m, Forget):
            if on_forget(tomb, m):
                del self.table[tkey]
            return
        skey = state_key(m.namespace, m.txn_id)
        state, decision = on_marker(
            self._get(skey, decode_state), tomb, m, POLICY, now_ms=self.now, rand=self.rnd.random()
        )
        if state is None:
            assert isinstance(decision, AlreadyCommitted | Reject)
            return
        self.table[skey] = encode_state(state)
        if isinstance(decision, Requeue):
            self.send("markers", encode_marker(wake_marker(state, decision)), decision.delay_ms)
        elif isinstance(decision, DeadLetter):
            self.dead.append(decision.reason)
        elif isinstance(decision, Apply):
            self.apply(state, decision.from_seq)
        else:
            assert isinstance(decision, AlreadyCommitted | Ignore | Reject)

    def apply(self, state: TxnState, from_seq: int) -> None:
        assert from_seq == state.next_seq
        while state.next_to_apply() is not None:
            seq = state.next_seq
            slot = state.slots[seq]
            parts = [
                decode_op_chunk(self.table[chunk_key(NS, state.txn_id, seq, i)])
                for i in range(slot.chunks)
            ]
            env = kv_envelope(state, seq, reassemble(parts), now_ms=self.now)
            left = self.failing.get((state.txn_id, seq), 0)
            if left:
                self.failing[(state.txn_id, seq)] = left - 1
                state, decision = after_failure(
                    state, BUSY, POLICY, now_ms=self.now, rand=self.rnd.random()
                )
                self.table[state_key(NS, state.txn_id)] = encode_state(state)
                assert isinstance(decision, Requeue), decision
                self.send("markers", encode_marker(wake_marker(state, decision)), decision.delay_ms)
                return
            key, value, deleted, owt, token = upsert_params(env, self.now)
            version = Version(owt, token)
            stored = self.rows.get((env.target["table"], key))
            assert all((state.txn_id, s) in self.applies for s in range(seq))
            self.applies.append((state.txn_id, seq))
            if should_apply(stored[0] if stored else None, version) is Outcome.APPLY:
                self.rows[(env.target["table"], key)] = (version, None if deleted else value)
            if self.rnd.random() < self.crash_rate:
                raise Crash  # applied, progress not written
            state = state.applied(seq)
            self.table[state_key(NS, state.txn_id)] = encode_state(state)
        tomb, forget, due = committed(state, POLICY.limits, now_ms=self.now)
        for key in chunk_keys(state):
            del self.table[key]
        del self.table[state_key(NS, state.txn_id)]
        self.table[tombstone_key(NS, state.txn_id)] = encode_tombstone(tomb)
        self.commits.append(state.txn_id)
        self.send("markers", encode_marker(forget), due - self.now)


def transaction(rnd: random.Random, i: int) -> tuple[str, list[Operation], int]:
    ops = []
    for _ in range(rnd.randint(2, 10)):
        table, key = rnd.choice(["a", "b", "c"]), f"k{rnd.randint(0, 5)}"
        if rnd.random() < 0.2:
            ops.append(Operation(op="delete", table=table, id=key, value=None))
        else:
            size = 200_000 if rnd.random() < 0.05 else rnd.randint(0, 50)  # some chunked
            ops.append(Operation(op="put", table=table, id=key, value=rnd.randbytes(size)))
    return f"tx-{i}", ops, T0 - 10_000 + i * 7  # distinct marker times


def records(txn_id, ops, at_ms, rnd):
    """A MutateItems' records, or the same sent one operation at a time (no set digest)."""
    items = MutateItems(txn_id=txn_id, operations=tuple(ops))
    chunks, marker = items_records(NS, items, POLICY.limits.chunk_bytes, at_ms=at_ms)
    if rnd.random() < 0.5:
        marker = marker._replace(digest=None)
    out = [("ops", encode_op_chunk(c)) for c in chunks] + [("markers", encode_marker(marker))]
    return out + [rnd.choice(out) for _ in range(rnd.randint(0, 2))]  # client re-sends


def expected_rows(txns):
    rows = {}
    for _, ops, _ in sorted(txns, key=lambda t: t[2]):  # LWW: a later-completed txn wins
        for op in ops:
            rows[(op.table, op.id)] = op.value
    return rows


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0.0, 0.05]), st.sampled_from([0.0, 0.1]))
def test_every_transaction_commits_once_in_seq_order(seed, crash_rate, fail_rate):
    rnd = random.Random(seed)
    rig = Rig(rnd=rnd, crash_rate=crash_rate)
    txns = [transaction(rnd, i) for i in range(30)]
    for txn_id, ops, at_ms in txns:
        for seq in range(len(ops)):
            if rnd.random() < fail_rate:
                rig.failing[(txn_id, seq)] = rnd.randint(1, 4)  # the database refuses a while
        for topic, raw in records(txn_id, ops, at_ms, rnd):
            rig.send(topic, raw, rnd.randint(0, 500))  # out of order within each
    rig.run(T0 + 3_600_000)
    assert sorted(rig.commits) == sorted(t for t, _, _ in txns)  # each once
    assert rig.dead == []
    assert {k: v for k, (_, v) in rig.rows.items()} == expected_rows(txns)
    assert all(k.startswith("t:") for k in rig.table)  # no state, no chunk: tombstones only
    # a whole MutateItems sent again within the window applies nothing
    applied = len(rig.applies)
    for txn_id, ops, at_ms in txns[:5]:
        for topic, raw in records(txn_id, ops, at_ms + 1, rnd):
            rig.send(topic, raw)
    rig.run(rig.now + 1_000)
    assert len(rig.applies) == applied
    assert all(k.startswith("t:") for k in rig.table)
    # after the window, the tombstones go
    rig.run(rig.now + 25 * 3_600_000)
    assert rig.table == {}
