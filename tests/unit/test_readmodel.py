"""CommittedApps: the apps reads are served from, kept in name order by commits."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miasma_grpc.domain.errors import NotFound
from miasma_grpc.domain.models import App, Binding, DesiredState
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


GROUPS = ("", "web", "data")
STATES = (DesiredState.RUNNING, DesiredState.STOPPED)
change = st.one_of(
    st.none(),  # deleted
    st.tuples(st.sampled_from(GROUPS), st.sampled_from(STATES), st.booleans()),  # + hidden
)


@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), change), max_size=40),
    st.sampled_from((None, *GROUPS)),
    st.sampled_from((None, *STATES)),
    st.sampled_from((None, False, True)),
    st.sampled_from("-abcdefgh"),
    st.integers(min_value=1, max_value=4),
)
def test_filtered_pages_are_the_filter_of_every_app(
    steps: list[tuple[str, tuple[str, DesiredState, bool] | None]],
    group: str | None,
    desired: DesiredState | None,
    hidden: bool | None,
    after: str,
    limit: int,
) -> None:
    """Whatever the commits (apps moving between groups and states, hidden and shown,
    deleted, back), a filtered page from the indexes is the same as filtering every app in
    name order; after a reload from scratch too."""
    model = CommittedApps()
    for revision, (name, spec) in enumerate(steps, start=1):
        new = None if spec is None else replace(app(name, revision), group=spec[0],
                                                desired_state=spec[1], hidden=spec[2])  # fmt: skip
        model.commit(revision, {name: new})
    every = model.page()
    expected = [
        a for a in every
        if (group is None or a.group == group) and (desired is None or a.desired_state is desired)
        and (hidden is None or a.hidden is hidden) and a.name > after.strip("-")
    ][:limit]  # fmt: skip
    query = {"group": group, "desired": desired, "hidden": hidden}
    got = model.page(after.strip("-"), limit, **query)  # type: ignore[arg-type]
    assert got == expected
    reloaded = CommittedApps()
    reloaded.load(model.revision, every)
    assert reloaded.page(after.strip("-"), limit, **query) == expected  # type: ignore[arg-type]


def test_a_filter_given_by_the_caller_sees_only_candidates_of_the_index() -> None:
    """With a group, ``keep`` is asked about that group's apps only (not every app)."""
    model = CommittedApps()
    model.load(1, [*(app(n) for n in "abcdef"), replace(app("db"), group="data")])
    asked: list[str] = []

    def keep(a: App) -> bool:
        asked.append(a.name)
        return True

    page = model.page(group="data", keep=keep)
    assert [a.name for a in page] == ["db"]
    assert asked == ["db"]
