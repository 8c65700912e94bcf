"""``scrm demo``: the whole system on one machine with no configuration — SQLite, the embedded
Redis, the local WeCom sandbox, gunicorn and an RQ worker — importing the demo roster, posting
leads as HQ would, playing a scripted dealer scenario (store posters, advisors' cards, lead links,
hand-overs accepted and refused, churn) and checking that every callback ends up stored,
processed and in the HQ feed exactly once, and that the intake did what it promises.

scenario (the story as data) · play (drives the sandbox and /api/leads) · runner (processes) ·
environment (what each process is told) · instance (the folder) · progress · feed · report · run
(all of it)."""
