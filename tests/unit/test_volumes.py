"""Volume rules of docs/volumes.md, one test per rule, against the pure domain functions."""

from __future__ import annotations

import pytest

from miasma_grpc.domain.errors import FailedPrecondition, InvalidArgument
from miasma_grpc.domain.models import App, Binding, Volume
from miasma_grpc.domain.volumes import (
    MAX_NAME,
    VolumeEdit,
    app_mounts,
    check_holders,
    image_volume_name,
    plan_volumes,
    validate_volume,
    validate_volumes,
    writable,
)

PG = "/var/lib/postgresql/data"


def app(name: str = "db", *volumes: Volume, uid: str = "abc123") -> App:
    """An app with one slot and ``volumes``."""
    return App(name, "postgres:15", (Binding(3001, 3000),), volumes=volumes, uid=uid)


def violation(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    """The one field an InvalidArgument names."""
    assert len(error.value.violations) == 1
    return error.value.violations[0].field


def test_named_volume_and_target_are_kept_as_given() -> None:
    """A valid named volume passes unchanged."""
    volume = Volume("pgdata", PG)
    assert validate_volume(volume, "v", allow_bind=False) == volume


@pytest.mark.parametrize(
    ("target", "normal"),
    [("/data/", "/data"), ("//data//x", "/data/x"), ("/data/./x", "/data/x")],
)
def test_targets_are_normalised(target: str, normal: str) -> None:
    """Trailing slashes, doubled slashes and '.' components are dropped."""
    assert validate_volume(Volume("v1", target), "v", allow_bind=False).target == normal


@pytest.mark.parametrize(
    "target",
    ["data", "", "/data/../etc", "/..", "/", "/proc", "/proc/1", "/sys/x", "/dev", "/dev/shm",
     "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/a\nb", "/" + "x" * 2000],
)  # fmt: skip
def test_bad_targets_are_refused_with_the_field(target: str) -> None:
    """Relative, '..', the root and what Docker manages for every container are refused."""
    with pytest.raises(InvalidArgument) as error:
        validate_volume(Volume("v1", target), "add_volumes[0]", allow_bind=False)
    assert violation(error) == "add_volumes[0].target"


def test_targets_next_to_protected_paths_are_fine() -> None:
    """/devices and /etc/hosts.d are not /dev or /etc/hosts."""
    for target in ("/devices", "/etc/hosts.d", "/system"):
        assert validate_volume(Volume("v1", target), "v", allow_bind=False).target == target


@pytest.mark.parametrize("source", ["a", "-x", ".x", "has space", "a/b", "x" * (MAX_NAME + 1), ""])
def test_bad_volume_names_are_refused_with_the_field(source: str) -> None:
    """Docker's volume name rule: 2+ of letters, digits, '_', '.', '-', starting alphanumeric."""
    with pytest.raises(InvalidArgument) as error:
        validate_volume(Volume(source, "/data"), "app.volumes[2]", allow_bind=False)
    assert violation(error) == "app.volumes[2].source"


def test_bind_mounts_need_the_server_flag() -> None:
    """A host path is FAILED_PRECONDITION unless the server allows bind mounts."""
    with pytest.raises(FailedPrecondition) as error:
        validate_volume(Volume("/srv/data", "/data"), "v", allow_bind=False)
    assert error.value.reason == "BIND_MOUNTS_DISABLED"
    allowed = validate_volume(Volume("/srv//data/", "/data"), "v", allow_bind=True)
    assert allowed == Volume("/srv/data", "/data")
    assert allowed.bind


def test_bind_sources_may_not_climb() -> None:
    """'..' in a host path is refused even when bind mounts are allowed."""
    with pytest.raises(InvalidArgument) as error:
        validate_volume(Volume("/srv/../etc", "/data"), "v", allow_bind=True)
    assert violation(error) == "v.source"


def test_duplicate_and_nested_targets_are_refused() -> None:
    """No two mounts share a target, and none is inside another."""
    with pytest.raises(InvalidArgument, match="two volumes") as error:
        validate_volumes([Volume("a1", "/data"), Volume("b1", "/data/")], "app.volumes",
                         allow_bind=False)  # fmt: skip
    assert error.value.reason == "DUPLICATE_TARGET"
    with pytest.raises(InvalidArgument, match="inside") as error:
        validate_volumes([Volume("a1", "/data/sub"), Volume("b1", "/data")], "app.volumes",
                         allow_bind=False)  # fmt: skip
    assert error.value.reason == "NESTED_TARGET"
    fine = validate_volumes([Volume("a1", "/data"), Volume("b1", "/data2")], "app.volumes",
                            allow_bind=False)  # fmt: skip
    assert len(fine) == 2


def test_known_bind_mounts_survive_a_server_that_no_longer_allows_them() -> None:
    """Re-validating an app's existing volumes does not refuse a bind mount it already had."""
    existing = Volume("/srv/data", "/data")
    assert validate_volumes([existing], "app.volumes", allow_bind=False, known=[existing]) == (
        existing,
    )


def test_plan_removes_first_then_adds_in_order() -> None:
    """--rm-volume then --add-volume on one target replaces the mount in one edit."""
    current = (Volume("old1", "/data"), Volume("logs", "/logs"))
    edit = VolumeEdit(add=(Volume("new1", "/data"), Volume("cache", "/cache", read_only=True)),
                      remove=(Volume("", "/data"),))  # fmt: skip
    assert plan_volumes(current, edit, allow_bind=False) == (
        Volume("logs", "/logs"),
        Volume("new1", "/data"),
        Volume("cache", "/cache", read_only=True),
    )


def test_adding_a_mount_the_app_has_is_a_no_op() -> None:
    """The same source, target and mode again changes nothing."""
    current = (Volume("pgdata", PG),)
    assert plan_volumes(current, VolumeEdit(add=(Volume("pgdata", PG + "/"),)),
                        allow_bind=False) == current  # fmt: skip


def test_adding_over_a_mounted_target_must_remove_it_first() -> None:
    """Another source at a mounted target is refused: remove it in the same edit."""
    with pytest.raises(InvalidArgument, match="remove it") as error:
        plan_volumes((Volume("pgdata", PG),), VolumeEdit(add=(Volume("other", PG),)),
                     allow_bind=False)  # fmt: skip
    assert violation(error) == "add_volumes[0]"


def test_removing_what_is_not_mounted_names_what_is() -> None:
    """A removal matches by target (and source, if given); a miss lists the app's volumes."""
    current = (Volume("pgdata", PG),)
    with pytest.raises(InvalidArgument, match="pgdata:/var/lib/postgresql/data") as error:
        plan_volumes(current, VolumeEdit(remove=(Volume("", "/data"),)), allow_bind=False)
    assert violation(error) == "remove_volumes[0]"
    with pytest.raises(InvalidArgument):
        plan_volumes(current, VolumeEdit(remove=(Volume("other", PG),)), allow_bind=False)
    assert plan_volumes(current, VolumeEdit(remove=(Volume("pgdata", PG),)), allow_bind=False) == ()


def test_a_writable_volume_has_one_app() -> None:
    """Another app may not mount a volume one app mounts writable, read-only or not."""
    holder = app("db", Volume("pgdata", PG))
    for read_only in (False, True):
        other = app("web", Volume("pgdata", "/data", read_only=read_only), uid="ffffff")
        with pytest.raises(FailedPrecondition) as error:
            check_holders(other, {"db": holder}, "miasma", field="app.volumes", new=other.volumes)
        assert error.value.reason == "VOLUME_IN_USE"
        assert error.value.resource == "apps/db"
        assert "db" in error.value.message


def test_read_only_mounts_share_and_a_writer_cannot_join() -> None:
    """Two read-only mounts share; a writable one next to a read-only one is refused."""
    reader = app("a", Volume("assets", "/srv", read_only=True))
    shared = app("b", Volume("assets", "/www", read_only=True))
    check_holders(shared, {"a": reader}, "miasma", field="v", new=shared.volumes)
    writer = app("b", Volume("assets", "/www"))
    with pytest.raises(FailedPrecondition) as error:
        check_holders(writer, {"a": reader}, "miasma", field="add_volumes", new=writer.volumes)
    assert error.value.violations[0].field == "add_volumes[0].source"


def test_an_apps_own_entry_and_bind_mounts_do_not_conflict() -> None:
    """An app is not its own holder; host paths are not held."""
    db = app("db", Volume("pgdata", PG), Volume("/srv", "/srv"))
    others = {"db": db, "x": app("x", Volume("/srv", "/srv"))}
    check_holders(db, others, "miasma", field="v", new=db.volumes)


def test_another_apps_image_volume_is_held_by_it() -> None:
    """Mounting the volume Miasma made for another live app's image is refused."""
    db = app("db", uid="abc123")
    name = image_volume_name("miasma", db, PG)
    web = app("web", Volume(name, "/data"), uid="999999")
    with pytest.raises(FailedPrecondition, match="its image"):
        check_holders(web, {"db": db}, "miasma", field="v", new=web.volumes)


def test_image_volume_names_are_readable_and_stable() -> None:
    """instance-app-uid-path, the same for the same app and path."""
    db = app("db", uid="abc123")
    assert image_volume_name("miasma", db, PG) == "miasma-db-abc123-var-lib-postgresql-data"
    assert image_volume_name("miasma", db, PG) == image_volume_name("miasma", db, PG)


def test_image_volume_names_tell_apart_paths_that_read_alike() -> None:
    """/a-b and /a/b, odd characters and very long paths get distinct, valid names."""
    db = app("db")
    names = {image_volume_name("m", db, p) for p in ("/a-b", "/a/b", "/a b", "/a_b", "/x" * 300)}
    assert len(names) == 5
    assert all(len(n) <= MAX_NAME and n.startswith("m-db-abc123-") for n in names)
    assert all(" " not in n for n in names)


def test_mounts_add_an_own_volume_for_each_declared_path_not_mounted() -> None:
    """Image VOLUME paths get volumes of the app's own, unless the app mounts that target."""
    db = app("db", Volume("pgdata", PG))
    mounts = app_mounts(db, [PG, "/logs", "relative", "/logs/"], "miasma")
    assert [m.volume for m in mounts] == [
        Volume("pgdata", PG),
        Volume("miasma-db-abc123-logs", "/logs"),
    ]
    assert [m.image_path for m in mounts] == ["", "/logs"]
    assert writable(mounts)
    assert not writable(app_mounts(app("r", Volume("v1", "/x", read_only=True)), [], "miasma"))
