"""What can go wrong talking to E-utilities, decided once, near the wire.

::

    EutilsError
    ├── TransientEutilsError      retry with backoff: the same request may succeed later
    │     429 (rate limit), 5xx, connect/read timeouts, connection resets,
    │     a truncated or empty body (MalformedXMLError), NCBI's <ERROR> in a 200 answer
    └── PermanentEutilsError      stop: retrying the same request cannot help
          other 4xx, a response that is well formed but not what was asked for
          (DTDMismatchError)

The poller lets either end the poll of the topics in hand: nothing is committed, so the
next poll repeats the work. Only the retry loop in :mod:`pubwatch_ingest.eutils` branches
on the two kinds.
"""

from __future__ import annotations


class EutilsError(Exception):
    """An E-utilities request failed."""


class TransientEutilsError(EutilsError):
    """Worth retrying after a pause."""


class PermanentEutilsError(EutilsError):
    """Retrying the same request will not help."""


class RetriesExhaustedError(TransientEutilsError):
    """A transient failure outlasted every attempt."""


class MalformedXMLError(TransientEutilsError):
    """A 200 answer whose XML is truncated, empty or malformed (cut short in transit)."""


class DTDMismatchError(PermanentEutilsError):
    """A well-formed answer that does not fit its DTD."""
