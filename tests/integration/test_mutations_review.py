"""Review of issue 18 (engineer R): defects proven on a real database. Each test is a strict xfail
until its owner fixes the defect named in its reason."""

from __future__ import annotations

import uuid

from walstream.clock import SystemClock
from walstream.core.mutations import (
    CommitPolicy,
    DeadLetter,
    Marker,
    MutationLimits,
    TxnState,
    after_failure,
    kv_envelope,
    op_chunks,
    parse_operation,
)
from walstream.core.retry import Failure
from walstream.errors import BadRequestError, TargetError
from walstream.targets.kv_postgres import PostgresKvTarget

NS = "pds"


async def test_an_id_the_api_accepts_is_one_postgresql_applies(postgres):
    now = SystemClock().now_ms()
    limits = MutationLimits()
    bodies = [
        {"op": "put", "table": "items", "id": "k0", "value": "a"},
        {"op": "put", "table": "items", "id": "k\u0000evil", "value": "b"},
    ]
    ops = []
    for i, body in enumerate(bodies):
        try:
            ops.append(parse_operation(body, limits, now_ms=now, prefix=f"operations[{i}]."))
        except BadRequestError as exc:  # the fix: refused before anything is written
            refused = exc.field
            assert refused == f"operations[{i}].id"
            return
    chunks = [op_chunks(NS, "t1", seq, op, limits.chunk_bytes)[0] for seq, op in enumerate(ops)]
    assert len(chunks) == 2  # the API wrote both operations and answered durable TRUE
    state = TxnState.open(NS, "t1", now)
    for c in chunks:
        state, _ = state.receive(c, limits)
    state, _ = state.mark(Marker(NS, "t1", 2, now))
    target = PostgresKvTarget(postgres)
    table = f"rv_{uuid.uuid4().hex[:8]}"
    try:
        envs = [
            kv_envelope(state, seq, op, now_ms=now)._replace(
                target={"type": "kv", "table": table, "key": op.id, "op": op.op}
            )
            for seq, op in enumerate(ops)
        ]
        await target.deliver_many(envs[:1])  # the first batch applies
        state = state.applied(0)
        try:
            await target.deliver_many(envs[1:])
        except TargetError as exc:
            failure = Failure(
                error_class=exc.error_class, message=str(exc), retriable=exc.retriable
            )
            _, decision = after_failure(state, failure, CommitPolicy(), now_ms=now, rand=0.5)
            assert not isinstance(decision, DeadLetter), f"partly applied, then {decision}"
    finally:
        await target.close()
