"""The demo from start to end: a fresh instance folder, the embedded Redis, the WeCom sandbox,
gunicorn and a worker; the callback URLs verified; the scenario played; the summary and its
checks. Everything started here is stopped here, in reverse order, whatever happens."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from app import create_app
from app.config import SANDBOX_CREDENTIALS
from app.demo import instance, runner
from app.demo.environment import child_environment, demo_settings, in_process_config
from app.demo.feed import read_feed
from app.demo.play import Player
from app.demo.progress import Progress
from app.demo.report import checks, collect, inbox_pending, inbox_progress, summary_lines
from app.demo.scenario import (
    AdvisorDeletesCustomer,
    AdvisorTextsBot,
    CustomerDeletesAdvisor,
    Scenario,
    build_scenario,
)
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.services import Services

Echo = Callable[[str], None]
POLL_SECONDS = 0.2


class DemoError(RuntimeError):
    """The demo could not run (as opposed to ran and found a broken invariant)."""


@dataclass(frozen=True)
class DemoOptions:
    customers: int = 200
    seed: int = 88
    instance: Path = Path("instance/demo")
    keep: bool = False
    port_base: int | None = None
    timeout: float = 120.0


def run_demo(options: DemoOptions, echo: Echo) -> bool:
    """Run the whole demo; True when every check passed. Raises DemoError (or a startup error)
    when it could not run; the instance folder is kept then, for its logs."""
    started = time.monotonic()
    scenario = build_scenario(options.customers, options.seed)
    folder = instance.prepare(options.instance)
    ok = False
    try:
        with ExitStack() as stack:
            ok = _run(options, scenario, folder, stack, echo, started)
            echo("stopping the worker, the callback server, the sandbox and Redis …")
    finally:
        if ok and not options.keep:
            instance.remove(folder)
        else:
            echo(f"instance folder kept: {folder} (database, logs/web.log, logs/worker.log)")
    return ok


@dataclass(frozen=True)
class Running:
    sandbox: SandboxServer
    svc: Services  # the demo process's own app: reads the database, never serves
    web_url: str


def _run(
    options: DemoOptions, scenario: Scenario, folder: Path, stack: ExitStack, echo: Echo, started: float
) -> bool:
    deadline = started + options.timeout
    _describe(scenario, echo)
    running = _start(options, scenario, folder, stack, deadline, echo)
    _verify_callback_urls(running.sandbox, echo)
    finished = _play(running, scenario, deadline, echo)
    if not finished:
        echo(f"TIMED OUT after {options.timeout:.0f} s (--timeout); the summary shows how far it got")
    return _report(running, scenario, time.monotonic() - started, finished, echo)


def _start(
    options: DemoOptions, scenario: Scenario, folder: Path, stack: ExitStack, deadline: float, echo: Echo
) -> Running:
    """Redis, the sandbox, the database, gunicorn and the worker; each one's stop is on the
    stack as soon as it exists."""
    redis_url = runner.start_redis(folder)
    stack.callback(runner.stop_redis, folder)

    web_port = options.port_base if options.port_base else runner.free_port()
    sandbox_port = options.port_base + 1 if options.port_base else 0
    web_url = f"http://127.0.0.1:{web_port}"
    config = SandboxConfig(
        callback_url=f"{web_url}/wecom/callback",
        bot_callback_url=f"{web_url}/wecom/bot",
        seed=scenario.seed,
        # Every delivery report is kept: the summary counts them per callback app.
        delivery_log_size=max(2000, scenario.events + 100),
    )
    try:
        sandbox = run_sandbox(config, port=sandbox_port)
    except (OSError, SystemExit):  # werkzeug reports a taken port with sys.exit(1)
        raise DemoError(
            f"the WeCom sandbox cannot listen on port {sandbox_port} (choose --port-base)"
        ) from None
    stop_sandbox = _once(sandbox.stop)
    stack.callback(stop_sandbox)

    settings = demo_settings(folder, redis_url, sandbox.api_base)
    app = create_app(in_process_config(settings, AUTO_MIGRATE="1"))  # migrates, once, before the children
    svc: Services = app.extensions["scrm"]
    stack.callback(svc.close)
    echo(f"instance   {folder}  (SQLite scrm.db, embedded Redis)")
    echo(f"sandbox    {sandbox.url}  (WeCom API {sandbox.api_base})")

    env = child_environment(settings)
    logs = folder / "logs"
    web = runner.start_web(web_port, env, logs / "web.log")
    stack.callback(runner.stop, web)
    worker = runner.start_worker(env, logs / "worker.log")
    stack.callback(runner.stop, worker)
    runner.wait_for_web(web, web_port, deadline)
    runner.wait_for_worker(worker, redis_url, deadline)
    # Stop the sandbox's deliveries before the server goes away (registered last, runs first),
    # so an interrupted run does not spend its shutdown retrying callbacks into a closed port.
    stack.callback(stop_sandbox)
    pids = f"gunicorn gthread 2x4 pid {web.process.pid}, worker pid {worker.process.pid}"
    echo(f"server     {web_url}  ({pids})")
    return Running(sandbox, svc, web_url)


def _play(running: Running, scenario: Scenario, deadline: float, echo: Echo) -> bool:
    """Seed the corp, then play the phases in order: a phase starts once the previous one's
    callbacks are delivered (a customer is deleted after being added, not before). False when
    the deadline came first."""
    player = Player(running.sandbox, scenario)
    player.seed_corp()
    _show_corp(scenario, echo)
    started = time.monotonic()
    progress = Progress(scenario.events, echo)
    for number, phase in enumerate(scenario.phases, 1):
        echo(f"phase {number}/{len(scenario.phases)}: {phase.title} — {len(phase.actions)} events")
        player.play(phase)
        last = number == len(scenario.phases)
        if not _wait(player, running.svc, progress, deadline, until_processed=last):
            return False
    played = time.monotonic() - started
    rate = scenario.events / max(played, 1e-6)
    echo(f"scenario played in {played:.1f} s ({rate:.0f} events/s end to end)")
    return True


def _report(running: Running, scenario: Scenario, seconds: float, finished: bool, echo: Echo) -> bool:
    feed = read_feed(running.web_url, SANDBOX_CREDENTIALS["HQ_API_TOKEN"])
    seen = collect(running.svc, running.sandbox, feed, seconds)
    echo("")
    for line in summary_lines(scenario, seen):
        echo(line)
    echo("")
    results = checks(scenario, seen)
    echo("Checks")
    for check in results:
        echo(f"  {'ok  ' if check.ok else 'FAIL'}  {check.text}")
    ok = finished and all(check.ok for check in results)
    echo("demo OK" if ok else "demo FAILED: " + ("see the checks above" if finished else "timed out"))
    return ok


def _wait(player: Player, svc: Services, progress: Progress, deadline: float, until_processed: bool) -> bool:
    """Poll until the phase's deliveries are finished (and, for the last phase, the inbox has
    nothing pending); False at the deadline."""
    while True:
        delivered = player.delivered()
        _, processed = inbox_progress(svc)
        progress.update(delivered, processed)
        all_delivered = delivered == len(player.deliveries)
        if all_delivered and (not until_processed or inbox_pending(svc) == 0):
            # Deliveries are finished once the server answered, and it answers after storing:
            # no row can appear after this point, so nothing pending means nothing left to do.
            if until_processed:
                progress.update(delivered, inbox_progress(svc)[1])
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)


def _verify_callback_urls(sandbox: SandboxServer, echo: Echo) -> None:
    """What an admin does when saving the callback URLs in the WeCom console: WeCom sends an
    encrypted echostr that the server must decrypt and send back within a second."""
    for target, app_name in (("contact", "customer contact (客户联系)"), ("bot", "self-built app (bot)")):
        result = sandbox.platform.verify_callback_url(target)
        status = (
            "verified"
            if result["verified"]
            else f"NOT verified ({result.get('error') or result.get('status')})"
        )
        echo(f"callback   {result['url']}  {app_name}: URL {status}")
        if not result["verified"]:
            raise DemoError(f"the {target} callback URL failed WeCom's URL verification; see logs/web.log")


def _describe(scenario: Scenario, echo: Echo) -> None:
    actions = [action for phase in scenario.phases for action in phase.actions]
    churned = sum(isinstance(a, CustomerDeletesAdvisor) for a in actions)
    dropped = sum(isinstance(a, AdvisorDeletesCustomer) for a in actions)
    texts = sum(isinstance(a, AdvisorTextsBot) for a in actions)
    echo(
        f"Dealer SCRM demo (seed {scenario.seed}): {len(scenario.dealers)} dealers, "
        f"{len(scenario.advisors)} advisors, {len(scenario.customers)} customers"
    )
    echo(
        f"  {len(scenario.customers)} customers add an advisor, {churned} delete their advisor, "
        f"{dropped} are deleted by theirs, {texts} bot messages; "
        f"{scenario.duplicates} of {scenario.events} events delivered twice"
    )


def _show_corp(scenario: Scenario, echo: Echo) -> None:
    echo("corp       advisors and their contact ways (state = channel.dealer.model):")
    for dealer in scenario.dealers:
        ways = " · ".join(f"{a.name} {a.state}" for a in scenario.advisors if a.dealer == dealer.code)
        echo(f"  {dealer.code} {dealer.name}: {ways}")


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run
