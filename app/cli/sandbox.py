"""scrm sandbox: the local WeCom (API + platform + control API) in the foreground.

It needs no SCRM configuration and never builds the SCRM app: it is the other side of the wire."""

from __future__ import annotations

import click


@click.command("sandbox")
@click.option("--port", default=8900, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--callback-url",
    default=None,
    help="The app's customer-contact callback, e.g. http://127.0.0.1:5000/wecom/callback",
)
@click.option(
    "--bot-callback-url", default=None, help="The app's bot callback, e.g. http://127.0.0.1:5000/wecom/bot"
)
@click.option(
    "--rate-limit",
    default=None,
    type=click.IntRange(min=1),
    help="API calls per minute per API (default 10000).",
)
@click.option("--quiet", is_flag=True, help="Do not log each request.")
def sandbox(
    port: int,
    host: str,
    callback_url: str | None,
    bot_callback_url: str | None,
    rate_limit: int | None,
    quiet: bool,
) -> None:
    """Run the local WeCom sandbox: /cgi-bin/ (WeCom's API) and /sandbox/ (control API).

    Single process, threaded: its state lives in memory. Point the app at it with
    WECOM_API_BASE=http://HOST:PORT/cgi-bin/ in demo or test mode (same sandbox credentials)."""
    from app.sandbox.config import SandboxConfig
    from app.sandbox.server import create_sandbox_app, serve

    settings: dict[str, object] = {"callback_url": callback_url, "bot_callback_url": bot_callback_url}
    if rate_limit is not None:
        settings["rate_limit_per_minute"] = rate_limit
    app = create_sandbox_app(SandboxConfig(**settings))
    server = serve(app, host, port, log_requests=not quiet)
    click.echo(f"WeCom sandbox on http://{server.host}:{server.port} (API /cgi-bin/, control /sandbox/)")
    click.echo(f"  contact callbacks → {callback_url or '(none yet: POST /sandbox/config)'}")
    click.echo(f"  bot callbacks     → {bot_callback_url or '(none yet)'}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("sandbox stopped")
    finally:
        app.extensions["sandbox"].close()
        server.server_close()
