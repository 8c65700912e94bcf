"""The matching engine: examples for each rule, then properties over random rosters."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.intake.matching import HIGH_INTENT, Advisor, Customer, Dealer, Load, Roster, Weights

SH = Dealer("SH01", "上海浦东店", "east", "上海", 31.22, 121.54, frozenset({"RAV4", "COROLLA"}))
HZ = Dealer(
    "HZ01", "杭州西湖店", "east", "杭州", 30.25, 120.15, frozenset({"RAV4", "BZ4X"}), frozenset({"绍兴"})
)
BJ = Dealer("BJ01", "北京朝阳店", "north", "北京", 39.92, 116.44, frozenset({"BZ4X", "AVALON"}))


def advisor(userid: str, dealer: str = "SH01", **kw) -> Advisor:
    return Advisor(userid=userid, dealer_code=dealer, **kw)


def test_the_model_expert_wins_and_the_breakdown_says_why() -> None:
    roster = Roster(
        [SH], [advisor("a1", models=frozenset({"COROLLA"})), advisor("a2", models=frozenset({"RAV4"}))]
    )
    match = roster.match(Customer(dealer_code="SH01", model="RAV4"), {})
    assert match.chosen is not None and match.chosen.userid == "a2"
    assert match.chosen.breakdown["model"] == Weights().model
    assert match.runners_up[0].userid == "a1" and match.runners_up[0].breakdown["model"] == 0
    explained = match.explain()
    assert explained["chosen"]["advisor"] == "a2" and explained["territory"] == ["SH01"]


def test_inactive_and_full_advisors_are_never_chosen() -> None:
    roster = Roster(
        [SH],
        [
            advisor("off", active=False, models=frozenset({"RAV4"})),
            advisor("full", capacity_per_day=2, models=frozenset({"RAV4"})),
            advisor("busy", max_open_leads=5, models=frozenset({"RAV4"})),
            advisor("free"),
        ],
    )
    loads = {"full": Load(assigned_today=2), "busy": Load(open_leads=5)}
    match = roster.match(Customer(dealer_code="SH01", model="RAV4"), loads)
    assert match.chosen is not None and match.chosen.userid == "free"
    assert match.excluded == {
        "off": "inactive",
        "full": "daily capacity used up",
        "busy": "too many open leads",
    }


def test_a_lead_for_a_model_the_dealer_does_not_sell_goes_to_the_nearest_dealer_that_does() -> None:
    roster = Roster([SH, HZ, BJ], [advisor("sh"), advisor("hz", "HZ01"), advisor("bj", "BJ01")])
    match = roster.match(Customer(dealer_code="SH01", model="BZ4X"), {})
    assert match.rerouted and match.dealer_codes == ("HZ01",)  # Hangzhou is nearer Shanghai than Beijing
    assert match.chosen is not None and match.chosen.userid == "hz"


def test_a_city_maps_to_the_dealers_that_cover_it() -> None:
    roster = Roster([SH, HZ], [advisor("sh"), advisor("hz", "HZ01")])
    match = roster.match(Customer(city="绍兴", model="RAV4"), {})
    assert match.dealer_codes == ("HZ01",) and not match.rerouted


def test_no_territory_and_no_seller_are_explained() -> None:
    roster = Roster([SH], [advisor("sh")])
    assert roster.match(Customer(city="火星"), {}).reason.startswith("unknown dealer and city")
    assert (
        roster.match(Customer(dealer_code="SH01", model="LAND_CRUISER"), {}).reason
        == "no dealer sells LAND_CRUISER"
    )
    empty = roster.match(Customer(dealer_code="SH01"), {"sh": Load(assigned_today=20)})
    assert empty.chosen is None and empty.reason == "no eligible advisor in the territory"


def test_seniority_counts_only_for_high_intent() -> None:
    roster = Roster([SH], [advisor("junior", seniority=0), advisor("senior", seniority=3)])
    hot = roster.match(Customer(dealer_code="SH01", intent=HIGH_INTENT + 5), {})
    cold = roster.match(Customer(dealer_code="SH01", intent=10), {})
    assert hot.chosen is not None and hot.chosen.userid == "senior"
    assert cold.chosen is not None and "seniority" not in cold.chosen.breakdown


def test_ties_go_to_the_less_loaded_then_to_the_userid() -> None:
    roster = Roster([SH], [advisor("b"), advisor("a"), advisor("c")])
    assert roster.match(Customer(dealer_code="SH01"), {}).chosen.userid == "a"
    # Equal scores otherwise; spare capacity already favours the idle one.
    assert roster.match(Customer(dealer_code="SH01"), {"a": Load(1), "b": Load(1)}).chosen.userid == "c"


def test_scores_equal_as_explained_go_by_the_tie_break_not_by_float_noise() -> None:
    # Acceptance 0.2 + response 0.2 and acceptance 0.3 + response 0.1 (1/(1 + 5400/600)): both
    # 12.4 in the explanation, one bit apart as floats. Equal load, so the userid decides.
    roster = Roster(
        [SH],
        [
            advisor("b", acceptance_rate=0.3, median_first_response_s=5400),
            advisor("a", acceptance_rate=0.2, median_first_response_s=2400),
        ],
    )
    match = roster.match(Customer(dealer_code="SH01"), {})
    explained = match.explain()
    assert explained["chosen"]["score"] == explained["runners_up"][0]["score"] == 12.4
    assert match.chosen.userid == "a"


# -- properties ------------------------------------------------------------------------------------

MODELS = ["RAV4", "COROLLA", "BZ4X", "AVALON", "CAMRY"]
CITIES = ["上海", "杭州", "苏州", "北京", "广州"]
SEGMENTS = ["prospect", "intent", "lost", "owner"]


@st.composite
def worlds(draw):
    dealers = []
    for i in range(draw(st.integers(1, 6))):
        dealers.append(
            Dealer(
                code=f"D{i}",
                name=f"dealer {i}",
                region="r",
                city=draw(st.sampled_from(CITIES)),
                lat=draw(st.floats(20, 45)),
                lon=draw(st.floats(100, 125)),
                models=frozenset(draw(st.sets(st.sampled_from(MODELS), min_size=1))),
            )
        )
    advisors, loads = [], {}
    for j in range(draw(st.integers(0, 25))):
        userid = f"u{j:02d}"
        capacity = draw(st.integers(0, 5))
        advisors.append(
            Advisor(
                userid=userid,
                dealer_code=draw(st.sampled_from(dealers)).code,
                active=draw(st.booleans()),
                capacity_per_day=capacity,
                max_open_leads=draw(st.integers(0, 5)),
                models=frozenset(draw(st.sets(st.sampled_from(MODELS)))),
                languages=frozenset(draw(st.sets(st.sampled_from(["zh", "yue", "en"])))),
                segments=frozenset(draw(st.sets(st.sampled_from(SEGMENTS)))),
                seniority=draw(st.integers(0, 3)),
                acceptance_rate=draw(st.none() | st.floats(0, 1)),
                median_first_response_s=draw(st.none() | st.floats(0, 86400)),
            )
        )
        loads[userid] = Load(draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    customer = Customer(
        dealer_code=draw(st.none() | st.sampled_from([d.code for d in dealers])),
        city=draw(st.none() | st.sampled_from(CITIES)),
        model=draw(st.none() | st.sampled_from(MODELS)),
        languages=frozenset(draw(st.sets(st.sampled_from(["zh", "yue", "en"])))),
        segment=draw(st.none() | st.sampled_from(SEGMENTS)),
        intent=draw(st.none() | st.floats(0, 100)),
    )
    return dealers, advisors, loads, customer


@settings(max_examples=300, deadline=None)
@given(worlds(), st.randoms())
def test_properties_of_every_match(world, rnd: random.Random) -> None:
    dealers, advisors, loads, customer = world
    match = Roster(dealers, advisors).match(customer, loads)

    shuffled = advisors[:]
    rnd.shuffle(shuffled)
    again = Roster(reversed(dealers), shuffled).match(customer, loads)
    assert again.explain() == match.explain()  # the same input gives the same answer, in any order

    if match.chosen is None:
        return
    chosen = next(a for a in advisors if a.userid == match.chosen.userid)
    load = loads[chosen.userid]
    assert chosen.active
    assert load.assigned_today < chosen.capacity_per_day and load.open_leads < chosen.max_open_leads
    assert chosen.dealer_code in match.dealer_codes  # never out of territory
    dealer = next(d for d in dealers if d.code == chosen.dealer_code)
    if customer.model is not None:
        assert customer.model in dealer.models  # a dealer that sells what the customer wants
    if not match.rerouted:
        assert dealer.code == customer.dealer_code or (
            customer.dealer_code is None and customer.city in {dealer.city}
        )
    for scored in [match.chosen, *match.runners_up]:
        assert abs(sum(scored.breakdown.values()) - scored.total) < 1e-9  # the explanation adds up
    explained = match.explain()  # the pick follows the scores as explained, then the tie-break
    assert all(explained["chosen"]["score"] >= other["score"] for other in explained["runners_up"])
