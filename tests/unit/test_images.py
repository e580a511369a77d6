"""Image references are checked against Docker's grammar before Docker sees them."""

from __future__ import annotations

import pytest

from miasma_grpc.domain.errors import InvalidArgument
from miasma_grpc.domain.images import validate_image


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "miasma-test/busybox:latest",
        "registry.example.com:5000/team/app:1.0",
        "localhost/x",
        "busybox@sha256:" + "a" * 64,
    ],
)
def test_references_docker_accepts_pass(image: str) -> None:
    """Names, registries with ports, tags and digests are accepted unchanged."""
    assert validate_image(image) == image


@pytest.mark.parametrize("image", ["", " ", "a//b", "x/", "/x", "http://x", "a/..", "Nginx", "a b"])
def test_malformed_references_are_refused_naming_the_field(image: str) -> None:
    """Empty path segments, URLs, upper case and spaces never reach Docker's API paths."""
    with pytest.raises(InvalidArgument) as refused:
        validate_image(image)
    assert refused.value.violations[0].field == "app.image"
