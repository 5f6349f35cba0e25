"""A stand-in for DivBase's FastAPI API and Celery workers, one code path per release.

It talks to the database the way each release of DivBase would (release 1 writes `user.name`, release 2 and later
`user.display_name`; release 3 fills `vcf_metadata.sample_count`; release 4 writes the CAUTION level), and it
checks schema compatibility at startup with `divbase_migrations.compat`. It is what the demo's DivBaseDatabase
gates, so a rollout can be shown to serve every request."""
