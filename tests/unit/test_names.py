"""App names are DNS labels; resource names are ``apps/{app}``."""

from __future__ import annotations

import pytest

from miasma_grpc.domain.errors import InvalidArgument
from miasma_grpc.domain.names import parse_resource_name, resource_name, validate_app_name

VALID = ["a", "web", "my-app", "a1", "app-2-b", "a" * 63, "x" + "-" * 61 + "y"]
INVALID = [
    "",
    "A",
    "Web",
    "1app",
    "-app",
    "app-",
    "my_app",
    "my.app",
    "my app",
    "a" * 64,
    "app\n",
    "\napp",
    "apps/web",
    "wéb",
]


@pytest.mark.parametrize("name", VALID)
def test_dns_labels_are_valid_app_names(name: str) -> None:
    """A DNS label (lowercase, digits, inner hyphens, 1-63 chars) is accepted as is."""
    assert validate_app_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_non_dns_labels_are_refused_naming_the_field(name: str) -> None:
    """A name that is not a DNS label is an InvalidArgument naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        validate_app_name(name, field="app_id")
    assert [v.field for v in caught.value.violations] == ["app_id"]
    assert caught.value.reason == "INVALID_APP_NAME"


@pytest.mark.parametrize("name", VALID)
def test_resource_name_round_trips(name: str) -> None:
    """apps/{app} parses back to the app name it was built from."""
    assert resource_name(name) == f"apps/{name}"
    assert parse_resource_name(resource_name(name)) == name


@pytest.mark.parametrize("resource", ["web", "app/web", "Apps/web", "/apps/web", "", "apps"])
def test_resource_outside_apps_collection_is_refused(resource: str) -> None:
    """A resource name not of the form apps/{app} is refused naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        parse_resource_name(resource, field="name")
    assert [v.field for v in caught.value.violations] == ["name"]
    assert caught.value.reason == "INVALID_RESOURCE_NAME"


@pytest.mark.parametrize("resource", ["apps/", "apps/Web", "apps/web/x", "apps/-", "apps/a_b"])
def test_resource_with_bad_app_segment_is_refused(resource: str) -> None:
    """apps/{app} with an {app} that is not a DNS label is refused naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        parse_resource_name(resource, field="parent")
    assert [v.field for v in caught.value.violations] == ["parent"]
    assert caught.value.reason == "INVALID_APP_NAME"
