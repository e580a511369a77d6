"""Fuzzing a real server: random and malformed requests get proper errors, a refused request
changes nothing, and the server keeps serving.

Requests are generated through the stubs (random unicode, empty and huge strings, NUL
characters, ports 0, 65536 and 2**32-1, lists of 10,000 ports, unknown enum values, garbage
page tokens, unknown mask paths, negative revisions...) and as raw bytes (truncated or
garbage protobuf). Apps are created stopped except for a few running on the test image, so
Docker work stays small. Every valid published port asked for lies in 21000-21999.

Two server bugs this fuzzing found (an image with an empty path segment ended UNKNOWN and
stayed stored; refusals of huge requests lost their ErrorInfo past gRPC's metadata limit)
are fixed and pinned by the regression tests at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from miasma.v1 import apps_pb2, apps_pb2_grpc

from scripts.engine import TEST_IMAGE
from tests.conftest import HTTPD_COMMAND
from tests.server import ServerProcess

pytestmark = pytest.mark.docker

Code = grpc.StatusCode
ALLOWED = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
        Code.FAILED_PRECONDITION,
        Code.RESOURCE_EXHAUSTED,
        Code.OUT_OF_RANGE,
        Code.ABORTED,
    }
)
RANGE = (21001, 21999)
STOPPED = apps_pb2.DESIRED_STATE_STOPPED
SEEDS = ("seed-a", "seed-b")
# Names requests are made of: the seeds, and apps the fuzzing creates and deletes.
POOL = (*SEEDS, "fuzz-a", "fuzz-b", "fuzz-c")
CALL_TIMEOUT = 60.0
# Containers that exit on SIGTERM at once (a plain `sleep` as PID 1 makes every stop wait 5 s).
IDLE_COMMAND = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $!; done"]
METHODS = (
    "CreateApp",
    "GetApp",
    "ListApps",
    "UpdateApp",
    "DeleteApp",
    "StartApp",
    "StopApp",
    "RestartApp",
    "EditPorts",
    "GetServerInfo",
    "WatchPortEvents",
)
REQUEST_TYPES: dict[str, type[Message]] = {
    method: getattr(apps_pb2, f"{method}Request") for method in METHODS
}
READ_ONLY = frozenset({"GetApp", "ListApps", "GetServerInfo", "WatchPortEvents"})


@dataclass(frozen=True)
class Call:
    """One AppService request to send."""

    method: str
    request: Message

    def __repr__(self) -> str:
        text = str(self.request)
        return f"Call({self.method}, {text[:2000]!r}{'...' if len(text) > 2000 else ''})"


# -- strategies ---------------------------------------------------------------------------
#
# Each field is well-formed most of the time and odd some of the time, so that requests get
# past validation often enough to reach the deeper code (ports, the store, Docker) too.


def flip(payload: bytes, position: int, mask: int) -> bytes:
    """``payload`` with one byte XOR-ed by ``mask``."""
    if not payload:
        return bytes([mask])
    position %= len(payload)
    return payload[:position] + bytes([payload[position] ^ mask]) + payload[position + 1 :]


def sometimes(
    usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 7
) -> st.SearchStrategy[Any]:
    """``odd`` about once in ``one_in`` draws, else ``usual`` (to which examples shrink)."""
    return st.sampled_from([False] * (one_in - 1) + [True]).flatmap(
        lambda is_odd: odd if is_odd else usual
    )


# Any unicode (NUL included; protobuf refuses lone surrogates, which text() never makes).
short_text = sometimes(
    st.text(max_size=40),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(1_000, 50_000)),
    one_in=10,
)
pool_names = st.sampled_from(POOL)
labels = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
odd_names = st.sampled_from(
    (
        "",
        "apps/",
        "apps/-",
        "apps/Seed-A",
        "seed-a",
        "apps/seed-a/",
        "apps//seed-a",
        "apps/seed-a\x00",
        "apps/ü",
        "apps/" + "a" * 63,
        "apps/" + "a" * 64,
        "apps/-a",
        "apps/a-",
        "APPS/seed-a",
    )
)
resource_names = sometimes(
    pool_names.map(lambda n: f"apps/{n}"),
    st.one_of(
        odd_names,
        labels.map(lambda n: f"apps/{n}"),
        short_text,
        short_text.map(lambda t: f"apps/{t}"),
    ),
    one_in=3,
)
app_ids = sometimes(pool_names, st.one_of(odd_names, labels, short_text), one_in=3)
# Usual images, or odd ones: blank, spaced, invalid references, unicode, empty path segments,
# long ones and ones over the 512-character limit.
images = sometimes(
    st.sampled_from((TEST_IMAGE, "miasma-test/missing:1", "img")),
    st.one_of(
        st.sampled_from(("", " ", "UPPER", "a/..", "a b", "x" * 512)),
        st.sampled_from(("x/", "/x", "a//b", "http://x")),
        st.text(max_size=60),
        st.text(min_size=101, max_size=512),
        st.builds(lambda c, n: c * n, st.characters(), st.integers(513, 20_000)),
    ),
)
commands = sometimes(
    st.sampled_from((HTTPD_COMMAND, IDLE_COMMAND)),
    st.one_of(
        st.lists(st.text(max_size=30), max_size=5),
        st.sampled_from((["a\x00b"], HTTPD_COMMAND)),
        st.integers(1_000, 20_000).map(lambda n: ["x"] * n),
    ),
)
env_keys = st.one_of(
    st.sampled_from(("PORT", "PORT_1", "PORT_99", "PORT_", "", "A=B", "A\x00", "GREETING")),
    st.text(max_size=30),
)
envs = sometimes(
    st.dictionaries(st.sampled_from(("A", "B_C", "GREETING")), st.text(max_size=20), max_size=3),
    st.one_of(
        st.dictionaries(env_keys, st.text(max_size=30) | st.just("\x00"), max_size=4),
        st.integers(257, 5_000).map(lambda n: {f"K{i}": "v" for i in range(n)}),
        st.integers(1, 20).map(lambda n: {"BIG": "v" * (n * 10_000)}),
    ),
)
constraints = sometimes(
    st.just([]),
    st.lists(
        st.sampled_from(("node.labels.zone==a", "node.hostname!=db1", "==", "a==b==c"))
        | short_text,
        max_size=3,
    ),
)
# Unknown to this server: proto3 enums are open, so any int32 goes on the wire.
unknown_enums = st.sampled_from((3, 99, -1, 2**31 - 1, -(2**31)))
protocols = sometimes(st.sampled_from((0, 1, 2)), unknown_enums, one_in=30)
modes = sometimes(st.just(0), st.sampled_from((1, 2)) | unknown_enums, one_in=30)
desired_states = sometimes(st.just(STOPPED), unknown_enums)
# Valid published ports stay in this test's range; target ports are inside containers.
published_numbers = sometimes(st.integers(*RANGE), st.sampled_from((0, 65536, 70000, 2**32 - 1)))
target_numbers = sometimes(st.integers(1, 65535), st.sampled_from((0, 1, 65535, 65536, 2**32 - 1)))


def ports(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[apps_pb2.Port]:
    """Port messages, with odd numbers, protocols and publish modes now and then."""
    return st.builds(
        lambda number, protocol, mode: apps_pb2.Port(
            number=number,
            protocol=apps_pb2.Protocol.ValueType(protocol),
            mode=apps_pb2.PublishMode.ValueType(mode),
        ),
        numbers,
        protocols,
        modes,
    )


def port_lists(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[list[apps_pb2.Port]]:
    """A few ports, or (rarely) a list longer than the 64 allowed, up to 10,000."""
    huge = st.builds(lambda port, n: [port] * n, ports(numbers), st.integers(65, 10_000))
    return sometimes(st.lists(ports(numbers), max_size=3), huge, one_in=15)


def app_messages(name: st.SearchStrategy[str]) -> st.SearchStrategy[apps_pb2.App]:
    """App messages with random fields (output-only fields too, which the server ignores)."""
    return st.builds(
        lambda n, image, command, env, state, cons, etag, revision: apps_pb2.App(
            name=n,
            image=image,
            command=command,
            env=env,
            desired_state=apps_pb2.DesiredState.ValueType(state),
            constraints=cons,
            etag=etag,
            revision=revision,
            urls=["http://nowhere"],
        ),
        name,
        images,
        commands,
        envs,
        desired_states,
        constraints,
        sometimes(st.just(""), st.sampled_from(('W/"0"', 'W/"1"', "garbage")) | short_text),
        st.integers(-(2**63), 2**63 - 1),
    )


creates = st.builds(
    lambda app, app_id, published, target, validate_only: apps_pb2.CreateAppRequest(
        app=app,
        app_id=app_id,
        published_ports=published,
        target_ports=target,
        validate_only=validate_only,
    ),
    app_messages(sometimes(st.just(""), resource_names)),
    app_ids,
    port_lists(published_numbers),
    port_lists(target_numbers),
    sometimes(st.just(False), st.just(True), one_in=4),
)
# A few apps really run (on the test image, or a missing one): kept rare, Docker is slow.
running_creates = st.builds(
    lambda app_id, image, command, published: apps_pb2.CreateAppRequest(
        app_id=app_id,
        app=apps_pb2.App(image=image, command=command),
        published_ports=[apps_pb2.Port(number=n) for n in published],
    ),
    app_ids,
    st.sampled_from((TEST_IMAGE, TEST_IMAGE, "miasma-test/missing:1", "x/")),
    st.sampled_from((HTTPD_COMMAND, IDLE_COMMAND, ["no-such-binary"])),
    st.lists(st.integers(*RANGE), max_size=2, unique=True),
)
mask_paths = sometimes(
    st.sampled_from(("image", "command", "env", "constraints")),
    st.sampled_from(("name", "bindings", "desired_state", "", "*", "image.x")) | short_text,
)
updates = st.builds(
    lambda app, paths: apps_pb2.UpdateAppRequest(
        app=app, update_mask=field_mask_pb2.FieldMask(paths=paths)
    ),
    app_messages(resource_names),
    st.lists(mask_paths, max_size=3),
)
edits = st.builds(
    lambda name, add_p, rm_p, add_t, rm_t, validate_only, etag: apps_pb2.EditPortsRequest(
        name=name,
        add_published_ports=add_p,
        remove_published_ports=rm_p,
        add_target_ports=add_t,
        remove_target_ports=rm_t,
        validate_only=validate_only,
        etag=etag,
    ),
    resource_names,
    port_lists(published_numbers),
    port_lists(published_numbers),
    port_lists(target_numbers),
    port_lists(target_numbers),
    sometimes(st.just(False), st.just(True), one_in=4),
    sometimes(st.just(""), st.sampled_from(('W/"1"', "garbage")) | short_text),
)
page_tokens = sometimes(
    st.sampled_from(("", "YWZ0ZXI6c2VlZC1h")),  # "" and the token for "after:seed-a"
    st.one_of(
        st.sampled_from(("YWZ0ZXI6", "Zm9vOmJhcg==", "!!!", "=", "YQ", "\x00")),
        st.text(max_size=200),
        st.binary(max_size=100).map(lambda b: b.hex()),
    ),
    one_in=2,
)
watches = st.builds(
    lambda name, revision: apps_pb2.WatchPortEventsRequest(name=name, start_revision=revision),
    sometimes(st.sampled_from(("apps/-", "apps/seed-a")), resource_names, one_in=2),
    st.sampled_from((0, 0, -1, 1, 2**63 - 1, -(2**63))) | st.integers(-(2**63), 2**63 - 1),
)


def by_name(cls: type[Message]) -> st.SearchStrategy[Message]:
    """A request that has a resource name (and, for DeleteApp, an etag)."""
    if cls is apps_pb2.DeleteAppRequest:
        return st.builds(
            lambda n, etag: apps_pb2.DeleteAppRequest(name=n, etag=etag),
            resource_names,
            sometimes(st.just(""), st.just('W/"0"') | short_text),
        )
    return resource_names.map(lambda n: cls(name=n))


requests: dict[str, st.SearchStrategy[Message]] = {
    "CreateApp": sometimes(creates, running_creates, one_in=6),
    "GetApp": by_name(apps_pb2.GetAppRequest),
    "ListApps": st.builds(
        lambda size, token: apps_pb2.ListAppsRequest(page_size=size, page_token=token),
        st.sampled_from((0, 1, 2, -1, 1000, 1001, 2**31 - 1, -(2**31))),
        page_tokens,
    ),
    "UpdateApp": updates,
    "DeleteApp": by_name(apps_pb2.DeleteAppRequest),
    "StartApp": by_name(apps_pb2.StartAppRequest),
    "StopApp": by_name(apps_pb2.StopAppRequest),
    "RestartApp": by_name(apps_pb2.RestartAppRequest),
    "EditPorts": edits,
    "GetServerInfo": st.just(apps_pb2.GetServerInfoRequest()),
    "WatchPortEvents": watches,
}
# Every method is drawn; creates and edits more often, as most of the logic is there.
calls = st.sampled_from((*METHODS, "CreateApp", "EditPorts", "EditPorts")).flatmap(
    lambda method: requests[method].map(lambda request: Call(method, request))
)


# Real requests as bytes, kept short so that the raw-bytes fuzzing stays fast.
serialized = st.builds(lambda call: call.request.SerializeToString()[:300], calls)


# -- talking to the server ----------------------------------------------------------------


@dataclass
class Answer:
    """How a call ended: its code, and the ErrorInfo of a refusal."""

    code: grpc.StatusCode
    info: error_details_pb2.ErrorInfo | None = None
    details: str = ""


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo in the call's grpc-status-details-bin trailer, if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def refusal(error: grpc.RpcError) -> Answer:
    """The answer a failed call carries."""
    code = error.code()
    assert isinstance(code, grpc.StatusCode)
    return Answer(code, error_info(error), str(error.details()))


def send(channel: grpc.Channel, method: str, payload: bytes) -> Answer:
    """Send serialized ``payload`` to AppService/``method``; read a watch's first message."""
    path = f"/miasma.v1.AppService/{method}"
    try:
        if method == "WatchPortEvents":
            # With a 0.2 s heartbeat a live watch always says something within the timeout.
            stream = channel.unary_stream(path, None, None)(payload, timeout=10)
            try:
                next(iter(stream))
            except StopIteration:
                pytest.fail("a watch ended with OK and no message (it never ends by itself)")
            finally:
                stream.cancel()  # type: ignore[no-untyped-call]
        else:
            channel.unary_unary(path, None, None)(payload, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return refusal(exc)
    return Answer(Code.OK)


def check_proper(answer: Answer, what: object) -> None:
    """OK, or an allowed code carrying ErrorInfo with domain miasma."""
    if answer.code is Code.OK:
        return
    assert answer.code in ALLOWED, f"{what} -> {answer.code.name}: {answer.details}"
    assert answer.info is not None, f"{what} -> {answer.code.name} without ErrorInfo"
    assert answer.info.domain == "miasma", answer.info
    assert answer.info.reason, answer.info


def apps(stub: apps_pb2_grpc.AppServiceStub) -> dict[str, apps_pb2.App]:
    """Every app, by name (one page: the fuzzing creates far fewer than 1000)."""
    reply = stub.ListApps(apps_pb2.ListAppsRequest(page_size=1000), timeout=CALL_TIMEOUT)
    assert not reply.next_page_token
    return {app.name: app for app in reply.apps}


def stored(app: apps_pb2.App, *, bookkeeping: bool = True) -> bytes:
    """The app's desired state as bytes (without observed state, which Docker changes)."""
    copy = apps_pb2.App()
    copy.CopyFrom(app)
    copy.ClearField("observed")
    if not bookkeeping:
        copy.ClearField("etag")
        copy.ClearField("revision")
        copy.ClearField("update_time")
    return copy.SerializeToString(deterministic=True)


def desired(current: dict[str, apps_pb2.App]) -> dict[str, bytes]:
    """Every app's desired state, comparable."""
    return {name: stored(app) for name, app in current.items()}


def target_app(call: Call) -> str:
    """The resource name the request is about ("" for none)."""
    request: Any = call.request
    if call.method == "CreateApp":
        return f"apps/{request.app_id}"
    if call.method == "UpdateApp":
        return str(request.app.name)
    return str(getattr(request, "name", ""))


def check_ledger(current: dict[str, apps_pb2.App]) -> None:
    """No published port is held twice per protocol; every slot is complete."""
    holders: dict[tuple[int, int], str] = {}
    for name, app in current.items():
        assert app.bindings, f"{name} has no binding"
        for binding in app.bindings:
            assert 1 <= binding.published_port <= 65535, (name, binding)
            assert 1 <= binding.target_port <= 65535, (name, binding)
            assert binding.published_explicit or RANGE[0] <= binding.published_port <= RANGE[1]
            key = (binding.protocol, binding.published_port)
            assert key not in holders, f"{key} held by {holders.get(key)} and {name}"
            holders[key] = name
        targets = [(b.protocol, b.target_port) for b in app.bindings]
        assert len(set(targets)) == len(targets), f"{name} has a target port twice"


def check_effect(
    call: Call, answer: Answer, before: dict[str, apps_pb2.App], after: dict[str, apps_pb2.App]
) -> None:
    """Refused, read-only and validate_only calls change nothing; others change one app."""
    request: Any = call.request
    target = target_app(call)
    others_before = {n: stored(a) for n, a in before.items() if n != target}
    others_after = {n: stored(a) for n, a in after.items() if n != target}
    assert others_after == others_before, f"{call} changed other apps"
    unchanged = (
        answer.code is not Code.OK
        or call.method in READ_ONLY
        or getattr(request, "validate_only", False)
    )
    if not unchanged:
        if call.method == "CreateApp":
            assert target not in before
            assert target in after
        if call.method == "DeleteApp":
            assert target in before
            assert target not in after
        return
    assert (target in after) == (target in before), f"{call} -> {answer.code.name}"
    if target not in before:
        return
    if answer.code is Code.FAILED_PRECONDITION:
        # Maybe Docker refused (image, port): the change was reverted, with a new revision.
        old, new = (
            stored(before[target], bookkeeping=False),
            stored(after[target], bookkeeping=False),
        )
    else:
        old, new = stored(before[target]), stored(after[target])
    assert new == old, f"{call} -> {answer.code.name} {answer.details} changed {target}"


def check_still_serving(server: ServerProcess, stub: apps_pb2_grpc.AppServiceStub) -> None:
    """Health is SERVING, the process is alive, ListApps and GetApp work, the ledger holds."""
    assert server.process is not None
    assert server.process.poll() is None, server.log()
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    current = apps(stub)
    check_ledger(current)
    for name, app in current.items():
        got = stub.GetApp(apps_pb2.GetAppRequest(name=name), timeout=CALL_TIMEOUT).app
        assert list(got.bindings) == list(app.bindings)
    assert stub.GetServerInfo(apps_pb2.GetServerInfoRequest(), timeout=10).docker_reachable


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], test_image: str) -> ServerProcess:
    """A server publishing in 21001-21999 whose idle watches send progress every 0.2 s."""
    return make_server(
        published_range=f"{RANGE[0]}-{RANGE[1]}", extra_args=["--watch-heartbeat", "0.2"]
    )


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    """A channel to the server."""
    with server.channel() as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.Channel) -> apps_pb2_grpc.AppServiceStub:
    """An AppService stub with two stopped seed apps to aim requests at."""
    app_stub = apps_pb2_grpc.AppServiceStub(channel)
    app_stub.CreateApp(
        apps_pb2.CreateAppRequest(
            app_id=SEEDS[0],
            app=apps_pb2.App(image=TEST_IMAGE, command=HTTPD_COMMAND, desired_state=STOPPED),
        )
    )
    app_stub.CreateApp(
        apps_pb2.CreateAppRequest(
            app_id=SEEDS[1],
            app=apps_pb2.App(image="miasma-test/missing:1", desired_state=STOPPED),
            published_ports=[
                apps_pb2.Port(number=21500),
                apps_pb2.Port(number=21500, protocol=apps_pb2.PROTOCOL_UDP),
            ],
            target_ports=[apps_pb2.Port(number=80)],
        )
    )
    return app_stub


