"""The demo from start to end: a fresh instance folder, the embedded Redis, the WeCom sandbox,
gunicorn and a worker; the callback URLs verified; the roster imported and the corp seeded; the
leads posted and the scenario played; the summary and its checks. Everything started here is
stopped here, in reverse order, whatever happens."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from app import create_app
from app.config import SANDBOX_CREDENTIALS
from app.demo import instance, runner
from app.demo.campaigns import Campaigns, CampaignsRun
from app.demo.days import DAYS, Days, Simulated
from app.demo.environment import child_environment, demo_settings, in_process_config
from app.demo.feed import read_feed
from app.demo.play import Player, PlayError, PostedLead
from app.demo.progress import Progress
from app.demo.report import checks, collect, inbox_pending, inbox_progress, interactions_of, summary_lines
from app.demo.scenario import (
    LEAD_LINK,
    LEAD_UNIONID,
    OWN,
    SHARED,
    Action,
    AdvisorDeletesCustomer,
    AdvisorTextsBot,
    CustomerDeletesAdvisor,
    Scenario,
    build_scenario,
)
from app.intake.roster import DEMO_ROSTER, ImportSummary
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.services import Services

Echo = Callable[[str], None]
POLL_SECONDS = 0.2
# Adds emitted but not processed yet, at most: customers arrive as fast as the server keeps up,
# so each welcome goes out well within the WelcomeCode's 20 s (200 adds at once would queue the
# last ones behind everybody else's WeCom calls).
MAX_ADD_BACKLOG = 40
MAX_HAND_OVER_ROUNDS = 4  # the handler offers a customer to at most 3 advisors


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
    player = Player(running.sandbox, scenario, running.svc, running.web_url)
    simulation = Days(running.svc, running.sandbox, running.web_url, scenario.seed, deadline, echo)
    try:
        finished = _play(running, player, scenario, deadline, echo, simulation.load_cards)
    except PlayError as exc:
        raise DemoError(str(exc)) from None
    days = campaigns = None
    if finished:
        days = simulation.run()
        finished = days.finished
        if finished:
            echo(f"simulated {DAYS} days in {days.seconds:.1f} s")
            campaigns = Campaigns(
                running.svc, running.sandbox, running.web_url, simulation, deadline, echo
            ).run()
            finished = campaigns.finished
    if not finished:
        echo(f"TIMED OUT after {options.timeout:.0f} s (--timeout); the summary shows how far it got")
    return _report(running, player, scenario, time.monotonic() - started, finished, echo, days, campaigns)


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
        delivery_log_size=max(2000, 2 * scenario.events + 100),  # scripted ones and the hand-overs
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


def _play(
    running: Running,
    player: Player,
    scenario: Scenario,
    deadline: float,
    echo: Echo,
    load_cards: Callable[[], None],
) -> bool:
    """Import the roster and seed the corp, load headquarters' SOP cards, post the leads, then
    play the stages in order: each starts once the previous one's callbacks are processed (WeCom
    ends the hand-overs the handlers asked for; a customer is deleted by whoever has them after
    the hand-overs). False when the deadline came first."""
    summary = player.seed_corp()
    _show_corp(scenario, summary, echo)
    load_cards()
    started = time.monotonic()
    posted = player.post_leads()
    _show_leads(scenario, posted, echo)
    svc = running.svc

    adds = scenario.adds.actions
    echo(f"stage 1/4: {scenario.adds.title} — {len(adds)} events")
    if not _stage(player, svc, adds, deadline, echo, backlog=MAX_ADD_BACKLOG):
        return False

    echo("stage 2/4: WeCom ends the hand-overs (transfer_customer): accepted, or refused → next-best advisor")
    for number in range(1, MAX_HAND_OVER_ROUNDS + 1):
        if player.pending_hand_overs() == 0:
            break
        mark = _mark(player, svc)
        accepted, refused = player.complete_hand_overs(refuse=number == 1)
        echo(f"  round {number}: {accepted} accepted, {refused} refused")
        if not _wait(player, svc, Progress(accepted + refused, echo, mark), deadline):
            return False

    actions = scenario.follow_up.actions
    echo(f"stage 3/4: {scenario.follow_up.title} — {len(actions)} events")
    if not _stage(player, svc, actions, deadline, echo):
        return False

    cards = sum(1 for lead in posted if lead.status == "created" and lead.advisor)
    echo(f"stage 4/4: the leads' advisors get their cards (message/send textcard) — {cards}")
    if not _wait_for(lambda: interactions_of(svc, "lead_card_sent") >= cards, deadline):
        return False
    played = time.monotonic() - started
    events = len(player.deliveries)
    echo(
        f"scenario played in {played:.1f} s ({events} events, {events / max(played, 1e-6):.0f}/s end to end)"
    )
    return True


def _mark(player: Player, svc: Services) -> tuple[int, int]:
    """Where the run's counts stand now: (events emitted, inbox rows finished)."""
    return len(player.deliveries), inbox_progress(svc)[1]


