"""The router's inner parts without processes: the DNS answers Caddy takes upstreams from,
and the configuration Caddy is given (docs/routing.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from miasma_grpc.router.caddy import Caddy, CaddyRoute, Listen, caddy_config
from miasma_grpc.router.dns import Answers, Upstream, srv_name


def ask(answers: Answers, name: str, kind: str) -> DNSRecord:
    return answers.answer(DNSRecord.question(name, kind))


def test_a_route_is_answered_with_its_upstream_and_nothing_else_is() -> None:
    """SRV of a route: the port, with the upstream's address as an A record beside it;
    the address name answers A; an unknown route is NXDOMAIN; a name outside the zone
    is refused."""
    answers = Answers()
    answers.set({"r1": Upstream("127.0.0.1", 41001)})
    srv = ask(answers, srv_name("r1"), "SRV")
    [record] = srv.rr
    assert (record.rtype, record.rdata.port, record.ttl) == (QTYPE.SRV, 41001, 0)
    [glue] = srv.ar
    assert str(glue.rdata) == "127.0.0.1"
    address = ask(answers, str(record.rdata.target), "A")
    assert [str(r.rdata) for r in address.rr] == ["127.0.0.1"]
    assert ask(answers, str(record.rdata.target), "AAAA").rr == []
    assert ask(answers, srv_name("gone"), "SRV").header.rcode == RCODE.NXDOMAIN
    assert ask(answers, "example.com.", "A").header.rcode == RCODE.REFUSED
    answers.set({})
    assert ask(answers, srv_name("r1"), "SRV").header.rcode == RCODE.NXDOMAIN


def test_caddy_is_given_the_longest_path_of_a_host_first_and_https_only_for_tls() -> None:
    """Routes are ordered so that /api wins over / on one host; a route without tls
    matches plain HTTP only; public names of TLS routes go to ACME only with an e-mail;
    the last route is the 404 for anything else."""
    routes = [
        CaddyRoute("a", "web.localhost"),
        CaddyRoute("b", "web.localhost", "/api", tls=True),
        CaddyRoute("c", "shop.example.com", tls=True),
    ]
    config = caddy_config(routes, listen=Listen("127.0.0.1:1080", "127.0.0.1:1443"),
                          dns_port=5300, data=Path("/d"), admin_socket=Path("/s/a.sock"),
                          acme_email="ops@example.com")  # fmt: skip
    server = config["apps"]["http"]["servers"]["miasma"]
    ids = [r["@id"] for r in server["routes"]]
    assert ids == ["miasma-c", "miasma-b", "miasma-a", "miasma-no-route"]
    by_id = {r["@id"]: r for r in server["routes"]}
    assert by_id["miasma-b"]["match"] == [{"host": ["web.localhost"], "path": ["/api", "/api/*"]}]
    assert by_id["miasma-a"]["match"][0]["protocol"] == "http"
    upstream = by_id["miasma-a"]["handle"][0]["dynamic_upstreams"]
    assert (upstream["name"], upstream["resolver"]["addresses"]) == (
        "a.miasma.", ["udp/127.0.0.1:5300"],
    )  # fmt: skip
    policies = config["apps"]["tls"]["automation"]["policies"]
    assert policies[0] == {"subjects": ["shop.example.com"],
                           "issuers": [{"module": "acme", "email": "ops@example.com"}]}  # fmt: skip
    assert policies[-1]["issuers"] == [{"module": "internal"}]
    assert config["admin"]["config"] == {"persist": False}
    no_acme = caddy_config(routes, listen=Listen(), dns_port=1, data=Path("/d"),
                           admin_socket=Path("/s"))  # fmt: skip
    assert len(no_acme["apps"]["tls"]["automation"]["policies"]) == 1


async def test_caddys_home_is_absolute_whatever_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caddy runs in a directory of its own: a relative home (make run's .miasma/router)
    is made absolute, or its configuration file is not found."""
    monkeypatch.chdir(tmp_path)
    caddy = Caddy("caddy", Path(".miasma/router"))
    try:
        assert caddy.home == tmp_path / ".miasma" / "router"
        assert caddy.root_certificate.is_absolute()
    finally:
        await caddy.close()
