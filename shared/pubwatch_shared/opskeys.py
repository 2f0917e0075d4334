"""Redis key names of the operational data ingest writes and notify reads.

The two services never import each other, so the names their ``/metrics``, ``/admin`` and
admin commands agree on live here. Values are plain strings and numbers so any Redis client
(or an operator with ``redis-cli``) can read them.
"""

from __future__ import annotations

from typing import Final

OPS_PREFIX: Final = "pubwatch:metrics:ingest:"

# Hash: topic slug -> Unix seconds of the topic's last poll whose state change committed.
INGEST_LAST_POLL: Final = OPS_PREFIX + "last_poll"
# Hash: topic slug -> how many PMIDs the topic has announced in events so far.
INGEST_ANNOUNCED: Final = OPS_PREFIX + "announced"
# Hash: "<endpoint>|<outcome>" -> count of E-utilities HTTP attempts. Outcomes: ok,
# http_<status>, timeout, connection_error, bad_xml, error.
NCBI_REQUESTS: Final = OPS_PREFIX + "ncbi_requests"
# Hash: "le:<bucket>" -> cumulative count of attempts that took at most <bucket> seconds
# ("le:+Inf" counts all), plus "sum" -> total seconds. A Prometheus histogram, flattened.
NCBI_LATENCY: Final = OPS_PREFIX + "ncbi_latency"
NCBI_LATENCY_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

FIELD_SEPARATOR: Final = "|"


def ncbi_request_field(endpoint: str, outcome: str) -> str:
    return f"{endpoint}{FIELD_SEPARATOR}{outcome}"


def latency_bucket_field(upper_s: float | str) -> str:
    return f"le:{upper_s}"
