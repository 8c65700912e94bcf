"""The baseline: a bare Flask endpoint answering ``success``, served by the same gunicorn setup."""

from flask import Flask

app = Flask(__name__)


@app.post("/wecom/callback")
def callback() -> tuple[str, int, dict[str, str]]:
    return "success", 200, {"Content-Type": "text/plain"}


@app.get("/healthz")
def healthz() -> tuple[str, int, dict[str, str]]:
    return "ok", 200, {"Content-Type": "text/plain"}
