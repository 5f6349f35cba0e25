"""Where the database is, and how to talk about it without leaking the password.

The URL comes from DIVBASE_DATABASE_URL, or from its parts DIVBASE_DB_HOST, DIVBASE_DB_PORT, DIVBASE_DB_NAME,
DIVBASE_DB_USER and DIVBASE_DB_PASSWORD (what the operator's Jobs get from the database Secret). Any scheme of
PostgreSQL (`postgres://`, `postgresql://`, `postgresql+psycopg2://`) is driven through psycopg 3."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .contract import ENV_DATABASE_URL, ENV_DB_PARTS

ENV_URL = ENV_DATABASE_URL
# SQLAlchemy's URL field names; the contract names the user part `user`, as the database Secret's keys do
ENV_PARTS = {("username" if part == "user" else part): name for part, name in ENV_DB_PARTS.items()}
MASK = "***"


class ConfigError(ValueError):
    """Bad configuration; the message names the variable or option and never carries a secret."""


def parse_url(raw: str, source: str = ENV_URL) -> URL:
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        # make_url's own message repeats the input (and so the password): say what is wrong without it
        raise ConfigError(f"{source}: not a database URL (expected postgresql://user:password@host:port/db)") from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(f"{source}: scheme {url.drivername!r} is not PostgreSQL")
    if not url.database:
        raise ConfigError(f"{source}: the URL names no database")
    return url.set(drivername="postgresql+psycopg")


def database_url_from_env(environ: Mapping[str, str] | None = None, required: bool = True) -> URL | None:
    env = os.environ if environ is None else environ
    if env.get(ENV_URL):
        return parse_url(env[ENV_URL])
    parts = {key: env.get(var) for key, var in ENV_PARTS.items()}
    if not any(parts.values()):
        if required:
            raise ConfigError(f"no database configured: set {ENV_URL} or {', '.join(ENV_PARTS.values())}")
        return None
    missing = [ENV_PARTS[k] for k in ("host", "database", "username") if not parts[k]]
    if missing:
        raise ConfigError(f"incomplete database settings: {', '.join(missing)} not set")
    port = parts["port"]
    if port is not None and not port.isdigit():
        raise ConfigError(f"{ENV_PARTS['port']}: must be a port number, got {port!r}")
    return URL.create("postgresql+psycopg", username=parts["username"], password=parts["password"],
                      host=parts["host"], port=int(port) if port else None, database=parts["database"])


def mask_url(url: URL | None) -> str:
    return url.render_as_string(hide_password=True) if url is not None else "(none)"


class Redactor:
    """Replaces every known secret in a text: psycopg's errors can echo connection strings."""

    _DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
    _URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True)

    @classmethod
    def for_url(cls, url: URL | None) -> Redactor:
        return cls([url.password if url is not None else None, os.environ.get(ENV_PARTS["password"])])

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = self._DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
        return self._URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