FUZZ_SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


# -- the tests --------------------------------------------------------------------------------


def test_generated_requests_get_proper_answers_and_refusals_change_nothing(
    server: ServerProcess, channel: grpc.Channel, stub: apps_pb2_grpc.AppServiceStub
) -> None:
    """Random requests end OK or with an allowed code and ErrorInfo; a refused one changes
    nothing, no port is ever held twice, and the server keeps serving."""
    seen: set[tuple[str, str]] = set()

    @FUZZ_SETTINGS
    @given(call=calls)
    def one_request(call: Call) -> None:
        before = apps(stub)
        answer = send(channel, call.method, call.request.SerializeToString())
        check_proper(answer, call)
        after = apps(stub)
        check_effect(call, answer, before, after)
        check_ledger(after)
        seen.add((call.method, answer.code.name))

    one_request()
    check_still_serving(server, stub)
    # The fuzzing reached both sides of the API, not only its validation.
    assert {code for _, code in seen} >= {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}
    assert ("CreateApp", "OK") in seen
    assert ("EditPorts", "OK") in seen


def test_raw_bytes_get_an_error_or_an_answer_and_the_server_keeps_serving(
    server: ServerProcess, channel: grpc.Channel, stub: apps_pb2_grpc.AppServiceStub
) -> None:
    """Garbage and truncated protobuf sent to every method get a gRPC error (or, if they
    happen to parse, a proper answer), and the server keeps serving."""
    undecodable = 0

    @FUZZ_SETTINGS
    @given(
        method=st.sampled_from(METHODS),
        payload=st.one_of(
            st.binary(max_size=300),
            # Real requests, truncated or with one byte changed.
            serialized.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
            st.builds(flip, serialized, st.integers(0, 300), st.integers(1, 255)),
            # A length prefix far beyond the end of the message.
            st.binary(min_size=1, max_size=50).map(lambda b: b"\x0a\xff\xff\xff\xff\x0f" + b),
        ),
    )
    def one_payload(method: str, payload: bytes) -> None:
        nonlocal undecodable
        request = REQUEST_TYPES[method]()
        try:
            request.ParseFromString(payload)
        except DecodeError:
            parsed = False
        else:
            parsed = True
            call = Call(method, request)
        before = apps(stub)
        answer = send(channel, method, payload)
        if parsed:
            check_proper(answer, call)
            after = apps(stub)
            check_effect(call, answer, before, after)
            check_ledger(after)
        else:
            # Bytes that do not parse: INVALID_ARGUMENT naming the message the method takes
            # (api/parsing.py), nothing of the parser's insides (grpc alone said UNKNOWN
            # with Python's DecodeError text).
            assert answer.code is Code.INVALID_ARGUMENT, (method, payload, answer)
            expected = f"miasma.v1.{method}Request"
            assert answer.details == f"the request is not a valid {expected} message", answer
            assert answer.info is not None
            assert answer.info.reason == "MALFORMED_REQUEST"
            assert desired(apps(stub)) == desired(before)
            undecodable += 1

    one_payload()
    check_still_serving(server, stub)
    assert undecodable > 0, "no payload failed to parse: the fuzzing sent only valid messages"


