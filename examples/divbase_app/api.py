"""`divbase-api`: the API stand-in. Its lifespan refuses to start against a database its release cannot use."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from divbase_migrations.compat import IncompatibleSchema, require_compatible
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, create_engine, text

from . import queries
from .settings import Settings, from_env

log = logging.getLogger("divbase_app.api")
RELEASE_HEADER = "X-DivBase-Release"


# Lengths are the columns' (String(n)): a longer value is the client's error (422), not the database's (500).
class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class SkippedFile(BaseModel):
    project: str = Field(default="stand-in", min_length=1, max_length=50)
    reason: str | None = None  # required from release 3 on


class NewAnnouncement(BaseModel):
    heading: str = Field(min_length=1, max_length=200)
    message: str | None = Field(default=None, max_length=1000)


def create_app(settings: Settings) -> FastAPI:
    engine: Engine = create_engine(
        settings.database_url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": "divbase-api"},
    )
    release = settings.release_number

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Not "must be at head": any schema this release can use is fine (see docs/migrations.md).
        try:
            verdict = require_compatible(engine, settings.release)
        except IncompatibleSchema as exc:
            log.error("refusing to start: %s", exc)
            raise
        log.info("schema compatible: %s", verdict.reason)
        yield
        engine.dispose()

    app = FastAPI(title=f"DivBase stand-in, release {settings.release}", lifespan=lifespan)
    app.state.draining = False
    release_header = {RELEASE_HEADER: settings.release}

    @app.middleware("http")
    async def name_the_release(request: Request, call_next: Any) -> Response:
        """Every answer says which release gave it: a client behind a Service can tell the releases apart, also
        in its errors (the load generator attributes failures with it)."""
        response: Response = await call_next(request)
        response.headers.update(release_header)
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500, headers=release_header)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    @app.get("/api/v1/core/health")  # DivBase's own health route: the example chart's readiness probe
    def readyz() -> dict[str, str]:
        if app.state.draining:
            raise HTTPException(503, "draining")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ready", "release": settings.release}

    @app.get("/version")
    def version() -> dict[str, str]:
        return {"release": settings.release}

    @app.post("/users")
    def create_user(body: NewUser) -> dict[str, Any]:
        with engine.begin() as conn:
            user_id = queries.create_user(conn, release, body.name)
        return {"id": user_id, "release": settings.release}

    @app.get("/users/{user_id}")
    def get_user(user_id: int) -> dict[str, Any]:
        with engine.connect() as conn:
            user = queries.get_user(conn, release, user_id)
        if user is None:
            raise HTTPException(404, "no such user")
        return {**user, "release": settings.release}

    @app.post("/skipped-files")
    def skip_file(body: SkippedFile) -> dict[str, Any]:
        try:
            with engine.begin() as conn:
                row = queries.skip_vcf(conn, release, queries.project(conn, body.project), body.reason)
        except queries.ReasonRequired as exc:
            raise HTTPException(422, str(exc)) from None
        return {**row, "release": settings.release}

    @app.post("/announcements")
    def announce(body: NewAnnouncement) -> dict[str, Any]:
        with engine.begin() as conn:
            return {"level": queries.announce(conn, release, body.heading, body.message), "release": settings.release}

    @app.get("/announcements")
    def announcements() -> list[dict[str, str]]:
        with engine.connect() as conn:
            return queries.announcements(conn, release)

    @app.post("/tasks")
    def submit(user_id: int | None = None) -> dict[str, Any]:
        with engine.begin() as conn:
            return {"task_id": queries.submit_task(conn, user_id), "release": settings.release}

    @app.get("/users/{user_id}/tasks")
    def user_tasks(user_id: int) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return queries.user_tasks(conn, user_id)

    return app


class DrainingServer(uvicorn.Server):
    """On SIGTERM, fail readiness and keep serving for a moment before shutting down.

    Endpoints learn that a terminating pod is gone through the API, a little after the kubelet sent SIGTERM; a
    server that stopped listening at once would refuse the requests routed to it in that window. This is what a
    `preStop: sleep` hook does, which is what the pods here use: DIVBASE_DRAIN_SECONDS is 0 (off) by default, for
    platforms without preStop hooks."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_seconds: float) -> None:
        super().__init__(config)
        self.app_ref = app
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.app_ref.state.draining or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self.app_ref.state.draining = True
        log.info("SIGTERM: draining for %.1f s before shutdown", self.drain_seconds)
        threading.Timer(self.drain_seconds, super().handle_exit, args=(sig, frame)).start()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = from_env()
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", access_log=False, timeout_graceful_shutdown=5
    )
    DrainingServer(config, app, float(os.environ.get("DIVBASE_DRAIN_SECONDS", "0"))).run()
