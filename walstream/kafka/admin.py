"""Topic creation from TopicSpecs, and what the cluster can promise an acknowledged write.

Idempotent: a missing topic is created with its spec's configuration, the replication factor
and ``min.insync.replicas`` capped to the brokers the cluster reports; a creation the broker
refuses raises TopicError (never a warning that lets the caller go on without the topic).
A namespace's topics (``ensure_namespace_topics``, what ``ns apply`` runs) are also checked
before anything is broadcast: their names must be no other namespace's and none of the
deployment's own (``deployment_topic``), and every one of them, new or existing,
must have the deployment's partition count (walstream.core.topic_checks). An existing topic is never
altered: where its configuration is weaker than the spec (shorter retention, another cleanup
policy, fewer in-sync replicas) a WARNING names the topic, the setting and the command that fixes
it. Altering is left to the operator on purpose: aiokafka offers only AlterConfigs, which
replaces every dynamic setting of the topic (resetting what an operator set), and an existing
topic's retention may be a deliberate choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from walstream.core.retention import Drift, Durability, config_drift, durability_for
from walstream.core.topic_checks import TopicProblem, name_problems, partition_problems
from walstream.errors import TopicError
from walstream.kafka.clients import admin_client
from walstream.settings import Settings
from walstream.topology import TopicSpec, delay_topic, mutation_topics, poison_topic

if TYPE_CHECKING:
    from walstream.namespaces.config import NamespaceConfig
    from walstream.namespaces.registry import NamespaceRegistry

__all__ = ["check_durability", "cluster_durability", "ensure_namespace_topics", "ensure_topics"]

logger = logging.getLogger(__name__)

_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(
    bootstrap_servers: str | list[str],
    specs: Iterable[TopicSpec],
    *,
    check_partitions: Callable[[Mapping[str, int | None]], None] | None = None,
) -> list[Drift]:
    """Create every topic in ``specs`` that does not exist yet; check the ones that do.

    ``check_partitions``, when given, is called with the existing topics' partition counts
    before anything is created, then with the created topics' (None: not found after its
    creation); it may raise to refuse them.

    Returns:
        The settings of existing topics that are weaker than their spec (each also logged as a
        WARNING). Topics are not altered.

    Raises:
        TopicError: the broker refused to create a topic.
    """
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return []
    admin = admin_client(bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        brokers = await _broker_count(admin)
        specs_here = [spec.capped(brokers) for spec in wanted.values()]
        missing = [spec for spec in specs_here if spec.name not in existing]
        if check_partitions is not None:
            # the existing topics first, so a refused set of topics creates nothing
            present_names = [name for name in wanted if name in existing]
            check_partitions(await _partition_counts(admin, present_names))
        if missing:
            await _create(admin, missing)
            if check_partitions is not None:
                check_partitions(await _partition_counts(admin, [s.name for s in missing]))
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
    failed = []
    for name, code, *rest in getattr(response, "topic_errors", ()):
        if code not in (0, _ALREADY_EXISTS):
            message = rest[0] if rest and rest[0] else ""
            logger.error("create topic %s failed with error code %s %s", name, code, message)
            failed.append((name, f"the broker refused to create it (error {code}) {message}"))
        else:
            logger.info("topic %s ready", name)
    if failed:
        name, reason = failed[0]
        others = f" (and {len(failed) - 1} more topics)" if len(failed) > 1 else ""
        raise TopicError(name, f"{reason.strip()}{others}")


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: Sequence[str]
) -> dict[str, int | None]:
    """Each topic's partition count (None: not on the cluster). Asked by name only once the
    topics were created: a broker that auto-creates topics would create a missing one here."""
    counts: dict[str, int | None] = dict.fromkeys(names)
    if not names:
        return counts
    for topic in await admin.describe_topics(list(names)):
        if topic.get("error_code") == 0 and topic.get("topic") in counts:
            counts[topic["topic"]] = len(topic.get("partitions") or ())
    return counts


async def ensure_namespace_topics(
    settings: Settings,
    config: NamespaceConfig,
    specs: Sequence[TopicSpec],
    registry: NamespaceRegistry,
) -> list[Drift]:
    """Create and check a namespace's topics (``specs``) before its configuration is broadcast.

    Raises:
        TopicError: a topic name is another namespace's or one of the deployment's own; a topic
            (new or existing) has another partition count than WALSTREAM_DEFAULT_PARTITIONS; or
            the broker refused to create one. Nothing is created for a name refused.
    """
    roles = {"log": config.topics.log, "retry": config.topics.retry, "dlq": config.topics.dlq}
    if config.mutations is not None:  # issue 18: checked as the namespace's own topics
        roles |= mutation_topics(config.name)._asdict()
    owners = {
        topic: other.name
        for other in registry
        if other.name != config.name
        for topic in other.topics.all()
    }

    def reserved(topic: str) -> str | None:
        return deployment_topic(topic, settings)

    _refuse(name_problems(config.name, roles, owners=owners, reserved=reserved))

    def check(partitions: Mapping[str, int | None]) -> None:
        wanted = settings.default_partitions
        _refuse(partition_problems(config.name, roles, partitions=partitions, wanted=wanted))

    return await ensure_topics(settings.bootstrap_list, specs, check_partitions=check)


def deployment_topic(name: str, settings: Settings) -> str | None:
    """What the deployment uses topic ``name`` for (names from walstream.topology), or None
    when it is none of its own: the control topic, the poison topic, the delay tiers
    (``<app-id>.delay.*``) and every topic Faust names after the app id (table changelogs
    ``<app-id>-<table>-changelog``, ``<app-id>-__assignor-__leader``)."""
    app_id = settings.app_id
    if name == settings.control_topic:
        return "the control topic"
    if name == poison_topic(app_id):
        return "the poison topic"
    if name.startswith(delay_topic(app_id, 0).rpartition(".")[0] + "."):
        return "a delay tier"
    if name.startswith(f"{app_id}-"):
        return "a table changelog or another topic of the worker group"
    return None


def _refuse(problems: Sequence[TopicProblem]) -> None:
    if problems:
        first, *others = problems
        also = "".join(f"; also topic {p.topic!r}: {p}" for p in others)
        raise TopicError(first.topic, f"{first}{also}")


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
    admin = admin_client(bootstrap_servers)
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
