"""Property-based fuzzing of every operation of both published OpenAPI documents: the
people's API and the agent API (over mutual TLS), checked for server errors, status codes
and response bodies that conform to the schema.

Random input alone rarely gets past validation or names an object that exists, so each
operation's cases are half random, half *seeded*: a seeded case targets objects made for
it through the API (a fresh site to delete, a host to update with its current
resourceVersion, a valid pool in its own cluster) and carries a valid body. Every
operation must answer a 2xx at least once, except those that need a Kubernetes cluster
(:data:`NEEDS_A_CLUSTER`: their success paths are tested against a real API server in
tests/integration/kube).

The app runs on SQLite with the demo objects loaded. The event stream is excluded: it is
open-ended by design and has its own test. Runs are derandomized, so they repeat.
"""

from __future__ import annotations

import itertools
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tether.agent.identity import Identity
from tether.api.agent import create_agent_app
from tether.api.app import create_app
from tether.domain.agent import ActivationCreate
from tether.domain.resources import Role, TokenCreate
from tether.domain.states import HostEvent
from tether.server import ServerThread
from tether.services import activations, desired, tokens
from tether.services import resources as svc
from tether.settings import Settings
from tether.sim import demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: Operations that only succeed against an imported Kubernetes cluster.
NEEDS_A_CLUSTER = {
    "POST /api/v1/clusters/{name}/import",
    "POST /api/v1/clusters/{name}/hybrid/enable",
    "POST /api/v1/clusters/{name}/hybrid/disable",
    "POST /api/v1/hosts/{name}/bootstrap-token",
    "POST /api/v1/hosts/{name}/cordon",
    "POST /api/v1/hosts/{name}/uncordon",
    "POST /api/v1/hosts/{name}/drain",
    "POST /agent/v1/hosts/{name}/bootstrap-token",
}
#: Status codes seen per operation, for the reach check at the end.
SEEN: dict[str, list[int]] = {}
_serial = itertools.count(1)


def _fresh(prefix: str) -> str:
    return f"fz-{prefix}-{next(_serial)}"


# The plane: one SQLite store and data directory for both apps -------------------------------


def _settings() -> Settings:
    config = Settings()
    data = Path(tempfile.mkdtemp(prefix="tether-fuzz-"))
    config.paths.data_dir = data
    config.database.url = f"sqlite:///{data / 'tether.db'}"
    return config


CONFIG = _settings()
APP = create_app(CONFIG)
API = TestClient(APP)
API.__enter__()  # runs the lifespan (migrations); left by the module fixture below
with APP.state.db.session() as _session:
    demo.load(_session)
    TOKEN = {
        "Authorization": "Bearer "
        + tokens.issue(
            _session, TokenCreate(name="fuzz", role=Role.ADMIN), default_ttl_days=1
        ).token
    }
CONFIG.artifacts_dir.mkdir(parents=True, exist_ok=True)
(CONFIG.artifacts_dir / "manifest.json").write_text("{}\n")


def _ok(response: Any, *codes: int) -> Any:
    assert response.status_code in (codes or (200, 201)), response.text
    return response.json()


