/**
 * What the client puts on the wire, how it reports transport failures and
 * how its watch resumes, checked against an in-process grpc-js server (no
 * Miasma needed).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  Metadata,
  type sendUnaryData,
  Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  ServerCredentials,
  type StatusObject,
} from "@grpc/grpc-js";
import {
  AppServiceService,
  type DeepPartial,
  GetServerInfoResponse,
  MiasmaClient,
  MiasmaError,
  PortEventKind,
  status,
  type WatchPortEventsRequest,
  WatchPortEventsResponse,
} from "../src";
import { ErrorInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";

const server = new Server();
let address = "";

/** What the fake's next WatchPortEvents call sends, then how it ends ("open": never, until cancelled). */
interface WatchScript {
  send: DeepPartial<WatchPortEventsResponse>[];
  end: Partial<StatusObject> | "ok" | "open";
}
const scripts: WatchScript[] = [];
const watchRequests: WatchPortEventsRequest[] = [];
let watchesCancelled = 0;

before(async () => {
  server.addService(AppServiceService, {
    // Answers with the authorization header it received as the version.
    getServerInfo(call: ServerUnaryCall<unknown, unknown>, reply: sendUnaryData<GetServerInfoResponse>) {
      const [auth] = call.metadata.get("authorization");
      if (auth === undefined) {
        reply({ code: status.UNAUTHENTICATED, details: "no token" });
      } else {
        reply(null, GetServerInfoResponse.fromPartial({ version: String(auth) }));
      }
    },
    // Plays the next script.
    watchPortEvents(call: ServerWritableStream<WatchPortEventsRequest, WatchPortEventsResponse>) {
      watchRequests.push(call.request);
      call.on("cancelled", () => watchesCancelled++);
      const { send, end } = scripts.shift() ?? { send: [], end: "open" };
      for (const response of send) {
        call.write(WatchPortEventsResponse.fromPartial(response));
      }
      if (end === "ok") {
        call.end();
      } else if (end !== "open") {
        call.emit("error", end);
      }
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  address = `127.0.0.1:${port}`;
});

after(() => server.forceShutdown());

test("a token is sent as a bearer authorization header", async () => {
  const client = new MiasmaClient(address, { token: "s3cret" });
  try {
    assert.equal((await client.getServerInfo()).version, "Bearer s3cret");
  } finally {
    client.close();
  }
});

test("$MIASMA_TOKEN is the token when none is given, as in the CLI", async () => {
  process.env.MIASMA_TOKEN = "from-env";
  const client = new MiasmaClient(address);
  try {
    assert.equal((await client.getServerInfo()).version, "Bearer from-env");
  } finally {
    delete process.env.MIASMA_TOKEN;
    client.close();
  }
  const given = new MiasmaClient(address, { token: "given" });
  try {
    assert.equal((await given.getServerInfo()).version, "Bearer given");
  } finally {
    given.close();
  }
});

test("without a token no authorization header is sent", async () => {
  const client = new MiasmaClient(address);
  try {
    await assert.rejects(client.getServerInfo(), (error: unknown) => {
      assert.ok(error instanceof MiasmaError);
      assert.equal(error.codeName, "UNAUTHENTICATED");
      assert.equal(error.message, "UNAUTHENTICATED: no token");
      assert.equal(error.reason, undefined);
      assert.deepEqual(error.fieldViolations, []);
      return true;
    });
  } finally {
    client.close();
  }
});

test("an unreachable server is UNAVAILABLE, a MiasmaError without a reason", async () => {
  const client = new MiasmaClient("127.0.0.1:1");
  try {
    await assert.rejects(client.getApp({ name: "apps/x" }, { deadline: Date.now() + 5_000 }), (error: unknown) => {
      assert.ok(error instanceof MiasmaError);
      assert.equal(error.code, status.UNAVAILABLE);
      assert.equal(error.reason, undefined);
      return true;
    });
  } finally {
    client.close();
  }
});

test("the address defaults to $MIASMA_SERVER", async () => {
  const saved = process.env.MIASMA_SERVER;
  process.env.MIASMA_SERVER = address;
  const client = new MiasmaClient(undefined, { token: "t" });
  try {
    assert.equal((await client.getServerInfo()).version, "Bearer t");
  } finally {
    client.close();
    if (saved === undefined) {
      delete process.env.MIASMA_SERVER;
    } else {
      process.env.MIASMA_SERVER = saved;
    }
  }
});

// Watching, against scripted streams.

const { PORT_EVENT_KIND_SNAPSHOT: SNAPSHOT, PORT_EVENT_KIND_CHANGED: CHANGED } = PortEventKind;

function event(revision: number, kind = CHANGED, app = "apps/a"): DeepPartial<WatchPortEventsResponse> {
  return { event: { revision, kind, app } };
}

/** A status as Miasma ends streams with: an ErrorInfo in grpc-status-details-bin. */
function failure(code: status, details: string, reason: string, info: Record<string, string>): Partial<StatusObject> {
  const metadata = new Metadata();
  const errorInfo = Buffer.from(ErrorInfo.encode({ reason, domain: "miasma", metadata: info }).finish());
  const rich = Status.encode({
    code,
    message: details,
    details: [{ typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: errorInfo }],
  }).finish();
  metadata.set("grpc-status-details-bin", Buffer.from(rich));
  return { code, details, metadata };
}

const SHUTDOWN = failure(status.UNAVAILABLE, "the server is shutting down", "SERVER_SHUTTING_DOWN", {});

/** One line per response: "CHANGED 12 apps/a", "snapshotComplete 7", "progress 20". */
function describe(response: WatchPortEventsResponse): string {
  if (response.event) {
    const { kind, revision, app } = response.event;
    return `${PortEventKind[kind].replace("PORT_EVENT_KIND_", "")} ${revision} ${app}`;
  }
  if (response.snapshotComplete) {
    return `snapshotComplete ${response.snapshotComplete.revision}`;
  }
  return `progress ${response.progress?.revision}`;
}

/** The first `count` items, then leave the loop (which cancels the stream). */
async function take<T>(items: AsyncIterable<T>, count: number): Promise<T[]> {
  const taken: T[] = [];
  for await (const item of items) {
    taken.push(item);
    if (taken.length === count) {
      break;
    }
  }
  return taken;
}

function play(...played: WatchScript[]): void {
  scripts.splice(0, scripts.length, ...played);
  watchRequests.length = 0;
}

const requested = () => watchRequests.map((r) => `${r.name}@${r.startRevision}`);

const WATCH = { timeout: 10_000 }; // a watch that never ends fails instead of hanging

test("watchPortEvents yields the responses, then the stream's error as a MiasmaError", WATCH, async () => {
  play({
    send: [event(11), { progress: { revision: 12 } }],
    end: failure(status.UNAVAILABLE, "shutting down", "SERVER_SHUTTING_DOWN", { resume_revision: "12" }),
  });
  const client = new MiasmaClient(address, { token: "t" });
  const seen: string[] = [];
  try {
    await assert.rejects(
      async () => {
        for await (const response of client.watchPortEvents({ name: "apps/a", startRevision: 10 })) {
          seen.push(describe(response));
        }
      },
      (error: unknown) => {
        assert.ok(error instanceof MiasmaError, String(error));
        assert.equal(error.codeName, "UNAVAILABLE");
        assert.equal(error.reason, "SERVER_SHUTTING_DOWN");
        assert.deepEqual(error.metadata, { resume_revision: "12" });
        return true;
      },
    );
  } finally {
    client.close();
  }
  assert.deepEqual(seen, ["CHANGED 11 apps/a", "progress 12"]);
  assert.deepEqual(requested(), ["apps/a@10"]);
});

test("cancel() and the signal end a stream quietly, and the server sees it cancelled", WATCH, async () => {
  const client = new MiasmaClient(address);
  try {
    play({ send: [event(1)], end: "open" }, { send: [event(2)], end: "open" });
    const cancelled = watchesCancelled;
    const stream = client.watchPortEvents({ name: "apps/a" });
    const seen: string[] = [];
    for await (const response of stream) {
      seen.push(describe(response));
      stream.cancel();
    }
    const abort = new AbortController();
    for await (const response of client.watchPortEvents({ name: "apps/a" }, { signal: abort.signal })) {
      seen.push(describe(response));
      abort.abort();
    }
    assert.deepEqual(seen, ["CHANGED 1 apps/a", "CHANGED 2 apps/a"]);
    await waitFor(() => watchesCancelled === cancelled + 2);
  } finally {
    client.close();
  }
});

test("watch resumes after UNAVAILABLE from the last revision, with no duplicate", WATCH, async () => {
  play({ send: [event(11), event(12)], end: SHUTDOWN }, { send: [event(13), event(14)], end: "open" });
  const client = new MiasmaClient(address);
  const reconnects: string[] = [];
  try {
    const onReconnect = (error: MiasmaError, delayMs: number) => reconnects.push(`${error.codeName} ${delayMs}`);
    const seen = await take(client.watch("a", { since: 10, onReconnect }), 4);
    assert.deepEqual(
      seen.map(describe),
      ["CHANGED 11 apps/a", "CHANGED 12 apps/a", "CHANGED 13 apps/a", "CHANGED 14 apps/a"],
    );
  } finally {
    client.close();
  }
  assert.deepEqual(requested(), ["apps/a@10", "apps/a@12"]);
  assert.deepEqual(reconnects, ["UNAVAILABLE 100"]);
});

test("a broken snapshot starts over; the marker and progress move the resume point", WATCH, async () => {
  const snapshot = [event(7, SNAPSHOT, "apps/a"), event(7, SNAPSHOT, "apps/b"), { snapshotComplete: { revision: 7 } }];
  play(
    { send: snapshot.slice(0, 1), end: SHUTDOWN },
    { send: snapshot, end: SHUTDOWN },
    { send: [event(8, CHANGED, "apps/b"), { progress: { revision: 20 } }], end: "ok" },
    { send: [event(21)], end: "open" },
  );
  const client = new MiasmaClient(address);
  try {
    const seen = await take(client.watch(), 7);
    assert.deepEqual(seen.map(describe), [
      "SNAPSHOT 7 apps/a",
      "SNAPSHOT 7 apps/a",
      "SNAPSHOT 7 apps/b",
      "snapshotComplete 7",
      "CHANGED 8 apps/b",
      "progress 20",
      "CHANGED 21 apps/a",
    ]);
  } finally {
    client.close();
  }
  assert.deepEqual(requested(), ["apps/-@0", "apps/-@0", "apps/-@7", "apps/-@20"]);
});

test("watch throws other errors as MiasmaError without retrying", WATCH, async () => {
  play({
    send: [event(5)],
    end: failure(status.OUT_OF_RANGE, "revision 3 is older than the event log", "REVISION_COMPACTED", {
      oldest_revision: "4",
    }),
  });
  const client = new MiasmaClient(address);
  const seen: string[] = [];
  try {
    await assert.rejects(
      async () => {
        for await (const response of client.watch("apps/a", { since: 3, onReconnect: () => assert.fail("retried") })) {
          seen.push(describe(response));
        }
      },
      (error: unknown) => {
        assert.ok(error instanceof MiasmaError, String(error));
        assert.equal(error.code, status.OUT_OF_RANGE);
        assert.equal(error.metadata.oldest_revision, "4");
        return true;
      },
    );
  } finally {
    client.close();
  }
  assert.deepEqual(seen, ["CHANGED 5 apps/a"]);
  assert.deepEqual(requested(), ["apps/a@3"]);
});

test("the signal ends a watch quietly, also while it waits to reconnect", WATCH, async () => {
  play({ send: [], end: SHUTDOWN });
  const client = new MiasmaClient(address);
  const abort = new AbortController();
  try {
    const seen = await take(client.watch("a", { signal: abort.signal, onReconnect: () => abort.abort() }), 1);
    assert.deepEqual(seen, []);
    assert.deepEqual(requested(), ["apps/a@0"]);
  } finally {
    client.close();
  }
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, "timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
