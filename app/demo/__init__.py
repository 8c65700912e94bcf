"""``scrm demo``: the whole system on one machine with no configuration — SQLite, the embedded
Redis, the local WeCom sandbox, gunicorn and an RQ worker — playing a scripted dealer scenario
and checking that every callback ends up stored, processed and in the HQ feed exactly once.

scenario (the story as data) · play (drives the sandbox) · runner (processes) · environment
(what each process is told) · instance (the folder) · progress · feed · report · run (all of it)."""