def _create(path: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = _ok(API.post(f"/api/v1/{path}", json=body, headers=TOKEN), 201)
    return created


def _get(path: str) -> dict[str, Any]:
    got: dict[str, Any] = _ok(API.get(f"/api/v1/{path}", headers=TOKEN), 200)
    return got


# Valid objects, made through the API when a seeded case needs them ----------------------------


def _cluster() -> str:
    return str(_create("clusters", {"name": _fresh("c"), "spec": demo.CLUSTER})["name"])


def _site() -> str:
    return str(_create("sites", {"name": _fresh("s"), "spec": {"description": "fuzz"}})["name"])


def _pool_body() -> dict[str, Any]:
    spec = {
        "cluster": _cluster(),
        "site": _site(),
        "nodeCIDR": "10.80.9.0/24",
        "podCIDR": "10.85.128.0/18",
        "routing": "static",
        "vpnServer": {"publicIP": "203.0.113.9", "insideIP": "10.80.9.1"},
        "profile": {"name": "standard", "version": "1.0.0"},
    }
    return {"name": _fresh("p"), "spec": spec}


def _pool() -> str:
    return str(_create("pools", _pool_body())["name"])


def _host() -> str:
    return str(_create("hosts", {"name": _fresh("h"), "spec": {"site": "dc1"}})["name"])


def _profile_spec(version: str) -> dict[str, Any]:
    layers = demo.profile_layers(demo.VERSIONS["1.0.0"])
    return {
        "version": version,
        "description": "fuzz",
        "layers": layers,
        "variables": demo.VARIABLES,
    }


def _profile() -> tuple[str, str]:
    made = _create("profiles", {"name": _fresh("prof"), "spec": _profile_spec("1.0.0")})
    return str(made["name"]), str(made["spec"]["version"])


def _ready_host(site: str) -> str:
    name = str(_create("hosts", {"name": _fresh("h"), "spec": {"site": site}})["name"])
    with APP.state.db.session() as session:
        svc.transition_host(session, name, HostEvent.CHECKS_PASSED)
    return name


def _pool_with_host() -> tuple[str, str]:
    """A pool, and a Ready host of its site (not yet in the pool)."""
    body = _pool_body()
    pool = str(_create("pools", body)["name"])
    return pool, _ready_host(body["spec"]["site"])


def _member() -> dict[str, str]:
    pool, host = _pool_with_host()
    _create(f"pools/{pool}/hosts", {"host": host})
    return {"name": pool, "host": host}


def _rollout() -> str:
    pool = _pool()
    return str(_create(f"pools/{pool}/rollouts", {"to": "1.1.0"})["name"])


def _update(kind: str, name: str) -> dict[str, Any]:
    current = _get(f"{kind}/{name}")
    return {"resourceVersion": current["resourceVersion"], "spec": current["spec"]}


def _activation() -> str:
    return str(_create("activations", {"site": "dc1"})["id"])


NETWORK = yaml.safe_load((ROOT / "examples" / "hybrid-network.yaml").read_text())

#: (method, path) -> a seeded case's path parameters, query and body.
Seed = Callable[[], tuple[dict[str, Any], dict[str, Any], Any]]
PEOPLE_SEEDS: dict[str, Seed] = {
    "POST /api/v1/clusters": lambda: ({}, {}, {"name": _fresh("c"), "spec": demo.CLUSTER}),
    "GET /api/v1/clusters/{name}": lambda: ({"name": "demo"}, {}, None),
    "GET /api/v1/clusters/{name}/network": lambda: ({"name": "demo"}, {}, None),
    "PUT /api/v1/clusters/{name}": lambda: (
        {"name": (c := _cluster())},
        {},
        _update("clusters", c),
    ),
    "DELETE /api/v1/clusters/{name}": lambda: ({"name": _cluster()}, {}, None),
    "POST /api/v1/sites": lambda: ({}, {}, {"name": _fresh("s"), "spec": {}}),
    "GET /api/v1/sites/{name}": lambda: ({"name": "dc1"}, {}, None),
    "PUT /api/v1/sites/{name}": lambda: ({"name": (s := _site())}, {}, _update("sites", s)),
    "DELETE /api/v1/sites/{name}": lambda: ({"name": _site()}, {}, None),
    "POST /api/v1/pools": lambda: ({}, {}, _pool_body()),
    "GET /api/v1/pools/{name}": lambda: ({"name": "dc1-pool"}, {}, None),
    "PUT /api/v1/pools/{name}": lambda: ({"name": (p := _pool())}, {}, _update("pools", p)),
    "DELETE /api/v1/pools/{name}": lambda: ({"name": _pool()}, {}, None),
    "POST /api/v1/hosts": lambda: ({}, {}, {"name": _fresh("h"), "spec": {"site": "dc1"}}),
    "GET /api/v1/hosts/{name}": lambda: ({"name": _host()}, {}, None),
    "PUT /api/v1/hosts/{name}": lambda: ({"name": (h := _host())}, {}, _update("hosts", h)),
    "DELETE /api/v1/hosts/{name}": lambda: ({"name": _host()}, {}, None),
    "POST /api/v1/hosts/{name}/reset": lambda: ({"name": _host()}, {}, None),
    "POST /api/v1/hosts/{name}/reset-enrolment": lambda: ({"name": _host()}, {}, None),
    "POST /api/v1/hosts/{name}/revoke-certificates": lambda: ({"name": _host()}, {}, None),
    "PUT /api/v1/hosts/{name}/desired": lambda: (
        {"name": _host()},
        {},
        {"document": {"note": "fuzz"}},
    ),
    "GET /api/v1/hosts/{name}/desired": lambda: ({"name": _desired_host()}, {}, None),
    "POST /api/v1/profiles": lambda: (
        {},
        {},
        {"name": _fresh("prof"), "spec": _profile_spec("2.0.0")},
    ),
    "GET /api/v1/profiles/{name}/diff": lambda: (
        {"name": "standard"},
        {"from": "1.0.0", "to": "1.1.0"},
        None,
    ),
    "POST /api/v1/pools/{name}/hosts": lambda: (
        {"name": (ph := _pool_with_host())[0]},
        {},
        {"host": ph[1]},
    ),
    "DELETE /api/v1/pools/{name}/hosts/{host}": lambda: (_member(), {}, None),
    "POST /api/v1/pools/{name}/rollouts": lambda: ({"name": _pool()}, {}, {"to": "1.1.0"}),
    "GET /api/v1/rollouts/{name}": lambda: ({"name": _rollout()}, {}, None),
    "POST /api/v1/rollouts/{name}/{verb}": lambda: (
        {"name": _rollout(), "verb": "approve"},
        {},
        None,
    ),
    "GET /api/v1/profiles/{name}/{version}": lambda: (
        {"name": "standard", "version": "1.0.0"},
        {},
        None,
    ),
    "DELETE /api/v1/profiles/{name}/{version}": lambda: (
        dict(zip(("name", "version"), _profile(), strict=True)),
        {},
        None,
    ),
    "DELETE /api/v1/tokens/{token_id}": lambda: (
        {"token_id": _create("tokens", {"name": _fresh("t")})["id"]},
        {},
        None,
    ),
    "POST /api/v1/activations": lambda: ({}, {}, {"site": "dc1"}),
    "GET /api/v1/activations/{activation_id}": lambda: (
        {"activation_id": _activation()},
        {},
        None,
    ),
    "DELETE /api/v1/activations/{activation_id}": lambda: (
        {"activation_id": _activation()},
        {},
        None,
    ),
    "POST /api/v1/network/check": lambda: ({}, {}, NETWORK),
    "POST /api/v1/network/plan": lambda: ({}, {}, {"document": NETWORK}),
    "GET /api/v1/artifacts/{path}": lambda: ({"path": "manifest.json"}, {}, None),
}


def _desired_host() -> str:
    name = _host()
    _ok(API.put(f"/api/v1/hosts/{name}/desired", json={"document": {"a": 1}}, headers=TOKEN))
    return name


def _key(case: Any) -> str:
    return f"{case.operation.method.upper()} {case.operation.path}"


def _seeding(seeds: dict[str, Seed]) -> Callable[[Any, Any], Any]:
    """A ``flatmap_case`` hook: each case as generated, or seeded (see the module doc)."""

    def flatmap_case(context: Any, case: Any) -> Any:
        seed = seeds.get(_key(case))
        if seed is None:
            return st.just(case)

        def seeded() -> Any:
            path, query, body = seed()
            copy = case  # each generated case is a new object: edit it in place
            copy.path_parameters = {**(copy.path_parameters or {}), **path}
            copy.query = query
            if body is not None or copy.body is not None:
                copy.body = body
            return copy

        return st.one_of(st.just(case), st.builds(seeded))

    return flatmap_case


def _record(context: Any, case: Any, response: Any) -> None:
    SEEN.setdefault(_key(case), []).append(response.status_code)


people = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP).exclude(
    path="/api/v1/events/stream"
)
people.hook("flatmap_case")(_seeding(PEOPLE_SEEDS))
people.hook("after_call")(_record)


