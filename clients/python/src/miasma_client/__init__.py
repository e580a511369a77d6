"""Python client for Miasma gRPC: typed blocking and async clients, and the `miasma` CLI.

Layering: ``cli`` -> public client (``_client``) -> ``_operations``
(requests per RPC) -> generated stubs (``miasma.v1``). Nothing here imports
server code (``miasma_grpc``); a test checks it.
"""

from miasma_client._client import DEFAULT_TIMEOUT, AsyncMiasmaClient, MiasmaClient
from miasma_client._errors import FieldViolation, InvalidInput, MiasmaError
from miasma_client._operations import Operation, resource_name, route
from miasma_client._ports import PortLike, format_port, parse_port, parse_ports
from miasma_client._settings import DEFAULT_SERVER, Settings, SettingsError, config_path
from miasma_client._status import AppStatus, app_status
from miasma_client._volumes import VolumeLike, format_volume, parse_volume, parse_volumes

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "AppStatus",
    "AsyncMiasmaClient",
    "FieldViolation",
    "InvalidInput",
    "MiasmaClient",
    "MiasmaError",
    "Operation",
    "PortLike",
    "Settings",
    "SettingsError",
    "VolumeLike",
    "app_status",
    "config_path",
    "format_port",
    "format_volume",
    "parse_port",
    "parse_ports",
    "parse_volume",
    "parse_volumes",
    "resource_name",
    "route",
]
