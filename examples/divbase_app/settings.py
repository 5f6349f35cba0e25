"""Settings from the environment, the way the operator's pods get them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from divbase_migrations.database import database_url_from_env
from sqlalchemy.engine import URL

# The example releases of releases.toml; each has a code path in queries.py. DivBase's own releases (0.1.0a6 ...)
# are real images, not this stand-in.
RELEASES = ("1", "2", "3", "4")


def release_number(release: str) -> int:
    """The example release as a number; anything else is refused, so a pod never runs with a guessed code path."""
    if release not in RELEASES:
        raise ValueError(
            f"DIVBASE_RELEASE={release!r}: this stand-in serves the example releases "
            f"{', '.join(RELEASES)} only (DivBase's own releases run DivBase's image)"
        )
    return int(release)


@dataclass(frozen=True)
class Settings:
    release: str
    database_url: URL
    host: str
    port: int

    def __post_init__(self) -> None:
        release_number(self.release)  # fail at construction, not at the first request

    @property
    def release_number(self) -> int:
        return release_number(self.release)


def from_env() -> Settings:
    release = os.environ.get("DIVBASE_RELEASE", "")
    if not release:
        raise SystemExit("DIVBASE_RELEASE is not set (the image tag sets it)")
    url = database_url_from_env(required=True)
    assert url is not None
    try:
        return Settings(
            release=release,
            database_url=url,
            host=os.environ.get("POD_IP") or "0.0.0.0",
            port=int(os.environ.get("PORT", "8080")),
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
