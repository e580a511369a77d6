"""The access file (miasma_grpc/access.py) and the permission table (domain/access.py)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from miasma_grpc.access import AccessFile, parse_access, token_hash
from miasma_grpc.domain.access import PERMISSIONS, Identity, Role, Scope
from miasma_grpc.domain.errors import PermissionDenied

GOOD = f"""
[[token]]
name = "router"
role = "viewer"
sha256 = "{token_hash("r-token")}"

[[token]]
name = "ci"
role = "Deployer"
sha256 = "{token_hash("ci-token").upper()}"

[[certificate]]
subject = "ops.internal"
role = "admin"
"""


def test_a_good_file_names_each_caller_with_its_role() -> None:
    """Tokens are found by their hash, subjects by any of a certificate's names; the
    MIASMA_ACCESS_TOKEN token is one more, 'admin'."""
    access = parse_access(GOOD, admin_token="root-token")
    assert access.by_token("r-token") == Identity("router", Role.VIEWER)
    assert access.by_token("ci-token") == Identity("ci", Role.DEPLOYER)
    assert access.by_token("root-token") == Identity("admin", Role.ADMIN)
    assert access.by_token("nope") is None
    assert access.by_subject(["x", "ops.internal"]) == Identity(
        "ops.internal", Role.ADMIN, "certificate"
    )
    assert access.by_subject(["x"]) is None
    assert not access.empty
    assert parse_access("").empty


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[[token]\n", "not TOML"),
        ("[[user]]\nname='a'", "unknown tables ['user']"),
        ("[[token]]\nname='a'\nrole='viewer'\nsha256='abc'", "sha256 must be 64 hex digits"),
        (f"[[token]]\nname='a'\nrole='boss'\nsha256='{'0' * 64}'", "unknown role 'boss'"),
        (f"[[token]]\nname=''\nrole='viewer'\nsha256='{'0' * 64}'", "name must be"),
        (f"[[token]]\nname='a'\nrole='viewer'\nsha256='{'0' * 64}'\nteams=['x']",
         "unknown keys ['teams']"),
        (f"[[token]]\nname='a'\nrole='viewer'\nsha256='{'0' * 64}'\napps='web-*'",
         "token #1 (a): apps must be a list of non-empty strings"),
        ("[[certificate]]\nsubject='s'\nrole='viewer'\ngroups=['']",
         "certificate #1 (s): groups must be a list"),
        ("[[certificate]]\nsubject='s'\nrole='viewer'\napps=[]\ngroups=[]",
         "could touch no app"),
        (f"[[token]]\nname='a'\nrole='viewer'\nsha256='{'0' * 64}'\n"
         f"[[token]]\nname='a'\nrole='viewer'\nsha256='{'1' * 64}'", "used twice"),
        (f"[[token]]\nname='a'\nrole='viewer'\nsha256='{'0' * 64}'\n"
         f"[[token]]\nname='b'\nrole='viewer'\nsha256='{'0' * 64}'", "the same token as a"),
        ("[[certificate]]\nsubject='s'\nrole='viewer'\n[[certificate]]\nsubject='s'\n"
         "role='admin'", "named twice"),
        ("token = 1", "array of tables"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_saying_where(text: str, said: str) -> None:
    """Every mistake is a ValueError naming the entry and what is wrong."""
    with pytest.raises(ValueError, match=re.escape(said)):
        parse_access(text)


def test_a_reload_applies_a_good_file_and_keeps_the_old_one_for_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A changed file is applied; one that does not read is not, and the log says why."""
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    access = AccessFile(path)
    assert not access.reload()  # unchanged: not read again
    path.write_text(GOOD + f'\n[[token]]\nname = "new"\nrole = "admin"\n'
                           f'sha256 = "{token_hash("n")}"\n')  # fmt: skip
    assert access.reload(forced=True)
    assert access.current.by_token("n") == Identity("new", Role.ADMIN)
    path.write_text("[[token]]\nname = 'broken'\n")
    with caplog.at_level(logging.ERROR):
        assert not access.reload(forced=True)
    assert "not applied" in caplog.text
    assert access.current.by_token("n") is not None  # the identities in force stay


def test_a_bad_file_at_start_up_stops_the_server(tmp_path: Path) -> None:
    """At start, there are no identities in force to keep: the error goes up."""
    path = tmp_path / "access.toml"
    path.write_text("[[token]]\nrole = 'viewer'\n")
    with pytest.raises(ValueError, match="name must be"):
        AccessFile(path)


def test_each_role_holds_the_permissions_of_the_ones_below() -> None:
    """viewer reads; deployer also changes; admin also deletes. Every refusal names the
    permission and the role that has it."""
    viewer, deployer, admin = (Identity(r.name.lower(), r) for r in Role)
    assert viewer.check("GetApp").name == "apps.get"
    with pytest.raises(PermissionDenied) as refused:
        viewer.check("EditApp")
    assert "needs permission apps.update, which role deployer has" in refused.value.message
    assert refused.value.metadata == {"permission": "apps.update", "role": "deployer"}
    assert deployer.check("EditApp").name == "apps.update"
    with pytest.raises(PermissionDenied):
        deployer.check("DeleteApp")
    for method in PERMISSIONS:
        admin.check(method)
    with pytest.raises(PermissionDenied, match="no role may"):
        admin.check("NoSuchMethod")
    assert set(viewer.permissions) < set(deployer.permissions) < set(admin.permissions)


def test_a_role_limited_to_apps_covers_names_by_pattern_and_apps_by_group() -> None:
    """``apps`` are shell patterns on the name, ``groups`` the app's group; either one
    lets an app in; refusals say what the role is limited to."""
    access = parse_access(
        "[[certificate]]\nsubject='ci'\nrole='deployer'\napps=['web-*', 'api']\n"
        "groups=['staging']\n[[certificate]]\nsubject='ops'\nrole='admin'\n"
    )
    ci = access.by_subject(["ci"])
    assert ci is not None
    assert ci.scope == Scope(("web-*", "api"), ("staging",))
    assert [ci.covers(*app) for app in [("web-1",), ("api",), ("db", "staging")]] == [True] * 3
    assert [ci.covers(*app) for app in [("apix",), ("db",), ("db", "prod")]] == [False] * 3
    with pytest.raises(PermissionDenied) as refused:
        ci.check_app("db", "prod")
    assert refused.value.reason == "APP_OUT_OF_SCOPE"
    assert refused.value.message == (
        "ci may not touch app 'db' (group 'prod'): its role is limited to apps web-*, api "
        "and group staging"
    )
    ops = access.by_subject(["ops"])
    assert ops is not None
    assert ops.scope is None
    assert ops.covers("anything", "any")
    assert str(Scope(groups=("a", "b"))) == "groups a, b"
