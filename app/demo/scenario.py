"""The scripted demo scenario as plain data: dealers, advisors with their contact ways, customers
and what everybody does, in phases. Built from a seed only, so two runs with one seed play the
same story (the sandbox gets the same seed, so even the generated ids repeat)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Dealer:
    code: str
    name: str
    city: str
    department_id: int  # the WeCom department the dealer's advisors belong to


@dataclass(frozen=True)
class Advisor:
    userid: str
    name: str
    dealer: str  # Dealer.code
    model: str  # the model this advisor's contact way is printed for
    channel: str  # where the QR code hangs: store poster, website, social ad

    @property
    def state(self) -> str:
        """The contact way's ``state`` (WeCom allows 30 characters): channel.dealer.model.
        The intake issue defines the real format; this one is just readable and compact."""
        return f"{self.channel}.{self.dealer}.{self.model}"


@dataclass(frozen=True)
class Customer:
    name: str
    model: str
    advisor: str  # Advisor.userid whose contact way the customer scans


# Actions refer to customers by their index in Scenario.customers: their external_userid only
# exists once the sandbox has created them. ``interaction`` is the kind the worker writes for the
# event (workers/handlers/contacts.py); None when the event is deliberately ignored.


@dataclass(frozen=True)
class CustomerAddsAdvisor:
    customer: int
    duplicate: bool = False
    interaction: ClassVar[str | None] = "added"


@dataclass(frozen=True)
class CustomerDeletesAdvisor:
    customer: int
    duplicate: bool = False
    interaction: ClassVar[str | None] = "churned"


@dataclass(frozen=True)
class AdvisorDeletesCustomer:
    customer: int
    duplicate: bool = False
    interaction: ClassVar[str | None] = "deleted"


@dataclass(frozen=True)
class AdvisorTextsBot:
    advisor: str
    content: str
    duplicate: bool = False
    # Bot messages are stored and marked ignored until SOP cards exist (workers/dispatch.py IGNORED).
    interaction: ClassVar[str | None] = None


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
    phases: tuple[Phase, ...]

    @property
    def events(self) -> int:
        """Distinct callbacks the platform will emit (a duplicate delivery is not a new event)."""
        return sum(len(phase.actions) for phase in self.phases)

    @property
    def duplicates(self) -> int:
        return sum(action.duplicate for phase in self.phases for action in phase.actions)

    def expected_interactions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for phase in self.phases:
            for action in phase.actions:
                if action.interaction:
                    counts[action.interaction] = counts.get(action.interaction, 0) + 1
        return counts


DEALERS = (
    Dealer("SH01", "一汽丰田上海浦东店", "上海", 2),
    Dealer("HZ01", "一汽丰田杭州西湖店", "杭州", 3),
    Dealer("SZ01", "一汽丰田苏州园区店", "苏州", 4),
)
# How customers spread over the cities (Shanghai draws the most).
CITY_WEIGHTS = (0.45, 0.30, 0.25)

# Model code (used in states, ASCII) → name; each dealer has one advisor per model.
MODELS = {"RAV4": "RAV4荣放", "COROLLA": "卡罗拉", "AVALON": "亚洲龙", "BZ4X": "bZ4X"}
MODEL_WEIGHTS = (0.35, 0.30, 0.20, 0.15)
CHANNELS = ("qr", "web", "ad")

ADVISOR_NAMES = (
    ("wangfang", "王芳"),
    ("liqiang", "李强"),
    ("zhangwei", "张伟"),
    ("liuyang", "刘洋"),
    ("chenjing", "陈静"),
    ("yangfan", "杨帆"),
    ("zhaolei", "赵磊"),
    ("huangmin", "黄敏"),
    ("zhoujie", "周杰"),
    ("wuting", "吴婷"),
    ("xuhao", "徐浩"),
    ("sunli", "孙丽"),
)

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力"
BOT_KEYWORDS = ("试驾", "保养多少钱", "RAV4报价", "金融方案", "置换补贴", "到店礼")

DUPLICATE_SHARE = 0.05  # of all events, delivered twice (WeCom lost our 200)
CHURN_SHARE = 0.03  # customers who delete their advisor
DROP_SHARE = 0.02  # customers their advisor deletes


def build_scenario(customers: int, seed: int) -> Scenario:
    """The whole story for ``customers`` customers; the same seed gives the same scenario."""
    if customers < 1:
        raise ValueError("the demo needs at least one customer")
    rng = random.Random(seed)
    advisors = _advisors()
    people = tuple(_customer(rng, advisors) for _ in range(customers))

    adds: list[Action] = [CustomerAddsAdvisor(index) for index in range(customers)]
    # Churn and drops hit different customers: a relation can only end once.
    leaving = rng.sample(range(customers), min(customers, _share(customers, CHURN_SHARE + DROP_SHARE)))
    churn_count = min(len(leaving), _share(customers, CHURN_SHARE))
    follow_up: list[Action] = [CustomerDeletesAdvisor(index) for index in leaving[:churn_count]]
    follow_up += [AdvisorDeletesCustomer(index) for index in leaving[churn_count:]]
    texts = max(3, min(12, customers // 20))
    follow_up += [
        AdvisorTextsBot(rng.choice(advisors).userid, rng.choice(BOT_KEYWORDS)) for _ in range(texts)
    ]
    rng.shuffle(follow_up)

    phases = [adds, follow_up]
    _mark_duplicates(rng, phases)
    return Scenario(
        seed=seed,
        dealers=DEALERS,
        advisors=advisors,
        customers=people,
        phases=(
            Phase("customers scan advisors' QR codes (add_external_contact)", tuple(phases[0])),
            Phase("follow-up: deletions both ways, advisors text the bot", tuple(phases[1])),
        ),
    )


def _share(total: int, share: float) -> int:
    return max(1, round(total * share))


def _advisors() -> tuple[Advisor, ...]:
    names = iter(ADVISOR_NAMES)
    advisors = []
    for dealer in DEALERS:
        for number, model in enumerate(MODELS):
            userid, name = next(names)
            channel = CHANNELS[(dealer.department_id + number) % len(CHANNELS)]
            advisors.append(Advisor(userid, name, dealer.code, model, channel))
    return tuple(advisors)


def _customer(rng: random.Random, advisors: tuple[Advisor, ...]) -> Customer:
    name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    model = rng.choices(list(MODELS), MODEL_WEIGHTS)[0]
    dealer = rng.choices(DEALERS, CITY_WEIGHTS)[0]
    advisor = next(a for a in advisors if a.dealer == dealer.code and a.model == model)
    return Customer(name, model, advisor.userid)


def _mark_duplicates(rng: random.Random, phases: list[list[Action]]) -> None:
    """Pick exactly DUPLICATE_SHARE of all events (at least one) to be delivered twice."""
    slots = [(p, i) for p, actions in enumerate(phases) for i in range(len(actions))]
    for p, i in rng.sample(slots, _share(len(slots), DUPLICATE_SHARE)):
        phases[p][i] = dataclasses.replace(phases[p][i], duplicate=True)
