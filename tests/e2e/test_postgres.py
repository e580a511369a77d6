"""The seed page's own example with a real database: PostgreSQL run by Miasma keeps every row.

The image is built from Debian's postgresql-15 (scripts/postgres-image.sh) and declares
``VOLUME /var/lib/postgresql/data``, as the official image does; the app never names a
volume. A real client (psycopg) writes rows through the published port, then every port
command of the seed page, an image change, a restart and a server restart run; after each,
every row is there and the new postgres says it starts from a clean shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from miasma.v1 import apps_pb2
from miasma_client import MiasmaClient

from tests import pg
from tests.docker_cli import containers, docker, logs, the_container
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

CLEAN_START = "database system was shut down at"
CRASH_SIGNS = ("not properly shut down", "automatic recovery", "was interrupted")


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A container-runtime server; slots postgres does not listen on are waited for 2 s."""
    return make_server(published_range="25001-25999", extra_args=["--ready-timeout", "2"])


@pytest.fixture
def client(server: ServerProcess) -> Iterator[MiasmaClient]:
    """A blocking client on the server."""
    with MiasmaClient(server.address, timeout=120) as miasma:
        yield miasma


def postgres_logs(server: ServerProcess) -> str:
    """What the app's running postgres container has logged."""
    return logs(
        server.docker_host, the_container(server.docker_host, server.instance, "postgres").name
    )


def test_postgres_keeps_every_row_through_the_seed_page(
    client: MiasmaClient, server: ServerProcess, postgres_image: str
) -> None:
    """Rows written before each step are all there after it; each stop was clean."""
    client.create_app("postgres", postgres_image)
    app = client.edit_app("postgres", add_target=[5432]).app  # where postgres listens
    with pg.connect(app.bindings[0].published_port) as conn:
        conn.execute("CREATE TABLE rows (n int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO rows SELECT n, 'before' FROM generate_series(1, 1000) AS n")
    rows = 1000
    docker(server.docker_host, "tag", postgres_image, "miasma-test/postgres:15-again")

    # The seed page's commands, on this app (its numbers moved into the test's range).
    steps: list[tuple[str, Callable[[], apps_pb2.App]]] = [
        ("--add-published-ports 5432", lambda: client.edit_app(
            "postgres", add_published=[25432]).app),
        ("--rm-published-ports 5432", lambda: client.edit_app(
            "postgres", remove_published=[25432]).app),
        ("--add-target-ports 80", lambda: client.edit_app("postgres", add_target=[80]).app),
        ("--rm-target-ports 80", lambda: client.edit_app("postgres", remove_target=[80]).app),
        ("--add-published-ports 8081 --add-published-ports 8082", lambda: client.edit_app(
            "postgres", add_published=[25081, 25082]).app),
        ("--add-target-ports 8081 --add-target-ports 8082", lambda: client.edit_app(
            "postgres", add_target=[8081, 8082]).app),
        ("back to one slot", lambda: client.edit_app(
            "postgres", remove_published=[25081, 25082], remove_target=[8081, 8082]).app),
        ("--add-published-ports 8082 --add-published-ports 8081", lambda: client.edit_app(
            "postgres", add_published=[25082, 25081]).app),
        ("image change", lambda: client.update_app(
            "postgres", image="miasma-test/postgres:15-again")),
        ("restart", lambda: client.restart_app("postgres")),
    ]  # fmt: skip
    for what, step in steps:
        app = step()
        port = app.bindings[0].published_port
        assert app.bindings[0].target_port == 5432, what
        assert pg.count(port) == rows, what
        started = postgres_logs(server)
        assert CLEAN_START in started, (what, started[-2000:])
        assert not any(sign in started for sign in CRASH_SIGNS), (what, started[-2000:])
        with pg.connect(port) as conn:
            conn.execute("INSERT INTO rows VALUES (%s, %s)", (rows + 1, what))
        rows += 1

    server.restart()
    app = client.get_app("postgres")
    assert pg.count(app.bindings[0].published_port) == rows

    # The last stop, read from the stopped container: a fast, clean shutdown.
    client.stop_app("postgres")
    [stopped] = containers(server.docker_host, server.instance, "postgres")
    assert not stopped.running
    assert "database system is shut down" in logs(server.docker_host, stopped.name)
    assert [m[0] for m in stopped.mounts] == ["volume"]  # its image's volume, made by Miasma
