"""Settings from the environment, the way the operator's pods get them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from divbase_migrations.database import database_url_from_env
from sqlalchemy.engine import URL


@dataclass(frozen=True)
class Settings:
    release: str
    database_url: URL
    host: str
    port: int

    @property
    def release_number(self) -> int:
        return int(self.release.split(".")[0])


def from_env() -> Settings:
    release = os.environ.get("DIVBASE_RELEASE", "")
    if not release:
        raise SystemExit("DIVBASE_RELEASE is not set (the image tag sets it)")
    url = database_url_from_env(required=True)
    assert url is not None
    return Settings(release=release, database_url=url, host=os.environ.get("POD_IP") or "127.0.0.1",
                    port=int(os.environ.get("PORT", "8080")))
