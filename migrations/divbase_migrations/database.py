"""Where the database is, and how to talk about it without repeating any of it.

The URL comes from DIVBASE_DATABASE_URL, or from its parts DIVBASE_DB_HOST, DIVBASE_DB_PORT, DIVBASE_DB_NAME,
DIVBASE_DB_USER and DIVBASE_DB_PASSWORD (what the operator's Jobs get from the database Secret). Any scheme of
PostgreSQL (`postgres://`, `postgresql://`, `postgresql+psycopg2://`) is driven through psycopg 3.

Every one of these values comes from a Secret, and the resource may map any key of it to any part (a `port` mapped
to an API token is a token): no message names a value, and the `Redactor` masks all of them in what the runner
writes (its summary becomes the resource's status and an Event)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

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
        raise ConfigError(f"{source}: the URL's scheme is not PostgreSQL (expected postgresql://...)")
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
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{ENV_PARTS['port']}: must be a port number (1-65535)")  # never the value: see above
    return URL.create(
        "postgresql+psycopg",
        username=parts["username"],
        password=parts["password"],
        host=parts["host"],
        port=int(port) if port else None,
        database=parts["database"],
    )


def mask_url(url: URL | None) -> str:
    return url.render_as_string(hide_password=True) if url is not None else "(none)"


class Redactor:
    """Masks every value of the database settings in a text: psycopg's errors can echo them.

    `secrets` (the password, the whole URL) are masked wherever they occur; `tokens` (host, port, database, user,
    which may be ordinary words such as `divbase`) only where they stand alone, so `divbase_migrations` and
    `divbase-migrate` stay readable while `user "divbase"` does not name the user."""

    _DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
    _URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")

    def __init__(self, secrets: Iterable[str | None] = (), tokens: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 2}, key=len, reverse=True)
        words = sorted({t for t in tokens if t and len(t) >= 2} - set(self.secrets), key=len, reverse=True)
        self._tokens = (
            re.compile(r"(?<![\w-])(?<!\w\.)(?:" + "|".join(map(re.escape, words)) + r")(?![\w-])(?!\.\w)")
            if words
            else None
        )

    @classmethod
    def for_url(cls, url: URL | None, environ: Mapping[str, str] | None = None) -> Redactor:
        """Every value of the settings: from the URL as parsed and from the environment as given (a URL that
        does not parse, a port that is not a number, are masked all the same)."""
        env = os.environ if environ is None else environ
        secrets = [env.get(ENV_URL), env.get(ENV_PARTS["password"])]
        tokens = [env.get(name) for part, name in ENV_PARTS.items() if part != "password"]
        if url is not None:
            secrets.append(url.password)
            tokens += [url.host, url.username, url.database, str(url.port) if url.port else None]
        return cls(secrets, tokens)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if self._tokens is not None:
            text = self._tokens.sub(MASK, text)
        text = self._DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
        return self._URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)

    def scrub(self, value: Any) -> Any:
        """`value` with every string in it (keys too) masked, before it is encoded: a secret with a quote or a
        non-ASCII character is escaped by json.dumps, and would no longer be found in the encoded text."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))
