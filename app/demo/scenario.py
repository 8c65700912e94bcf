"""The scripted demo scenario as plain data: the dealers and advisors of the demo roster
(app/demo/roster.yaml), their contact ways, the leads HQ sends, the customers and what everybody
does. Built from the seed and the roster file only, so two runs with one seed play the same story
(the sandbox gets the same seed, so even the generated ids repeat).

Contact ways (states in app/intake/state.py's format):

    qr.<DEALER>.<MODEL>   a store poster per model the dealer sells: a shared (type 2) code with
                          every active advisor of the dealer; WeCom hands the scan to its members
                          in turn and the engine picks who keeps the customer (a hand-over).
    ad.<DEALER>.<MODEL>   an active advisor's own card (type 1, the advisor's first model):
                          the advisor keeps the customer.
    ld.<token>            a lead's personal link (the token exists once HQ imported the lead):
                          the lead's advisor keeps the customer and the lead is linked.

What the engine decides (who keeps a shared-code customer, who gets a lead) happens at run time,
so the scenario says who does what, not who ends up with whom."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app.intake.roster import DEMO_ROSTER, read_roster_file


@dataclass(frozen=True)
class Dealer:
    code: str
    name: str
    city: str
    department_id: int  # the WeCom department the dealer's people belong to
    models: tuple[str, ...]  # what the dealer sells (roster)
    territory: tuple[str, ...]  # other cities the dealer serves
    manager: str | None  # userid of the dealer manager (churn alerts go there)

    @property
    def shared_states(self) -> tuple[str, ...]:
        """One store poster per model sold: ``qr.<DEALER>.<MODEL>``."""
        return tuple(f"qr.{self.code}.{model}" for model in self.models)


@dataclass(frozen=True)
class Advisor:
    userid: str
    name: str
    dealer: str  # Dealer.code
    model: str | None  # the first model of the advisor's profile: printed on their own card
    active: bool

    @property
    def state(self) -> str:
        """The advisor's own contact way: ``ad.<DEALER>.<MODEL>`` (an inactive advisor has none)."""
        return f"ad.{self.dealer}.{self.model}" if self.model else f"ad.{self.dealer}"


# How a customer reaches an advisor.
SHARED = "shared"  # scans a dealer's store poster (qr.<DEALER>.<MODEL>)
OWN = "own"  # scans an advisor's own card (ad.<DEALER>.<MODEL>)
LEAD_LINK = "lead_link"  # HQ sent a lead; the customer adds its advisor with ld.<token>
LEAD_UNIONID = "lead_unionid"  # a lead with a unionid; the customer scans its advisor's own card
WAYS = (SHARED, OWN, LEAD_LINK, LEAD_UNIONID)


@dataclass(frozen=True)
class Customer:
    name: str
    model: str
    way: str  # one of WAYS
    dealer: str | None = None  # SHARED: the store scanned; OWN: the advisor's dealer
    advisor: str | None = None  # OWN: whose card
    lead: int | None = None  # LEAD_*: index in Scenario.leads


@dataclass(frozen=True)
class Lead:
    """A lead as HQ's CDP posts it to /api/leads (``fields``), and the customer it belongs to
    (None: the customer has not added anyone yet)."""

    customer: int | None
    source: str
    external_ref: str
    name: str
    phone: str
    unionid: str | None
    model: str
    city: str
    dealer: str | None  # None: routed by city
    budget: str
    intent: int
    campaign: str | None
    cross_territory: bool  # the lead's dealer (or city) does not sell its model: re-routed

    def fields(self) -> dict[str, object]:
        data = {
            "source": self.source,
            "external_ref": self.external_ref,
            "name": self.name,
            "phone": self.phone,
            "unionid": self.unionid,
            "model": self.model,
            "city": self.city,
            "dealer": self.dealer,
            "budget": self.budget,
            "intent": self.intent,
            "campaign": self.campaign,
        }
        return {key: value for key, value in data.items() if value is not None}


