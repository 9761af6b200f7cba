"""How the API's producer words a write the broker did not take (issue 15 item 7): aiokafka says
UnknownTopicOrPartitionError when it gets no metadata for the topic in time. The producer asks
the broker whether it answers: no answer is BrokerUnavailableError (503 + Retry-After), an
answer means the topic is missing. (The real stopped broker: tests/integration/
test_broker_unavailable.py; here aiokafka's side is a stub, to force this one path.)"""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError

from walstream.errors import BrokerUnavailableError, WriteRejectedError
from walstream.kafka.producer import KafkaLogProducer, Outgoing


class _Client:
    def __init__(self, answers: bool) -> None:
        self.answers = answers

    async def fetch_all_metadata(self):
        if not self.answers:
            raise KafkaConnectionError("connection refused")
        return {"brokers": 1}


class _AioProducer:
    def __init__(self, error: Exception, answers: bool) -> None:
        self.error = error
        self.client = _Client(answers)

    async def send(self, *args, **kwargs):
        raise self.error

    async def stop(self) -> None:
        pass


@pytest.fixture
async def producer():
    producer = KafkaLogProducer("127.0.0.1:9", timeout_s=5.0, retry_after_s=7.0)
    producer._deadlines.start()  # what start() does, without a broker
    yield producer
    await producer._deadlines.stop()


RECORD = Outgoing("wal.orders.log", None, b"{}")


async def test_no_metadata_and_no_answer_is_broker_unavailable(producer):
    producer._producer = _AioProducer(UnknownTopicOrPartitionError(), answers=False)
    with pytest.raises(BrokerUnavailableError) as refused:
        await producer.send(RECORD)
    assert refused.value.retry_after == 7.0
    assert str(refused.value).startswith("broker unavailable")
    assert "UnknownTopicOrPartition" not in str(refused.value)


async def test_no_metadata_while_the_broker_answers_is_a_missing_topic(producer):
    producer._producer = _AioProducer(UnknownTopicOrPartitionError(), answers=True)
    with pytest.raises(WriteRejectedError) as refused:
        await producer.send(RECORD)
    assert not isinstance(refused.value, BrokerUnavailableError)
    assert "'wal.orders.log' is unknown to the broker" in str(refused.value)


async def test_a_connection_error_before_the_hand_over_is_broker_unavailable(producer):
    producer._producer = _AioProducer(KafkaConnectionError("refused"), answers=False)
    with pytest.raises(BrokerUnavailableError):
        await producer.send(RECORD)
