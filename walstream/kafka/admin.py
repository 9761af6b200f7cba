"""Topic creation from TopicSpecs (idempotent: existing topics are left as they are)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from walstream.topology import TopicSpec

__all__ = ["ensure_topics"]

logger = logging.getLogger(__name__)

_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(bootstrap_servers: str | list[str], specs: Iterable[TopicSpec]) -> None:
    """Create every topic in ``specs`` that does not exist yet."""
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="walstream-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return
        response = await admin.create_topics(
            [
                NewTopic(
                    name=spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    topic_configs=dict(spec.config),
                )
                for spec in missing
            ]
        )
        for name, code, *_ in getattr(response, "topic_errors", ()):
            if code not in (0, _ALREADY_EXISTS):
                logger.warning("create topic %s failed with error code %s", name, code)
            else:
                logger.info("topic %s ready", name)
    finally:
        await admin.close()
