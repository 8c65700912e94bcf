"""The contact-way state format (app/intake/state.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.intake import state


def test_a_shared_store_code_is_parsed_into_its_parts() -> None:
    parsed = state.parse("qr.SH01.RAV4.spring26")
    assert (parsed.channel, parsed.dealer, parsed.model, parsed.campaign) == ("qr", "SH01", "RAV4", "spring26")
    assert parsed.is_shared
    assert parsed.tags == {"渠道": "门店活码", "意向车型": "RAV4", "活动": "spring26"}


def test_dash_means_not_given_and_trailing_parts_are_optional() -> None:
    assert state.build("lp", None, "RAV4") == "lp.-.RAV4"
    parsed = state.parse("lp.-.RAV4")
    assert (parsed.dealer, parsed.model, parsed.campaign, parsed.is_shared) == (None, "RAV4", None, False)
    assert state.build("ad", "SH01") == "ad.SH01"


def test_a_lead_link_carries_only_its_token() -> None:
    link = state.for_lead("7K3F9Q2MXA")
    assert link == "ld.7K3F9Q2MXA"
    parsed = state.parse(link)
    assert (parsed.channel, parsed.lead_token, parsed.tags) == ("ld", "7K3F9Q2MXA", {"渠道": "线索"})


@pytest.mark.parametrize("raw", ["", "teststate", "dealer_a", "xx.SH01.RAV4", "qr.SH 01", "qr..RAV4", None])
def test_states_we_did_not_make_are_kept_raw(raw) -> None:
    parsed = state.parse(raw)
    assert parsed.channel is None and parsed.raw == (raw or "")
    assert not parsed.is_shared and parsed.tags == {}


def test_states_that_would_not_fit_wecom_are_refused() -> None:
    with pytest.raises(state.StateError, match="30"):
        state.build("qr", "DEALER0001", "LANDCRUISER", "spring-campaign")
    with pytest.raises(state.StateError, match="channel"):
        state.build("zz", "SH01")
    with pytest.raises(state.StateError, match="channel"):
        state.build("ld", "SH01")  # lead links are made by for_lead only
    with pytest.raises(state.StateError, match="A-Z"):
        state.build("qr", "上海")


part = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789_", min_size=1, max_size=8)


@given(st.sampled_from(["qr", "rc", "ad", "lp"]), part, part, st.one_of(st.none(), part))
def test_every_state_we_build_fits_and_parses_back(channel, dealer, model, campaign) -> None:
    try:
        built = state.build(channel, dealer, model, campaign)
    except state.StateError:
        assert len(".".join(p for p in (channel, dealer, model, campaign) if p)) > state.MAX_LENGTH
        return
    assert len(built) <= state.MAX_LENGTH
    parsed = state.parse(built)
    assert (parsed.channel, parsed.dealer, parsed.model, parsed.campaign) == (channel, dealer, model, campaign)