@people.parametrize()
@FUZZ
def test_people_api(case: Any) -> None:
    case.call_and_validate(headers=TOKEN, checks=CHECKS)


# The agent API over mutual TLS, as one enrolled host -------------------------------------------

AGENT_HOST = "fz-agent"
AGENT_APP = create_agent_app(CONFIG, APP.state.db)


def _csr(name: str) -> tuple[bytes, str]:
    """A fresh key and a CSR for ``name``, as the agent makes them."""
    key, csr = Identity(CONFIG.paths.data_dir / "fz-identity").new_csr(name)
    return key, csr.decode()


def _registration(name: str | None = None) -> dict[str, Any]:
    with APP.state.db.session() as session:
        issued = activations.create(
            session, ActivationCreate(site="dc1", expires_in="1h"), actor="fuzz"
        )
    name = name or _fresh("enrol")
    key_pem, csr = _csr(name)
    REGISTERED_KEYS[name] = key_pem
    return {
        "activationID": issued.id,
        "code": issued.code,
        "name": name,
        "hostID": uuid.uuid4().hex,
        "csr": csr,
    }


REGISTERED_KEYS: dict[str, bytes] = {}


def _enrol() -> tuple[Path, Path]:
    """:data:`AGENT_HOST` enrols as an agent does (an activation, a CSR), through the
    agent app; its certificate and key, for the mutual-TLS calls."""
    with TestClient(AGENT_APP) as client:  # registration needs no client certificate
        enrolment = _ok(client.post("/agent/v1/register", json=_registration(AGENT_HOST)), 201)
    cert_file, key_file = CONFIG.paths.data_dir / "fz.crt", CONFIG.paths.data_dir / "fz.key"
    cert_file.write_text(enrolment["certificate"])
    key_file.write_bytes(REGISTERED_KEYS[AGENT_HOST])
    key_file.chmod(0o600)
    _ok(API.put(f"/api/v1/hosts/{AGENT_HOST}/desired", json={"document": {"a": 1}}, headers=TOKEN))
    return cert_file, key_file


