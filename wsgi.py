"""WSGI entry point: ``gunicorn wsgi:app`` (see Procfile)."""

from app import create_app

app = create_app()
