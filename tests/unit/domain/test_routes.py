"""Static routes of a desired-state document: parsed strictly, kept without touching
routes the agent did not make."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.domain.routes import Route, RouteError, parse_routes, route_actions

VPC = IPv4Network("10.226.0.0/16")
GW = IPv4Address("10.80.1.200")
ROUTE = Route(VPC, GW)


def test_a_wanted_route_present_with_its_gateway_needs_nothing() -> None:
    actions = route_actions([ROUTE], [ROUTE], {VPC: GW})
    assert (actions.replace, actions.delete, actions.states) == ([], [], {ROUTE: "present"})


@pytest.mark.parametrize(
    "observed",
    [{}, {VPC: IPv4Address("10.80.1.1")}, {VPC: None}],
    ids=["absent", "other-gateway", "no-gateway"],
)
def test_a_missing_or_diverted_route_is_replaced(
    observed: dict[IPv4Network, IPv4Address | None],
) -> None:
    actions = route_actions([ROUTE], [ROUTE], observed)
    assert actions.replace == [ROUTE]
    assert actions.states == {ROUTE: "missing"}


def test_only_a_managed_route_still_as_the_agent_made_it_is_deleted() -> None:
    other = IPv4Network("10.9.0.0/16")
    observed = {VPC: GW, other: IPv4Address("10.80.1.1")}
    assert route_actions([], [ROUTE], observed).delete == [ROUTE]
    # Someone else's route to the same destination (another gateway) stays.
    assert route_actions([], [ROUTE], {VPC: IPv4Address("10.80.1.1")}).delete == []
    # A route the agent never made stays.
    assert route_actions([], [], observed).delete == []


@given(
    st.lists(st.integers(min_value=0, max_value=5), max_size=4),
    st.lists(st.integers(min_value=0, max_value=5), max_size=4),
)
def test_wanted_routes_are_never_deleted(wanted_ids: list[int], managed_ids: list[int]) -> None:
    def route(i: int) -> Route:
        return Route(IPv4Network(f"10.{i}.0.0/16"), GW)

    wanted = sorted({route(i) for i in wanted_ids})
    managed = [route(i) for i in managed_ids]
    observed: dict[IPv4Network, IPv4Address | None] = {r.destination: GW for r in managed}
    actions = route_actions(wanted, managed, observed)
    assert not set(actions.delete) & set(wanted)
    assert set(actions.states) == set(wanted)
    assert {r.destination for r in actions.delete} == {
        r.destination for r in managed if r not in wanted
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"destination": "10.0.0.0/16"}, "routes"),
        ([{"destination": "10.0.0.1/16", "via": "10.1.1.1"}], "routes[0].destination"),
        ([{"destination": "10.0.0.0/16", "via": "ten"}], "routes[0].via"),
        ([7], "routes[0]"),
        (
            [
                {"destination": "10.0.0.0/16", "via": "10.1.1.1"},
                {"destination": "10.0.0.0/16", "via": "10.1.1.2"},
            ],
            "routes[1].destination",
        ),
    ],
)
def test_a_bad_routes_entry_is_named(data: object, field: str) -> None:
    with pytest.raises(RouteError) as info:
        parse_routes(data)
    assert info.value.field == field


def test_routes_parse_sorted_by_destination() -> None:
    data = [ROUTE.as_dict(), {"destination": "10.9.0.0/16", "via": "10.1.1.1"}]
    other = Route(IPv4Network("10.9.0.0/16"), IPv4Address("10.1.1.1"))
    assert parse_routes(data) == [other, ROUTE]
    assert parse_routes(None) == []