def test_request_over_the_message_size_limit_is_resource_exhausted(
    server: ServerProcess, stub: apps_pb2_grpc.AppServiceStub
) -> None:
    """A request over --max-message-size (1 MiB) is RESOURCE_EXHAUSTED and changes nothing.

    gRPC itself refuses it before any Miasma code runs, so it carries no ErrorInfo.
    """
    before = apps(stub)
    huge = apps_pb2.CreateAppRequest(
        app_id="huge", app=apps_pb2.App(image="img", env={"BIG": "x" * (2 << 20)})
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateApp(huge, timeout=CALL_TIMEOUT)
    assert caught.value.code() == Code.RESOURCE_EXHAUSTED
    assert desired(apps(stub)) == desired(before)
    check_still_serving(server, stub)


def test_a_burst_of_malformed_requests_leaves_the_server_responsive(
    server: ServerProcess, stub: apps_pb2_grpc.AppServiceStub
) -> None:
    """Hundreds of bad requests in a row each get INVALID_ARGUMENT and leave it serving."""
    bad = apps_pb2.EditPortsRequest(
        name="apps/seed-a", add_published_ports=[apps_pb2.Port(number=0)] * 10_000
    )
    for _ in range(200):
        with pytest.raises(grpc.RpcError) as caught:
            stub.EditPorts(bad, timeout=CALL_TIMEOUT)
        assert caught.value.code() == Code.INVALID_ARGUMENT
    check_still_serving(server, stub)


# -- bugs this fuzzing found, fixed: regression tests ------------------------------------


def test_an_image_with_an_empty_path_segment_is_refused_cleanly(
    stub: apps_pb2_grpc.AppServiceStub,
) -> None:
    """Creating a running app on image 'a//b' fails with a proper error and stores nothing."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateApp(
            apps_pb2.CreateAppRequest(app_id="slashes", app=apps_pb2.App(image="a//b")),
            timeout=CALL_TIMEOUT,
        )
    answer = refusal(caught.value)
    leftover = apps(stub).get("apps/slashes")
    assert leftover is None, f"the refused create ({answer.code.name}) left its app stored"
    check_proper(answer, "CreateApp image 'a//b'")


@pytest.mark.parametrize(
    "request_",
    [
        apps_pb2.GetAppRequest(name="apps/" + "A" * 10_000),
        # Non-ASCII text is percent-encoded in grpc-message: up to 3x its UTF-8 size.
        apps_pb2.RestartAppRequest(name="ê" * 5_000),
        apps_pb2.EditPortsRequest(
            name="apps/seed-a",
            add_published_ports=[apps_pb2.Port(number=70_000 + i) for i in range(30)],
            remove_published_ports=[apps_pb2.Port(number=70_000 + i) for i in range(30)],
            add_target_ports=[apps_pb2.Port(number=70_000 + i) for i in range(30)],
            remove_target_ports=[apps_pb2.Port(number=70_000 + i) for i in range(30)],
        ),
    ],
    ids=["long-name", "long-unicode-name", "120-bad-ports"],
)
def test_a_refusal_of_a_large_request_still_carries_its_error_info(
    stub: apps_pb2_grpc.AppServiceStub, request_: Message
) -> None:
    """A large malformed request is INVALID_ARGUMENT with ErrorInfo, however much is wrong."""
    method = type(request_).__name__.removesuffix("Request")
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request_, timeout=CALL_TIMEOUT)
    answer = refusal(caught.value)
    assert answer.code is Code.INVALID_ARGUMENT, answer
    check_proper(answer, method)
