"""A stand-in for DivBase's FastAPI API and Celery workers on DivBase's real schema, one code path per example release.

It serves the example releases 1 to 4 of releases.toml (kinds of change, not DivBase's plans) and talks to the
database the way each one's code would: release 1 is DivBase v0.1.0a9's schema and writes `user.name`, release 2 and
later `user.display_name`; releases 1 and 2 may record a skipped VCF file without a reason, release 3 and later
always give one; release 4 writes the announcement level CAUTION and reads WARNING as CAUTION, older releases never
see CAUTION. Workers start tasks from `task_history` through `task_started_at`, as DivBase keeps no task state in
its own tables. It checks schema compatibility at startup with `divbase_migrations.compat`, and is what the demo's
DivBaseDatabase gates, so a rollout can be shown to serve every request."""
