"""CommittedApps: the apps reads are served from, kept in name order by commits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miasma_grpc.domain.errors import NotFound
from miasma_grpc.domain.models import App, Binding
from miasma_grpc.store.readmodel import CommittedApps


def app(name: str, revision: int = 1) -> App:
    return App(name, "img:1", (Binding(3001, 3000),), revision=revision)


def test_commits_add_replace_and_delete_in_name_order() -> None:
    """Pages come in name order after a name; a deleted app is gone; the revision follows."""
    model = CommittedApps()
    model.load(3, [app("web"), app("api")])
    model.commit(4, {"db": app("db", 4), "web": app("web", 4)})
    model.commit(5, {"api": None})
    assert [a.name for a in model.page()] == ["db", "web"]
    assert [a.name for a in model.page("db")] == ["web"]
    assert [a.name for a in model.page("", 1)] == ["db"]
    assert model.get("web").revision == 4
    assert model.revision == 5
    with pytest.raises(NotFound):
        model.get("api")
    model.commit(0, {"nothing-here": None})  # deleting what is not there changes nothing
    assert (len(model), model.revision) == (2, 5)


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), max_size=40))
def test_the_name_order_always_matches_the_apps(steps: list[tuple[str, bool]]) -> None:
    """Whatever the commits, the pages list exactly the apps there are, sorted."""
    model = CommittedApps()
    alive: set[str] = set()
    for revision, (name, keep) in enumerate(steps, start=1):
        model.commit(revision, {name: app(name, revision) if keep else None})
        alive = alive | {name} if keep else alive - {name}
    assert [a.name for a in model.page()] == sorted(alive)
