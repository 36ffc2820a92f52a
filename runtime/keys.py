"""Every Redis key ESP uses, in one place. Changing a name here migrates nothing: keys are a
storage format.

Names users choose (customers, sources, event ids, subscriptions, channels, ...) enter keys
only through :func:`part`, which percent-encodes ``:`` and every other character that could
change a key's shape, so a user-chosen name can never make one key type's key equal another's
(``ledger("v:alice")`` is not ``ledger_version("alice")``), nor reach a glob, a Redis Cluster
hash tag or a line break. Names made of other characters are unchanged, so their keys are too.

**Hash slots (Redis Cluster).** Keys that one Lua script or one transaction touches together
share a hash tag, so ESP runs unchanged on a Redis Cluster: every key of a virtual partition
carries ``{p<N>}`` (its log, remembered event ids, ownership epoch, outbox, emitted outputs,
fires and trace hits); a subscription's or channel's keys carry its name (``{<name>}``); the
config store's keys carry ``{config}``, the contact policy's (ledgers, opt-outs, capacity,
decisions, held requests and the request streams) ``{policy}`` and the operator tokens'
``{security}``, each a slot of their own. Keys no script or transaction touches with another
(profiles, the identity and consent hashes, the quarantine, the audit trail) carry no tag and
spread over the cluster. A key's tag is always the first ``{...}`` in it.
"""

from __future__ import annotations

import re

PREFIX = "esp"
RULES_GROUP = "esp-rules"  # the partition log's consumer groups: one per owning runner, "esp-rules:<owner>"
CONFIG_TAG = "{config}"  # every key of the config store: its transactions and scripts span kinds
POLICY_TAG = "{policy}"  # every key of the contact policy: one commit checks and writes many
SECURITY_TAG = "{security}"  # the operator tokens: revoking writes the record and frees the name

# the separator, the escape itself, hash tags, glob characters, controls and lone surrogates
_UNSAFE = re.compile("[%:{}*?\\[\\]\\\\\x00-\x1f\x7f\ud800-\udfff]")


def part(name: str) -> str:
    """``name`` made safe as one segment of a key: each unsafe character becomes ``%XX`` (or
    ``%uXXXX`` for a lone surrogate), and since ``%`` itself is encoded, distinct names give
    distinct segments and no segment holds ``:``."""
    if name.isalnum():  # letters and digits alone (most ids): nothing to escape, 5x faster than the search
        return name
    return _UNSAFE.sub(_escape, name) if _UNSAFE.search(name) else name


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"%{code:02X}" if code < 0x100 else f"%u{code:04X}"


def rules_group(owner: str) -> str:
    """The consumer group through which the runner ``owner`` reads the partitions it owns."""
    return f"{RULES_GROUP}:{owner}"


def is_rules_group(name: str) -> bool:
    """Whether a log stream's consumer group is a partition owner's (or the unowned legacy one)."""
    return name == RULES_GROUP or name.startswith(f"{RULES_GROUP}:")


def tag(partition: int | str) -> str:
    """The hash tag of every key of ``partition`` (one Redis Cluster slot per partition)."""
    return f"{{p{partition}}}"


def log_stream(partition: int | str) -> str:
    """The durable partition log: one stream per virtual partition."""
    return f"{PREFIX}:log:{tag(partition)}"


def epoch(partition: int | str) -> str:
    """The partition's ownership epoch: raised by each adoption, checked by each publication."""
    return f"{PREFIX}:epoch:{tag(partition)}"


def idempotency(partition: int | str, source: str, day: int, days: int = 1) -> str:
    """Event ids of ``source`` first seen in ``partition`` in the ``days`` days of arrival from
    ``day`` (days since the epoch, UTC): a hash of how many buckets (``n``) and ids (``c``) it
    has; the ids are in :func:`idempotency_bucket`. A key of one day keeps the name it had
    before keys of several days (``<day>/<days>``) existed. An event id is remembered in the
    partition of its customer."""
    period = f"{day}" if days == 1 else f"{day}/{days}"
    return f"{PREFIX}:ids:{tag(partition)}:{part(source)}:{period}"


def idempotency_bucket(partition: int | str, source: str, day: int, index: int, days: int = 1) -> str:
    """One bucket of those ids: 96-bit digest of (source, id) -> its log entry's millisecond
    (runtime/log/partition_log.py; the append script builds the same name)."""
    return f"{idempotency(partition, source, day, days)}:{index}"


def dropped(source: str, day: int) -> str:
    """Event ids of ``source`` dropped on purpose on ``day`` -> the reason."""
    return f"{PREFIX}:dropped:{part(source)}:{day}"


def late(source: str, day: int) -> str:
    """Event ids of ``source`` that reached their partition late on ``day`` -> how late (ms)."""
    return f"{PREFIX}:late:{part(source)}:{day}"


def retracts(source: str, day: int) -> str:
    """Event ids of ``source`` that arrived (on ``day``) too late to keep an output already
    published from being wrong -> the rules whose output they contradict (JSON list)."""
    return f"{PREFIX}:retracts:{part(source)}:{day}"


def hits(partition: int | str, source: str, event_id: str) -> str:
    """The outputs an event of ``partition`` contributed to (rule, topic, output id), for the trace."""
    return f"{PREFIX}:hits:{tag(partition)}:{part(source)}:{part(event_id)}"


def emitted(partition: int | str, output_id: str) -> str:
    """Set while an output of ``partition`` is remembered as published (the outbox's de-dup)."""
    return f"{PREFIX}:out:{tag(partition)}:{part(output_id)}"


def republished(partition: int | str) -> str:
    """The position (log entry id and index in it) of the newest event of ``partition`` that was
    re-published for atomic subscriptions: a re-read of the log re-publishes only what is past it."""
    return f"{PREFIX}:republished:{tag(partition)}"


