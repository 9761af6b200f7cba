"""Topic creation from TopicSpecs, and what the cluster can promise an acknowledged write.

Idempotent: a missing topic is created with its spec's configuration, the replication factor
and ``min.insync.replicas`` capped to the brokers the cluster reports. An existing topic is never
altered: where its configuration is weaker than the spec (shorter retention, another cleanup
policy, fewer in-sync replicas) a WARNING names the topic, the setting and the command that fixes
it. Altering is left to the operator on purpose: aiokafka offers only AlterConfigs, which
replaces every dynamic setting of the topic (resetting what an operator set), and an existing
topic's retention may be a deliberate choice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from walstream.core.retention import Drift, Durability, config_drift, durability_for
from walstream.settings import Settings
from walstream.topology import TopicSpec

__all__ = ["check_durability", "cluster_durability", "ensure_topics"]

logger = logging.getLogger(__name__)

_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(
    bootstrap_servers: str | list[str], specs: Iterable[TopicSpec]
) -> list[Drift]:
    """Create every topic in ``specs`` that does not exist yet; check the ones that do.

    Returns:
        The settings of existing topics that are weaker than their spec (each also logged as a
        WARNING). Topics are not altered.
    """
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="walstream-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        brokers = await _broker_count(admin)
        specs_here = [spec.capped(brokers) for spec in wanted.values()]
        missing = [spec for spec in specs_here if spec.name not in existing]
        if missing:
            await _create(admin, missing)
        present = [spec for spec in specs_here if spec.name in existing]
        drifts = await _check(admin, present) if present else []
    finally:
        await admin.close()
    for drift in drifts:
        logger.warning(
            "%s: records walstream still owes may be lost. Existing topics are not altered; fix "
            "it with: kafka-configs.sh --bootstrap-server <servers> --alter --entity-type topics "
            "--entity-name %s --add-config %s=%s",
            drift.describe(),
            drift.topic,
            drift.key,
            drift.wanted,
        )
    return drifts


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    cluster = await admin.describe_cluster()
    return max(1, len(cluster.get("brokers") or ()))


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    response = await admin.create_topics(
        [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                topic_configs=spec.topic_config(),
            )
            for spec in specs
        ]
    )
    for name, code, *_ in getattr(response, "topic_errors", ()):
        if code not in (0, _ALREADY_EXISTS):
            logger.warning("create topic %s failed with error code %s", name, code)
        else:
            logger.info("topic %s ready", name)


async def _check(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[Drift]:
    """Compare existing topics' configuration with their specs (one DescribeConfigs).

    A topic the broker will not describe (no permission, an old broker) is logged and skipped:
    the check never stands in the way of the topics' use.
    """
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in specs]
        )
    except KafkaError as exc:
        logger.warning("could not describe existing topics to check their settings: %r", exc)
        return []
    actual: dict[str, dict[str, str]] = {}
    for response in responses:
        for code, message, _type, name, entries, *_ in response.resources:
            if code:
                logger.warning("could not describe topic %s (error %s: %s)", name, code, message)
                continue
            actual[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    drifts: list[Drift] = []
    for spec in specs:
        if spec.name in actual:
            drifts += config_drift(spec.name, spec.topic_config(), actual[spec.name])
    return drifts


async def cluster_durability(
    bootstrap_servers: str | list[str], replication_factor: int, min_insync_replicas: int
) -> Durability:
    """What topics created now get on this cluster (the settings capped to its brokers)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="walstream-admin")
    await admin.start()
    try:
        brokers = await _broker_count(admin)
    finally:
        await admin.close()
    return durability_for(replication_factor, min_insync_replicas, brokers)


async def check_durability(settings: Settings, *, process: str) -> Durability:
    """At a process's start: what its topics get here, with a WARNING when an acks=all write
    may rest on one broker (replication factor or ``min.insync.replicas`` 1)."""
    durability = await cluster_durability(
        settings.bootstrap_list, settings.replication_factor, settings.min_insync_replicas
    )
    if durability.single_copy:
        logger.warning(
            "%s: acks=all means one broker here: topics get replication factor %d and "
            "min.insync.replicas %d (asked: %d and %d), so an acknowledged (durable=TRUE) record "
            "can be lost with one broker or disk. Production needs a cluster of at least 3 "
            "brokers, WALSTREAM_REPLICATION_FACTOR >= 3 and WALSTREAM_MIN_INSYNC_REPLICAS >= 2.",
            process,
            durability.replication_factor,
            durability.min_insync_replicas,
            settings.replication_factor,
            settings.min_insync_replicas,
        )
    return durability
