"""The env as text (``miasma env``, ``env:edit``): every env reads back as it was written,
and what is not KEY=VALUE is refused naming the line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from miasma_client._env import env_changes, format_env, parse_env

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@given(st.dictionaries(NAMES, VALUES, max_size=10))
def test_any_env_reads_back_as_it_was_written(env: dict[str, str]) -> None:
    assert parse_env(format_env(env)) == env


def test_plain_values_stay_plain_and_others_are_json_strings() -> None:
    text = format_env({"B": "two words", "A": "postgres://u@db:5432/x", "C": "", "D": 'say "hi"'})
    assert text == 'A=postgres://u@db:5432/x\nB="two words"\nC=""\nD="say \\"hi\\""\n'


def test_comments_blank_lines_and_spaces_around_are_skipped() -> None:
    assert parse_env("# a comment\n\n  KEY = value \r\nX=1") == {"KEY": "value", "X": "1"}


@pytest.mark.parametrize(
    ("text", "line"),
    [("A=1\nnot a pair", "line 2"), ("=1", "line 1"), ("A=1\nA=2", "line 2"), ('A="x', "line 1")],
)
def test_what_is_not_key_value_is_refused_naming_the_line(text: str, line: str) -> None:
    with pytest.raises(ValueError, match=line):
        parse_env(text)


def test_changes_are_the_variables_set_and_the_names_gone() -> None:
    old = {"A": "1", "B": "2", "C": "3"}
    assert env_changes(old, {"A": "1", "B": "20", "D": "4"}) == ({"B": "20", "D": "4"}, ["C"])