def outbox(partition: int | str) -> str:
    """Outputs of ``partition`` published but not yet forwarded to every stream they go to."""
    return f"{PREFIX}:outbox:{tag(partition)}"


def fires(partition: int | str, customer: str) -> str:
    """The customer's last rule outputs, newest first (capped), for ``esp why``; ``partition``
    is the customer's."""
    return f"{PREFIX}:fires:{tag(partition)}:{part(customer)}"


def subscription_stream(name: str) -> str:
    """A subscription's stream; its other keys (:func:`deadletters`, ...) extend this name and
    so share its hash slot."""
    return f"{PREFIX}:sub:{{{part(name)}}}"


def channel_stream(name: str) -> str:
    """Notification requests waiting for the channel's gateway."""
    return f"{PREFIX}:chan:{{{part(name)}}}"


def forwarded(stream: str) -> str:
    """Per partition, the newest outbox entry added to ``stream`` (forwarding is idempotent);
    in the stream's hash slot."""
    return f"{stream}:fwd"


def deadletters(stream: str) -> str:
    """Events a subscription's or channel's receiver never took, with the last error."""
    return f"{stream}:dead"


def delivery_chunks(stream: str) -> str:
    """Entry id -> the first entry id of the batch it was sent in, while it is unacknowledged,
    so a batch resent after a crash is the same batch (same ``webhook-id``)."""
    return f"{stream}:chunks"


def delivery_state(stream: str) -> str:
    """A webhook destination's status: disabled (after a 410) and why."""
    return f"{stream}:state"


def deliveries(event_key: str) -> str:
    """Delivery attempts of one event or output (``<source>/<id>`` or an output id), for the trace."""
    return f"{PREFIX}:deliveries:{part(event_key)}"


SUBSCRIPTION_GROUP = "pull"


def config_docs(kind: str) -> str:
    """The documents of one kind: name -> the stored record."""
    return f"{PREFIX}:config:{CONFIG_TAG}:{part(kind)}"


def config_history(kind: str, name: str) -> str:
    return f"{PREFIX}:config:{CONFIG_TAG}:history:{part(kind)}:{part(name)}"


CONFIG_VERSION = f"{PREFIX}:config:{CONFIG_TAG}:version"
"""The global config version running actors poll."""
CONFIG_CHANGES = f"{PREFIX}:config:{CONFIG_TAG}:changes"
"""Global config version -> what that bump changed (runtime/config/store.py)."""
META = f"{PREFIX}:meta"
HEARTBEATS = f"{PREFIX}:heartbeats"
PARTITION_STATUS = f"{PREFIX}:partition-status"  # partition -> JSON: watermark, held, event delay, late, retractions
QUARANTINE = f"{PREFIX}:quarantine"
CONSENT = f"{PREFIX}:consent"


def identity(kind: str) -> str:
    """Identifier (phone, imei) -> links to customers, one hash per kind."""
    return f"{PREFIX}:identity:{part(kind)}"


def profile(customer: str) -> str:
    return f"{PREFIX}:profile:{part(customer)}"


BATCH_PROFILE_VERSION = f"{PREFIX}:pbatch:current"  # the batch profile version readers see


def batch_profile(version: str, customer: str) -> str:
    """What the batch jobs computed for a customer (tags, segments, scores) in one version."""
    return f"{batch_profile_prefix(version)}{part(customer)}"


def batch_profile_prefix(version: str) -> str:
    return f"{PREFIX}:pbatch:{part(version)}:"


# --- the contact policy (runtime/policy) ---------------------------------------------------

HELD = f"{PREFIX}:policy:{POLICY_TAG}:held"  # requests held (quiet hours, capacity), by release time
POLICY_GROUP = "policy"


def policy_requests(shard: int) -> str:
    """Notify and task requests waiting for their contact-policy decision."""
    return f"{PREFIX}:policy:{POLICY_TAG}:requests:{shard}"


def ledger(customer: str) -> str:
    return f"{PREFIX}:ledger:{POLICY_TAG}:{part(customer)}"


def ledger_version(customer: str) -> str:
    return f"{PREFIX}:ledger:{POLICY_TAG}:v:{part(customer)}"


def optouts(customer: str) -> str:
    """Channels the customer opted out of (``*``: all)."""
    return f"{PREFIX}:optout:{POLICY_TAG}:{part(customer)}"


def capacity(channel: str) -> str:
    return f"{PREFIX}:capacity:{POLICY_TAG}:{part(channel)}"


def capacity_version(channel: str) -> str:
    return f"{PREFIX}:capacity:{POLICY_TAG}:v:{part(channel)}"


def decision(request_id: str) -> str:
    return f"{PREFIX}:decision:{POLICY_TAG}:{part(request_id)}"


def customer_decisions(customer: str) -> str:
    """The customer's recent contact decisions, newest first (``esp why``)."""
    return f"{PREFIX}:decisions:{POLICY_TAG}:{part(customer)}"


TOKENS = f"{PREFIX}:tokens:{SECURITY_TAG}"
"""Operator token id -> its record (name, role, keyed digest, expiry, revocation)."""

TOKEN_NAMES = f"{PREFIX}:tokens:{SECURITY_TAG}:names"
"""Name of each live operator token -> its id (names are unique among live tokens)."""

AUDIT = f"{PREFIX}:audit"
"""The audit trail: one stream entry per change, append-only."""


def config_version(kind: str, name: str) -> str:
    """The last version number a document ever had (survives deletion and trimmed history)."""
    return f"{PREFIX}:config:{CONFIG_TAG}:version:{part(kind)}:{part(name)}"