# Actions refer to customers by their index in Scenario.customers: their external_userid only
# exists once the sandbox has created them. Deletions reach whoever holds the customer when the
# action is played (after the hand-overs), which only the sandbox knows then.


@dataclass(frozen=True)
class CustomerAddsAdvisor:
    customer: int
    duplicate: bool = False


@dataclass(frozen=True)
class CustomerDeletesAdvisor:
    customer: int
    duplicate: bool = False


@dataclass(frozen=True)
class AdvisorDeletesCustomer:
    customer: int
    duplicate: bool = False


@dataclass(frozen=True)
class AdvisorTextsBot:
    advisor: str
    content: str
    duplicate: bool = False


Action = CustomerAddsAdvisor | CustomerDeletesAdvisor | AdvisorDeletesCustomer | AdvisorTextsBot


@dataclass(frozen=True)
class Phase:
    title: str
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Scenario:
    seed: int
    dealers: tuple[Dealer, ...]
    advisors: tuple[Advisor, ...]
    customers: tuple[Customer, ...]
    leads: tuple[Lead, ...]
    adds: Phase
    follow_up: Phase
    # Hand-overs: WeCom asks the customer a day later. The first ``refusals`` customers of
    # ``refusal_order`` (shared-code customers, seeded order) who have a pending hand-over
    # refuse it; everybody else accepts, and so do the refusers when offered the next-best.
    refusal_order: tuple[int, ...]
    refusals: int

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The scripted callback phases (the hand-overs' callbacks come from the platform)."""
        return (self.adds, self.follow_up)

    @property
    def events(self) -> int:
        """Distinct scripted callbacks (a duplicate delivery is not a new event); the platform
        adds one per hand-over it completes or refuses."""
        return sum(len(phase.actions) for phase in self.phases)

    @property
    def duplicates(self) -> int:
        return sum(action.duplicate for phase in self.phases for action in phase.actions)

    def count(self, kind: type) -> int:
        return sum(isinstance(action, kind) for phase in self.phases for action in phase.actions)

    def ways(self) -> dict[str, int]:
        counts = dict.fromkeys(WAYS, 0)
        for customer in self.customers:
            counts[customer.way] += 1
        return counts

    @property
    def managers(self) -> tuple[str, ...]:
        return tuple(dealer.manager for dealer in self.dealers if dealer.manager)

    def dealer(self, code: str) -> Dealer:
        return next(dealer for dealer in self.dealers if dealer.code == code)

    def advisor(self, userid: str) -> Advisor:
        return next(advisor for advisor in self.advisors if advisor.userid == userid)


# Customers by city (Shanghai draws the most) and by model.
CITY_WEIGHTS = {"SH01": 0.45, "HZ01": 0.30, "SZ01": 0.25}
MODEL_WEIGHTS = {"RAV4": 0.35, "COROLLA": 0.30, "AVALON": 0.20, "BZ4X": 0.15}

SHARED_SHARE = 0.45  # customers who scan a store poster
LEAD_SHARE = 0.20  # customers who arrive as a lead; the rest scan an advisor's own card
UNIONID_SHARE = 0.4  # leads that carry the customer's WeChat unionid
UNIONID_ADD_SHARE = 0.5  # of those, customers who scan the advisor's card instead of the lead link
UNANSWERED_SHARE = 0.1  # extra leads whose customer adds nobody (yet)
CROSS_TERRITORY_SHARE = 0.1  # leads for a car their city's dealer does not sell (Suzhou bZ4X)
REFUSAL_SHARE = 0.15  # shared-code customers who refuse their first hand-over (if they get one)
DUPLICATE_SHARE = 0.05  # of all scripted events, delivered twice (WeCom lost our 200)
CHURN_SHARE = 0.03  # customers who delete their advisor
DROP_SHARE = 0.02  # customers their advisor deletes

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力"
BOT_KEYWORDS = ("试驾", "保养多少钱", "RAV4报价", "金融方案", "置换补贴", "到店礼")
SOURCES = ("cdp", "autohome", "dongchedi", "website")
BUDGETS = ("10-15万", "15-20万", "20-25万", "25-30万", "30万以上")
CAMPAIGNS = (None, None, "spring26", "testdrive_may", "bz4x_launch")
UNIONID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
# Suzhou does not sell the bZ4X: these leads are re-routed to the nearest dealer that does.
CROSS_TERRITORY = (("苏州", "SZ01", "BZ4X"), ("无锡", None, "BZ4X"))


@cache
def demo_roster(path: Path = DEMO_ROSTER) -> tuple[tuple[Dealer, ...], tuple[Advisor, ...]]:
    """The dealers and advisors of the roster file the demo imports."""
    roster = read_roster_file(path)
    if roster.errors:
        raise ValueError(f"{path}: " + "; ".join(roster.messages))
    dealers = tuple(
        Dealer(
            row.code,
            row.name,
            row.city,
            number + 2,  # department 1 is the corp itself
            tuple(row.models),
            tuple(row.territory),
            row.manager,
        )
        for number, row in enumerate(located.row for located in roster.dealers)
    )
    advisors = tuple(
        Advisor(row.userid, row.name, row.dealer, row.models[0] if row.models else None, row.active)
        for row in (located.row for located in roster.advisors)
    )
    return dealers, advisors


def _advisors() -> tuple[Advisor, ...]:
    """The advisors who get a card: the roster's active advisors (tests/intake/test_roster.py
    holds the imported roster to them)."""
    return tuple(advisor for advisor in demo_roster()[1] if advisor.active and advisor.model)


def __getattr__(name: str) -> object:
    # DEALERS: the roster's dealers, read when first asked for (not at import).
    if name == "DEALERS":
        return demo_roster()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_scenario(customers: int, seed: int) -> Scenario:
    """The whole story for ``customers`` customers; the same seed gives the same scenario."""
    if customers < 1:
        raise ValueError("the demo needs at least one customer")
    rng = random.Random(seed)
    dealers, advisors = demo_roster()
    active = list(_advisors())

    # Who comes which way: a seeded permutation cut by the shares.
    order = list(range(customers))
    rng.shuffle(order)
    lead_count = round(customers * LEAD_SHARE)
    shared_count = round(customers * SHARED_SHARE)
    ways = {index: OWN for index in order}
    ways.update({index: SHARED for index in order[lead_count : lead_count + shared_count]})
    lead_customers = sorted(order[:lead_count])

    leads: list[Lead] = []
    cross = max(1, round(lead_count * CROSS_TERRITORY_SHARE)) if lead_count else 0
    unanswered = round(lead_count * UNANSWERED_SHARE)
    lead_of: dict[int, int] = {}
    for number, index in enumerate([*lead_customers, *[None] * unanswered]):
        if index is not None:
            lead_of[index] = number
        leads.append(_lead(rng, seed, number, index, dealers, cross_territory=number < cross))

    people: list[Customer] = []
    for index in range(customers):
        way = ways[index]
        if index in lead_of:
            lead = leads[lead_of[index]]
            by_unionid = lead.unionid is not None and rng.random() < UNIONID_ADD_SHARE
            way = LEAD_UNIONID if by_unionid else LEAD_LINK
            people.append(Customer(lead.name, lead.model, way, lead=lead_of[index]))
            continue
        name = _name(rng)
        if way == SHARED:
            dealer = _weighted(rng, dealers, CITY_WEIGHTS)
            model = _model(rng, dealer.models)
            people.append(Customer(name, model, SHARED, dealer=dealer.code))
        else:
            dealer = _weighted(rng, dealers, CITY_WEIGHTS)
            advisor = rng.choice([a for a in active if a.dealer == dealer.code])
            assert advisor.model is not None
            people.append(Customer(name, advisor.model, OWN, dealer=dealer.code, advisor=advisor.userid))

    shared = [index for index in range(customers) if people[index].way == SHARED]
    refusal_order = tuple(rng.sample(shared, len(shared)))
    refusals = max(1, round(len(shared) * REFUSAL_SHARE)) if shared else 0

    adds: list[Action] = [CustomerAddsAdvisor(index) for index in range(customers)]
    rng.shuffle(adds)  # poster scans, card scans and lead links arrive mixed
    # Churn and drops hit different customers: a relation can only end once.
    leaving = rng.sample(range(customers), min(customers, _share(customers, CHURN_SHARE + DROP_SHARE)))
    churn_count = min(len(leaving), _share(customers, CHURN_SHARE))
    follow_up: list[Action] = [CustomerDeletesAdvisor(index) for index in leaving[:churn_count]]
    follow_up += [AdvisorDeletesCustomer(index) for index in leaving[churn_count:]]
    texts = max(3, min(12, customers // 20))
    follow_up += [AdvisorTextsBot(rng.choice(active).userid, rng.choice(BOT_KEYWORDS)) for _ in range(texts)]
    rng.shuffle(follow_up)

    phases = [adds, follow_up]
    _mark_duplicates(rng, phases)
    return Scenario(
        seed=seed,
        dealers=dealers,
        advisors=advisors,
        customers=tuple(people),
        leads=tuple(leads),
        adds=Phase(
            "customers scan store posters, advisors' cards and lead links (add_external_contact)",
            tuple(phases[0]),
        ),
        follow_up=Phase("follow-up: deletions both ways, advisors text the bot", tuple(phases[1])),
        refusal_order=refusal_order,
        refusals=refusals,
    )


def _share(total: int, share: float) -> int:
    return max(1, round(total * share))


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _weighted(rng: random.Random, dealers: tuple[Dealer, ...], weights: dict[str, float]) -> Dealer:
    return rng.choices(dealers, [weights.get(dealer.code, 0.1) for dealer in dealers])[0]


def _model(rng: random.Random, models: tuple[str, ...]) -> str:
    return rng.choices(models, [MODEL_WEIGHTS.get(model, 0.1) for model in models])[0]


def _lead(
    rng: random.Random,
    seed: int,
    number: int,
    customer: int | None,
    dealers: tuple[Dealer, ...],
    cross_territory: bool,
) -> Lead:
    if cross_territory:
        city, dealer_code, model = CROSS_TERRITORY[number % len(CROSS_TERRITORY)]
    else:
        dealer = _weighted(rng, dealers, CITY_WEIGHTS)
        model = _model(rng, dealer.models)
        if dealer.territory and rng.random() < 0.25:
            # Only the city is known: the lead is routed by the dealer's territory.
            city, dealer_code = rng.choice(dealer.territory), None
        else:
            city, dealer_code = dealer.city, dealer.code
    unionid = None
    if rng.random() < UNIONID_SHARE:
        unionid = "oDemo" + "".join(rng.choice(UNIONID_ALPHABET) for _ in range(23))
    if number >= 10_000:
        raise ValueError("the demo's fake phone numbers run out at 10,000 leads")
    return Lead(
        customer=customer,
        source=rng.choice(SOURCES),
        external_ref=f"demo{seed}-{number + 1:05d}",
        name=_name(rng),
        phone=f"1380000{number:04d}",
        unionid=unionid,
        model=model,
        city=city,
        dealer=dealer_code,
        budget=rng.choice(BUDGETS),
        intent=rng.randint(30, 95),
        campaign=rng.choice(CAMPAIGNS),
        cross_territory=cross_territory,
    )


def _mark_duplicates(rng: random.Random, phases: list[list[Action]]) -> None:
    """Pick exactly DUPLICATE_SHARE of all events (at least one) to be delivered twice."""
    slots = [(p, i) for p, actions in enumerate(phases) for i in range(len(actions))]
    for p, i in rng.sample(slots, _share(len(slots), DUPLICATE_SHARE)):
        phases[p][i] = dataclasses.replace(phases[p][i], duplicate=True)