def _stage(
    player: Player,
    svc: Services,
    actions: tuple[Action, ...],
    deadline: float,
    echo: Echo,
    backlog: int | None = None,
) -> bool:
    """Emit the actions, at most ``backlog`` ahead of processing, then wait until processed."""
    mark = _mark(player, svc)
    progress = Progress(len(actions), echo, mark)
    for action in actions:
        while backlog is not None:
            processed = inbox_progress(svc)[1]
            progress.update(player.delivered(), processed)
            if len(player.deliveries) - mark[0] - (processed - mark[1]) < backlog:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_SECONDS / 4)
        player.emit(action)
    progress.total = max(len(player.deliveries) - mark[0], 1)  # without lead customers who had no advisor
    return _wait(player, svc, progress, deadline)


def _report(
    running: Running,
    player: Player,
    scenario: Scenario,
    seconds: float,
    finished: bool,
    echo: Echo,
    days: Simulated | None = None,
    campaigns: CampaignsRun | None = None,
) -> bool:
    feed = read_feed(running.web_url, SANDBOX_CREDENTIALS["HQ_API_TOKEN"])
    seen = collect(running.svc, running.sandbox, feed, seconds, player.played, days, campaigns)
    echo("")
    for line in summary_lines(scenario, seen):
        echo(line)
    echo("")
    results = checks(scenario, seen, len(player.deliveries))
    echo("Checks")
    for check in results:
        echo(f"  {'ok  ' if check.ok else 'FAIL'}  {check.text}")
    ok = finished and all(check.ok for check in results)
    echo("demo OK" if ok else "demo FAILED: " + ("see the checks above" if finished else "timed out"))
    return ok


def _wait(player: Player, svc: Services, progress: Progress, deadline: float) -> bool:
    """Poll until every delivery so far is finished and the inbox has nothing pending; False at
    the deadline."""
    while True:
        delivered = player.delivered()
        _, processed = inbox_progress(svc)
        progress.update(delivered, processed)
        if delivered == len(player.deliveries) and inbox_pending(svc) == 0:
            # Deliveries are finished once the server answered, and it answers after storing:
            # no row can appear after this point, so nothing pending means nothing left to do.
            progress.update(delivered, inbox_progress(svc)[1])
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)


def _wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


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
    ways = scenario.ways()
    echo(
        f"Dealer SCRM demo (seed {scenario.seed}): {len(scenario.dealers)} dealers, "
        f"{sum(a.active for a in scenario.advisors)} active advisors, {len(scenario.customers)} customers, "
        f"{len(scenario.leads)} leads"
    )
    echo(
        f"  customers scan store posters {ways[SHARED]}, advisors' cards {ways[OWN]}, lead links "
        f"{ways[LEAD_LINK]}, advisors' cards carrying a lead's unionid {ways[LEAD_UNIONID]}; "
        f"up to {scenario.refusals} refuse their first hand-over"
    )
    echo(
        f"  {scenario.count(CustomerDeletesAdvisor)} delete their advisor, "
        f"{scenario.count(AdvisorDeletesCustomer)} are deleted by theirs, "
        f"{scenario.count(AdvisorTextsBot)} bot messages; "
        f"{scenario.duplicates} of {scenario.events} scripted events delivered twice"
    )


def _show_corp(scenario: Scenario, summary: ImportSummary, echo: Echo) -> None:
    echo(f"roster     {DEMO_ROSTER.name} imported: {summary}")
    echo("corp       store posters (qr: shared, the engine picks the keeper) and advisors' cards (ad):")
    for dealer in scenario.dealers:
        manager = f"manager {dealer.manager}" if dealer.manager else "no manager"
        echo(f"  {dealer.code} {dealer.name} (sells {'/'.join(dealer.models)}; {manager})")
        echo(f"    posters  {' · '.join(dealer.shared_states)}")
        cards = [
            f"{a.name} {a.state}" if a.active else f"{a.name} (inactive)"
            for a in scenario.advisors
            if a.dealer == dealer.code
        ]
        echo(f"    cards    {' · '.join(cards)}")


def _show_leads(scenario: Scenario, posted: list[PostedLead], echo: Echo) -> None:
    created = sum(1 for lead in posted if lead.status == "created")
    advised = sum(1 for lead in posted if lead.advisor)
    cross = sum(lead.cross_territory for lead in scenario.leads)
    echo(
        f"leads      POST /api/leads: {len(posted)} leads, {created} created, {advised} given an advisor "
        f"(a card each); {cross} want a model their dealer does not sell (re-routed)"
    )
    for lead in [lead for lead in posted if lead.status == "invalid"][:3]:
        echo(f"  invalid: {'; '.join(lead.errors)}")


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run