CERT = _enrol()


def _applied() -> dict[str, Any]:
    with APP.state.db.session() as session:
        status = desired.get_status(session, AGENT_HOST)
    return {"hash": status.hash, "result": {"ok": True, "message": "fuzz"}}


AGENT_SEEDS: dict[str, Seed] = {
    "POST /agent/v1/register": lambda: ({}, {}, _registration()),
    "GET /agent/v1/hosts/{name}": lambda: ({"name": AGENT_HOST}, {}, None),
    "POST /agent/v1/hosts/{name}/heartbeat": lambda: ({"name": AGENT_HOST}, {}, {"n": 0}),
    "POST /agent/v1/hosts/{name}/certificate": lambda: (
        {"name": AGENT_HOST},
        {},
        {"csr": _csr(AGENT_HOST)[1]},
    ),
    "GET /agent/v1/hosts/{name}/desired": lambda: ({"name": AGENT_HOST}, {}, None),
    "POST /agent/v1/hosts/{name}/applied": lambda: ({"name": AGENT_HOST}, {}, _applied()),
    "POST /agent/v1/hosts/{name}/events": lambda: (
        {"name": AGENT_HOST},
        {},
        {"type": "Normal", "reason": "Fuzz", "message": "fuzz"},
    ),
    "GET /agent/v1/hosts/{name}/events": lambda: ({"name": AGENT_HOST}, {}, None),
    "GET /agent/v1/artifacts/{path}": lambda: ({"path": "manifest.json"}, {}, None),
}

agent = schemathesis.openapi.from_dict(AGENT_APP.openapi())
agent.hook("flatmap_case")(_seeding(AGENT_SEEDS))
agent.hook("after_call")(_record)


@pytest.fixture(scope="module")
def agent_port() -> Iterator[ServerThread]:
    """Both servers on this module's store: the agent API answers on its TLS port."""
    server = ServerThread(CONFIG).start()
    yield server
    server.stop()


@agent.parametrize()
@FUZZ
def test_agent_api_over_mutual_tls(case: Any, agent_port: ServerThread) -> None:
    case.call_and_validate(
        base_url=agent_port.agent_url,
        checks=CHECKS,
        verify=str(agent_port.ca_bundle),
        cert=tuple(str(p) for p in CERT),
    )


@pytest.fixture(scope="module", autouse=True)
def _people_app() -> Iterator[None]:
    yield
    API.__exit__(None, None, None)


# Reach -------------------------------------------------------------------------------------


def test_every_operation_reached_a_success() -> None:
    """Runs after the fuzzing above (file order): each operation fuzzed answered a 2xx at
    least once, except those that need a cluster."""
    if not SEEN:
        pytest.skip("no operation was fuzzed in this run")
    missed = sorted(
        op
        for op, codes in SEEN.items()
        if op not in NEEDS_A_CLUSTER and not any(200 <= c < 300 for c in codes)
    )
    reached = sum(any(200 <= c < 300 for c in codes) for codes in SEEN.values())
    print(f"\n{reached} of {len(SEEN)} operations answered a 2xx")
    assert missed == [], {op: sorted(set(SEEN[op])) for op in missed}
