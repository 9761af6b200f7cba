"""Multi-partition mutations through a real worker (issue 18's acceptance, worker side): records
written with the core builders through a real producer to a real broker, applied by the worker
subprocess to a real database, SQLite and PostgreSQL (``db`` fixture, both for each test)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time

import asyncpg
import orjson
import pytest

from walstream.broker import free_port
from walstream.client import WalClient
from walstream.core.delay import TIERS_MS
from walstream.core.dlq.records import H_ERROR, H_ERROR_CLASS, H_MUTATION
from walstream.core.mutations import (
    Forget,
    Marker,
    MutateItems,
    Operation,
    decode_marker,
    encode_marker,
    encode_op_chunk,
    items_records,
)
from walstream.testing.mutations import (
    MutationWriter,
    PgDb,
    SqliteDb,
    Txn,
    model,
    random_transactions,
)
from walstream.topology import default_topics, delay_topic, mutation_topics

from .conftest import apply_namespace, eventually, wait_serving
from .helpers import changelog_rows, mutations_definition, read_topic, worker_metric

pytestmark = pytest.mark.integration

TABLES = ("m_a", "m_b", "m_c")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, tmp_path):
    """The kv database of the test's worker: SQLite, then a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        yield SqliteDb(tmp_path / "kv.sqlite")
    else:
        pg = PgDb(request.getfixturevalue("postgres"))
        await pg.create()
        yield pg
        await pg.drop()


async def start(wal_settings, workers, ns: str, db, **ns_options):
    await apply_namespace(wal_settings, mutations_definition(ns, **ns_options))
    worker = workers(WALSTREAM_KV_URL=db.url)
    await wait_serving(worker, mutation_topics(ns).markers, within_s=60)
    return worker


def metric(worker, name: str, ns: str, **labels: str) -> float:
    """A sample of the worker's metrics page (0: not reported, or the worker not answering yet)."""
    try:
        return worker_metric(worker, name, namespace=ns, **labels) or 0.0
    except OSError:
        assert worker.alive(), worker.log_tail()
        return 0.0


async def committed_everything(worker, ns: str, count: int, within_s: float) -> None:
    await eventually(
        lambda: metric(worker, "walstream_mutation_commits_total", ns) >= count,
        within_s,
        f"{count} commits\n{worker.log_tail()}",
        every=0.5,
    )


