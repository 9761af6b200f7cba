"""Faust tables as the worker's handlers use them: the store as a mapping, the changelog written
straight to the producer.

The ``ordering`` and ``attempts`` tables write their changelog from the handler, not through
Faust's changelog buffer (``table[key] = value``): the same records on the same changelog
partition (the current event's, so call these from a handler bound to its event), so Faust
recovers the tables as before. A written record's offset is noted in the table's store once the
broker acknowledged it, as Faust's own changelog callback does: a RocksDB store resumes its
recovery from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["TableChangelog", "TableStore", "changelog_record", "note_persisted", "send_unacked"]


def changelog_record(table: Any, key: Any, value: Any) -> tuple[bytes, bytes | None]:
    """``key`` and ``value`` (None: a tombstone) serialized as ``table``'s changelog holds them."""
    app = table.app
    raw_key: bytes = app.serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
    raw_value: bytes | None = (
        None
        if value is None
        else app.serializers.dumps_value(table.value_type, value, serializer=table.value_serializer)
    )
    return raw_key, raw_value


def note_persisted(table: Any, metadata: Any) -> None:
    """The broker acknowledged a changelog record (``metadata``): the store notes its offset."""
    table.data.set_persisted_offset(metadata.topic_partition, metadata.offset)


async def send_unacked(table: Any, key: Any, value: Any, partition: int) -> asyncio.Future[Any]:
    """Write a change to ``table``'s changelog ``partition`` without waiting for the broker: the
    record is on the producer's accumulator, which Faust flushes before it commits the source
    offset (whose flush raises a send that failed). Returns the send's future."""
    raw_key, raw_value = changelog_record(table, key, value)
    sent: asyncio.Future[Any] = await table.app.producer.send(
        table.changelog_topic_name, raw_key, raw_value, partition, None, None
    )

    def persisted(done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # Faust's flush before commit raises it
        note_persisted(table, done.result())

    sent.add_done_callback(persisted)
    return sent


class TableChangelog:
    """The changelog of a Faust table written straight to the producer (as
    ``walstream.agents.attempts.TableAttempts`` does): same records, same partition (the current
    event's). ``durable``: wait for the broker's acknowledgement; otherwise the write is on the
    producer's accumulator, which Faust flushes before it commits the source offset."""

    def __init__(self, table: Any) -> None:
        self.table = table

    async def send(self, key: bytes, value: bytes | None, *, durable: bool) -> None:
        partition = self.table.partition_for_key(key)  # the current event's
        sent = await send_unacked(self.table, key, value, partition)
        if durable:
            await sent


class TableStore(MutableMapping[bytes, bytes]):
    """A Faust table's store as a mapping, looked up at each use (the store exists once the
    table started): reads and writes go to it without Faust's buffered changelog."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes = self._table.data[key]
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._table.data.get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._table.data[key] = value

    def __delitem__(self, key: bytes) -> None:
        del self._table.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._table.data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._table.data)

    def __len__(self) -> int:
        return len(self._table.data)

    def items(self) -> Any:
        return self._table.data.items()
