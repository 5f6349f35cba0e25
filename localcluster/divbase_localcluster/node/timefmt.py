"""RFC 3339 timestamps in whole seconds, the form the kubelet writes into pod and node status."""

from __future__ import annotations

from datetime import UTC, datetime

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime(FORMAT)


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of a timestamp written by `now_rfc3339`."""
    return datetime.strptime(text, FORMAT).replace(tzinfo=UTC).timestamp()