async def test_interleaved_out_of_order_transactions_end_as_the_model_says(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    worker = await start(wal_settings, workers, ns, db)
    rng = random.Random(18)
    txns = random_transactions(rng, 400, tables=TABLES, keys=25, now_ms=int(time.time() * 1000))
    ops = sum(len(t.operations) for t in txns)
    async with MutationWriter(broker, ns) as writer:
        started = time.monotonic()
        await writer.send_many(writer.interleaved(txns, rng))
        await committed_everything(worker, ns, len(txns), 120)
        elapsed = time.monotonic() - started
    print(  # noqa: T201 - the figure for the report
        f"{len(txns)} transactions, {ops} operations in {elapsed:.1f}s: {ops / elapsed:.0f} ops/s"
    )
    assert await db.rows(TABLES) == model(ns, txns)
    assert metric(worker, "walstream_mutation_operations_applied_total", ns) >= ops
    rows = await changelog_rows(broker, wal_settings.app_id)
    assert rows, "the table's changelog holds the tombstones"
    assert sorted(rows) == sorted(f"t:{ns}:{t.txn_id}" for t in txns)  # no state, no chunk
    await eventually(
        lambda: (
            metric(worker, "walstream_mutation_open_transactions", ns) == 0
            and worker_metric(worker, "walstream_mutation_open_transactions", namespace=ns)
            is not None
        ),
        30,
        "the open gauge at 0",
    )


def order_problems(ns: str, applied: list[tuple[str, str, str]]) -> list[str]:
    """Writes applied before a lower seq of their transaction, or applied twice."""
    last: dict[str, int] = {}
    problems = []
    for _, _, token in applied:
        _, token_ns, txn_id, seq_text = token.split(":")
        assert token_ns == ns
        seq = int(seq_text)
        if last.get(txn_id, -1) >= seq:
            problems.append(f"{txn_id}: seq {seq} applied after seq {last[txn_id]}")
        last[txn_id] = seq
    return problems


async def test_failures_injected_by_the_database_delay_transactions_never_reorder_them(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    await db.prepare(TABLES)
    rng = random.Random(1802)
    failing = {(rng.choice(TABLES), f"k{rng.randrange(25)}") for _ in range(4)}
    await db.fail(failing)
    worker = await start(wal_settings, workers, ns, db)
    txns = random_transactions(rng, 200, tables=TABLES, keys=25, now_ms=int(time.time() * 1000))
    blocked = [t for t in txns if any((op.table, op.id) in failing for op in t.operations)]
    assert 10 < len(blocked) < len(txns)
    async with MutationWriter(broker, ns) as writer:
        await writer.send_many(writer.interleaved(txns, rng))
        # every transaction not touching a failing row commits; the others cannot, and keep
        # failing at their first failing operation (re-queued with backoff, never given up)
        await committed_everything(worker, ns, len(txns) - len(blocked), 120)
        await eventually(
            lambda: metric(worker, "walstream_mutation_requeues_total", ns) > 3 * len(blocked),
            60,
            "the failing transactions' retries",
        )
        assert metric(worker, "walstream_mutation_commits_total", ns) == len(txns) - len(blocked)
        rows = await db.rows(TABLES)
        assert not failing & set(rows), "a failing row was written"
        await db.heal()
        await committed_everything(worker, ns, len(txns), 120)
    assert await db.rows(TABLES) == model(ns, txns)
    applied = await db.applied()
    assert order_problems(ns, applied) == []
    blocked_ids = {t.txn_id for t in blocked}
    assert any(token.split(":")[2] in blocked_ids for _, _, token in applied)
    assert metric(worker, "walstream_mutation_dead_letters_total", ns) == 0


BIG = 600  # three batches of the commit (BATCH_OPS = 200)


async def hold_op(db, seq: int):
    """Stop the big transaction's apply at operation ``seq``: on PostgreSQL inside its database
    transaction (the write of ``seq`` waits for an advisory lock the test holds: returns that
    connection), on SQLite by failing that write (the batch is rolled back and retried)."""
    if isinstance(db, PgDb):
        await db.execute(
            f"""CREATE FUNCTION hold() RETURNS trigger AS $$ BEGIN
                IF NEW.key = 'big{seq:03d}' THEN
                    PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242);
                END IF; RETURN NEW; END $$ LANGUAGE plpgsql""",
            "CREATE TRIGGER m_a_hold BEFORE INSERT ON m_a FOR EACH ROW EXECUTE FUNCTION hold()",
        )
        conn = await asyncpg.connect(db.url)
        await conn.execute("SELECT pg_advisory_lock(4242)")
        return conn
    await db.fail([("m_a", f"big{seq:03d}")])
    return None


def held(db, worker, ns: str, progress: int):
    """Whether the apply is stopped at the held operation now: on PostgreSQL, a session waits
    for the lock; on SQLite, the batches before it are applied and the held batch failed twice
    since (re-queues counted from when they were seen applied)."""
    seen: list[float] = []

    async def check() -> bool:
        if isinstance(db, PgDb):
            waiting = await db.query(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
            )
            return waiting[0][0] > 0
        requeues = metric(worker, "walstream_mutation_requeues_total", ns)
        if not seen:
            if len(await db.rows(["m_a"])) == progress:
                seen.append(requeues)
            return False
        return requeues >= seen[0] + 2

    return check


@pytest.mark.parametrize("at", [250, 450])
async def test_a_worker_killed_mid_apply_is_resumed_from_the_first_unapplied_operation(
    broker, wal_settings, workers, unique, db, at
):
    ns = f"mut-{unique}"
    await db.prepare(TABLES)
    lock = await hold_op(db, at)
    try:
        worker = await start(wal_settings, workers, ns, db)
        big = Txn(
            "big",
            [
                Operation(op="put", table="m_a", id=f"big{s:03d}", value=b"%d" % s)
                for s in range(BIG)
            ],
            int(time.time() * 1000),
        )
        async with MutationWriter(broker, ns) as writer:
            ops = [v for s in range(BIG) for v in writer.op_records(big, s)]
            await writer.send(writer.topics.mutations, "big", ops)
            await writer.send(writer.topics.markers, "big", [writer.marker(big)])
        progress = at // 200 * 200  # the batches before the held one are committed
        await eventually(held(db, worker, ns, progress), 60, f"the apply held at {at}")
        rows = await db.rows(["m_a"])
        assert sorted(rows) == [("m_a", f"big{s:03d}") for s in range(progress)]
        worker.kill()
    finally:
        if lock is not None:
            # the killed worker's session waits on: end it, then let the writes through
            await db.query(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE wait_event = 'advisory'"
            )
            await lock.close()
    await db.heal()
    again = workers(WALSTREAM_KV_URL=db.url)
    await committed_everything(again, ns, 1, 90)
    # the new worker applied only what was not: from the first unapplied operation on
    assert metric(again, "walstream_mutation_operations_applied_total", ns) == BIG - progress
    assert await db.rows(["m_a"]) == model(ns, [big])
    applied = await db.applied()
    assert order_problems(ns, applied) == []
    assert [token for _, _, token in applied] == [f"mut:{ns}:big:{s:08d}" for s in range(BIG)]


def headers_of(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


async def test_a_transaction_whose_operations_never_all_arrive_is_dead_lettered_naming_them(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    worker = await start(wal_settings, workers, ns, db, timeout_s=2)
    now = int(time.time() * 1000)
    ops = [Operation(op="put", table="m_a", id=f"k{s}", value=b"%d" % s) for s in range(5)]
    partial, unmarked = Txn("partial", ops, now), Txn("unmarked", ops[:3], now)
    async with MutationWriter(broker, ns) as writer:
        for txn, seqs in ((partial, (0, 1, 3)), (unmarked, (0, 2))):
            values = [v for s in seqs for v in writer.op_records(txn, s)]
            await writer.send(writer.topics.mutations, txn.txn_id, values)
        await writer.send(writer.topics.markers, "partial", [writer.marker(partial)])
        dlq = default_topics(ns).dlq
        entries = await read_topic(broker, dlq, expect=2, within_s=60)
        by_id = {e.key.decode(): e for e in entries}
        assert sorted(by_id) == ["txn.partial", "txn.unmarked"], worker.log_tail()
        for entry in entries:
            headers = headers_of(entry)
            assert headers[H_MUTATION] == "marker"
            assert headers[H_ERROR_CLASS] == "mutation_incomplete"
        assert "missing seqs [2, 4]" in headers_of(by_id["txn.partial"])[H_ERROR]
        assert "no completion marker" in headers_of(by_id["txn.unmarked"])[H_ERROR]
        assert "missing seqs [1]" in headers_of(by_id["txn.unmarked"])[H_ERROR]
        marker = decode_marker(by_id["txn.partial"].value)
        assert isinstance(marker, Marker)
        assert (marker.op_count, marker.redrive) == (5, 0)
        assert (
            metric(
                worker, "walstream_mutation_dead_letters_total", ns, reason="mutation_incomplete"
            )
            == 2
        )
        assert await db.rows(TABLES) == {}
        # the missing operations come late, and the entry is redriven: the transaction resumes
        late = [v for s in (2, 4) for v in writer.op_records(partial, s)]
        await writer.send(writer.topics.mutations, "partial", late)
        await writer.send(writer.topics.markers, "partial", [writer.marker(partial, redrive=1)])
        await committed_everything(worker, ns, 1, 60)
    assert await db.rows(TABLES) == model(ns, [partial])


async def test_a_large_value_a_thousand_operations_and_a_mutate_items_sent_twice(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    await db.prepare(TABLES)
    worker = await start(wal_settings, workers, ns, db)
    now = int(time.time() * 1000)
    large = random.Random(5).randbytes(5 * 1024 * 1024)
    huge = Txn(
        "huge",
        [
            Operation(op="put", table="m_b", id="big", value=large),
            Operation(op="put", table="m_b", id="small", value=b"s"),
        ],
        now,
    )
    thousand = Txn(
        "thousand",
        [Operation(op="put", table="m_c", id=f"c{s}", value=b"%d" % s) for s in range(1000)],
        now,
    )
    items = MutateItems(
        txn_id="twice",
        operations=tuple(
            Operation(op="put", table="m_a", id=f"a{s % 3}", value=b"%d" % s) for s in range(6)
        ),
    )
    chunks, items_marker = items_records(ns, items, 256 * 1024, at_ms=now)
    twice = Txn("twice", list(items.operations), now, items_marker.digest)
    async with MutationWriter(broker, ns) as writer:
        assert len(writer.op_records(huge, 0)) == 20  # 5 MiB in 256 KiB chunks
        one_shot = [(writer.topics.mutations, "twice", encode_op_chunk(c)) for c in chunks]
        one_shot.append((writer.topics.markers, "twice", encode_marker(items_marker)))
        await writer.send_many(one_shot * 2)  # a retried MutateItems: the same records again
        for txn in (huge, thousand):
            values = [v for s in range(len(txn.operations)) for v in writer.op_records(txn, s)]
            await writer.send(writer.topics.mutations, txn.txn_id, values)
            await writer.send(writer.topics.markers, txn.txn_id, [writer.marker(txn)])
        await committed_everything(worker, ns, 3, 120)
        await writer.send_many(one_shot)  # and once more after its commit
        # another operation set under the same txn id is refused, not applied
        other = MutateItems(txn_id="twice", operations=items.operations[:2])
        _, other_marker = items_records(ns, other, 256 * 1024, at_ms=now + 1)
        await writer.send(writer.topics.markers, "twice", [encode_marker(other_marker)])
        entries = await read_topic(broker, default_topics(ns).dlq, expect=1, within_s=60)
    assert [headers_of(e)[H_ERROR_CLASS] for e in entries] == ["mutation_rejected"]
    assert metric(worker, "walstream_mutation_commits_total", ns) == 3
    assert await db.rows(TABLES) == model(ns, [huge, thousand, twice])
    applied = [token for _, _, token in await db.applied()]
    assert [t for t in applied if ":twice:" in t] == [
        f"mut:{ns}:twice:{s:08d}" for s in range(6)
    ]  # each once, in order
    assert order_problems(ns, await db.applied()) == []


async def test_a_committed_transaction_leaves_a_tombstone_its_forget_record_drops(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    worker = await start(wal_settings, workers, ns, db)
    txn = Txn(
        "kept", [Operation(op="put", table="m_a", id="k", value=b"v")], int(time.time() * 1000)
    )
    async with MutationWriter(broker, ns) as writer:
        await writer.send(writer.topics.mutations, "kept", writer.op_records(txn, 0))
        await writer.send(writer.topics.markers, "kept", [writer.marker(txn)])
        await committed_everything(worker, ns, 1, 60)
        rows = await changelog_rows(broker, wal_settings.app_id)
        assert sorted(rows) == [f"t:{ns}:kept"]  # no state, no chunk: the tombstone only
        at = orjson.loads(rows[f"t:{ns}:kept"])["at"]
        # its Forget waits in a delay tier, due when the idempotency window ends
        waiting = []
        for tier_ms in TIERS_MS:
            tier = delay_topic(wal_settings.app_id, tier_ms)
            waiting += await read_topic(broker, tier, expect=1, within_s=2)
        # (besides the transaction's deadline wake, due when its completion timeout ends)
        forgets = [
            r for r in waiting if r.key == b"kept" and isinstance(decode_marker(r.value), Forget)
        ]
        assert len(forgets) == 1
        assert decode_marker(forgets[0].value) == Forget(ns, "kept", at)
        assert headers_of(forgets[0])["wal-dest"] == mutation_topics(ns).markers
        due = int(headers_of(forgets[0])["wal-due"])
        assert due == at + 86_400_000
        # a re-sent marker within the window changes nothing; the Forget, due, drops the row
        await writer.send(writer.topics.markers, "kept", [writer.marker(txn)])
        await writer.send(
            writer.topics.markers, "kept", [encode_marker(Forget(ns, "kept", at - 1))]
        )
        await writer.send(writer.topics.markers, "kept", [forgets[0].value])

        async def forgotten() -> bool:
            return await changelog_rows(broker, wal_settings.app_id) == {}

        await eventually(forgotten, 60, "the tombstone dropped", every=1.0)
    assert metric(worker, "walstream_mutation_commits_total", ns) == 1
    assert await db.rows(TABLES) == model(ns, [txn])


async def api_process(wal_env: dict[str, str], worker) -> tuple[asyncio.subprocess.Process, int]:
    """``walstream api`` in a subprocess of its own (its port), asking ``worker`` for status."""
    port = free_port()
    env = {
        **os.environ,
        **wal_env,
        "WALSTREAM_API_PORT": str(port),
        "WALSTREAM_WORKER_URL": f"http://127.0.0.1:{worker.web_port}",
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "walstream", "api", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return api, port


@pytest.mark.timeout(300)
async def test_a_thousand_transactions_through_two_api_processes_end_as_the_model_says(
    broker, wal_env, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    await db.prepare(TABLES)
    worker = await start(wal_settings, workers, ns, db)
    rng = random.Random(1000)
    txns = random_transactions(rng, 1000, tables=TABLES, keys=40, now_ms=int(time.time() * 1000))
    # every operation of a transaction carries the transaction's own write time (the model's)
    writes = [(t, seq) for t in txns for seq in range(len(t.operations))] + [(t, -1) for t in txns]
    rng.shuffle(writes)  # interleaved across transactions, out of order within each
    apis = [await api_process(wal_env, worker) for _ in range(2)]
    try:
        clients = [WalClient(f"http://127.0.0.1:{port}") for _, port in apis]
        for client in clients:
            await client.__aenter__()
        try:
            for client in clients:
                probe = clients[0] if client is clients[0] else client

                async def serving(c=probe) -> bool:
                    try:
                        code, _ = await c.mutation_status(ns, "nothing-yet")
                    except OSError:
                        return False
                    return code == 404

                await eventually(serving, 60, "the API processes to serve", every=0.3)
            slots = asyncio.Semaphore(64)

            retried: list[str] = []

            async def send(i: int, txn: Txn, seq: int) -> None:
                # the two API processes share every transaction; a write answered FALSE or
                # UNKNOWN is sent again, as a client does (a seq or marker re-sent is idempotent)
                for attempt in range(20):
                    client = clients[(i + attempt) % 2]
                    async with slots:
                        if seq < 0:
                            result = await client.complete(ns, txn.txn_id, len(txn.operations))
                        else:
                            op = txn.operations[seq]
                            result = await client.mutate(
                                ns, txn.txn_id, seq, op.op, op.table, op.id, op.value,
                                original_write_time=txn.at_ms,
                            )  # fmt: skip
                    if result.ok:
                        return
                    assert result.status is None or result.status >= 500, result
                    retried.append(result.message)
                    await asyncio.sleep(0.2 * (attempt + 1))
                raise AssertionError(f"{txn.txn_id}/{seq} never TRUE: {retried[-3:]}")

            started = time.monotonic()
            await asyncio.gather(*(send(i, t, s) for i, (t, s) in enumerate(writes)))
            sent = time.monotonic() - started
            await committed_everything(worker, ns, len(txns), 180)
            elapsed = time.monotonic() - started
            code, body = await clients[1].mutation_status(ns, txns[0].txn_id)
            assert (code, body["status"]) == (200, "committed")
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
    finally:
        for api, _ in apis:
            api.kill()
            await api.wait()
    ops = sum(len(t.operations) for t in txns)
    print(  # noqa: T201 - the figure for the report
        f"{len(txns)} transactions ({ops} operations) through 2 APIs: sent in {sent:.1f}s, "
        f"committed in {elapsed:.1f}s ({ops / elapsed:.0f} ops/s); {len(retried)} writes sent again"
    )
    assert await db.rows(TABLES) == model(ns, txns)
    assert order_problems(ns, await db.applied()) == []
    rows = await changelog_rows(broker, wal_settings.app_id)
    assert sorted(rows) == sorted(f"t:{ns}:{t.txn_id}" for t in txns)


@pytest.mark.timeout(300)
async def test_transactions_survive_a_worker_killed_while_another_takes_over_its_partitions(
    broker, wal_settings, workers, unique, db
):
    ns = f"mut-{unique}"
    await db.prepare(TABLES)
    first = await start(wal_settings, workers, ns, db)
    second = workers(WALSTREAM_KV_URL=db.url)
    await wait_serving(second, mutation_topics(ns).markers, within_s=60)
    rng = random.Random(2)
    txns = random_transactions(rng, 300, tables=TABLES, keys=25, now_ms=int(time.time() * 1000))
    expected = model(ns, txns)
    async with MutationWriter(broker, ns) as writer:
        records = writer.interleaved(txns, rng)
        half = len(records) // 2
        await writer.send_many(records[:half])
        first.kill()  # its partitions' transactions go on at the other worker
        await writer.send_many(records[half:])

        async def done() -> bool:
            return await db.rows(TABLES) == expected

        await eventually(done, 180, f"every transaction applied\n{second.log_tail()}", every=1.0)
    assert order_problems(ns, await db.applied()) == []

    async def cleaned() -> bool:
        rows = await changelog_rows(broker, wal_settings.app_id)
        return sorted(rows) == sorted(f"t:{ns}:{t.txn_id}" for t in txns)

    await eventually(cleaned, 60, "only tombstones in the table", every=1.0)
