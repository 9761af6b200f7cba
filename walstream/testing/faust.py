"""Faust's producer and tables as walstream's emitter and attempt counts use them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.exceptions import ProducerSendError

from walstream.testing.records import Headers

# -- Faust's producer and tables -------------------------------------------------------------


class FakeFaustProducer:
    """Faust's producer as the emitter sees it: refuses what aiokafka would refuse (a record over
    ``max_request_size``, wrapped in ProducerSendError as Faust does) and fails on demand."""

    def __init__(self, max_request_size: int = 1_000_000) -> None:
        self.max_request_size = max_request_size
        self.failures: list[BaseException] = []
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    async def send_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Headers | None,
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self.max_request_size:  # as aiokafka's AIOKafkaProducer.send, under Faust's
            try:
                raise MessageSizeTooLargeError(f"The message is {size} bytes")
            except MessageSizeTooLargeError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        self.sent.append((topic, key, value, headers or []))
        return None

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, Headers]]:
        return [s for s in self.sent if s[0] == topic]


class FakeFaustApp:
    """A Faust app as ``FaustEmitter`` uses it: its producer."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer


class _RecordMetadata:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic_partition = (topic, partition)
        self.offset = offset


class ChangelogProducer:
    """Faust's producer for ``TableAttempts``: the first ``failures`` sends' acks fail, then
    they work; ``acked`` holds (topic, key, value, partition) of each acknowledged send."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.acked: list[tuple[str, bytes, bytes | None, int]] = []

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            fut.set_exception(KafkaTimeoutError())
        else:
            self.acked.append((topic, key, value, partition))
            fut.set_result(_RecordMetadata(topic, partition, len(self.acked)))
        return fut

    async def send_and_wait(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        timestamp: float | None,
        headers: Any,
    ) -> Any:
        return await (await self.send(topic, key, value, partition, timestamp, headers))


class FakeTableData(dict[Any, Any]):
    """A table's data: a dict that notes the changelog offsets persisted."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


class _FakeSerializers:
    def dumps_key(self, typ: Any, key: str, serializer: Any = None) -> bytes:
        return key.encode()

    def dumps_value(self, typ: Any, value: Any, serializer: Any = None) -> bytes:
        return str(value).encode()


class FakeTable:
    """A Faust table as ``TableAttempts`` uses it: its changelog written through ``producer``
    (every key on partition 3), its data a ``FakeTableData``."""

    key_type = value_type = key_serializer = value_serializer = None
    changelog_topic_name = "walstream-attempts-changelog"

    def __init__(self, producer: Any) -> None:
        self.app = type("App", (), {"producer": producer, "serializers": _FakeSerializers()})()
        self.data = FakeTableData()

    def partition_for_key(self, key: Any) -> int:
        return 3
