"""Docker image references, checked before they reach Docker's API paths.

The grammar is the one Docker's ``distribution/reference`` package uses:
``[registry[:port]/]path[:tag][@digest]`` with lowercase path components.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from miasma_grpc.domain.errors import InvalidArgument

MAX_IMAGE = 512

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"\w[\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")


def validate_image(image: str, field: str = "app.image") -> str:
    """Return ``image`` if it is a valid reference, else raise :class:`InvalidArgument`."""
    if not image.strip():
        raise InvalidArgument.field(field, "an image is required", reason="IMAGE_REQUIRED")
    if len(image) > MAX_IMAGE or not REFERENCE.fullmatch(image):
        raise InvalidArgument.field(
            field,
            f"{image[:80]!r} is not an image reference: use [REGISTRY/]NAME[:TAG][@DIGEST] "
            "with a lowercase name, e.g. nginx:1.27 or registry.example.com/team/app",
            reason="INVALID_IMAGE",
        )
    return image


@dataclass(frozen=True)
class PulledImage:
    """An image as a pull left it: its ID, and its digest in the registry (if any)."""

    id: str
    repo_digest: str = ""  # "registry/repo@sha256:…"
