"""The SQL store: models, engine/session set-up and short query functions, one module per table."""
