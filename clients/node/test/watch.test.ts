/**
 * WatchPortEvents against a real Miasma server at $MIASMA_SERVER: the
 * snapshot, live ASSIGNED/CHANGED events in revision order, per-app
 * filtering, resuming from a revision, and the errors. Apps are created
 * stopped (their ports are booked, nothing runs) and deleted afterwards.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  type App,
  DesiredState,
  MiasmaClient,
  MiasmaError,
  type PortBinding,
  type PortEvent,
  PortEventKind,
  status,
  type WatchPortEventsResponse,
} from "../src";
import { freePorts, IMAGE, uniqueName } from "./support";

const { PORT_EVENT_KIND_SNAPSHOT: SNAPSHOT, PORT_EVENT_KIND_ASSIGNED: ASSIGNED, PORT_EVENT_KIND_CHANGED: CHANGED } =
  PortEventKind;

const client = new MiasmaClient();
const created: string[] = [];
const recorders: Recorder[] = [];

after(async () => {
  await Promise.all(recorders.map((r) => r.stop()));
  for (const name of created) {
    await client.deleteApp({ name }).catch(() => undefined);
  }
  client.close();
});

async function createStopped(prefix: string): Promise<App> {
  const appId = uniqueName(prefix);
  const { app } = await client.createApp({
    appId,
    app: { image: IMAGE, desiredState: DesiredState.DESIRED_STATE_STOPPED },
  });
  created.push(`apps/${appId}`);
  assert.ok(app);
  return app;
}

async function addPublished(app: App, port: number): Promise<App> {
  const { app: edited } = await client.editPorts({ name: app.name, addPublishedPorts: [{ number: port }] });
  assert.ok(edited);
  return edited;
}

const published = (bindings: PortBinding[]) => bindings.map((b) => b.publishedPort);

/** Reads a watch in the background and keeps what arrives. */
class Recorder {
  readonly responses: WatchPortEventsResponse[] = [];
  private error: unknown;
  private readonly done: Promise<void>;

  constructor(
    items: AsyncIterable<WatchPortEventsResponse>,
    readonly stop: () => Promise<void> | void,
  ) {
    recorders.push(this);
    this.done = (async () => {
      try {
        for await (const response of items) {
          this.responses.push(response);
        }
      } catch (error) {
        this.error = error;
      }
    })();
  }

  static stream(name: string, startRevision: number): Recorder {
    const stream = client.watchPortEvents({ name, startRevision });
    const recorder: Recorder = new Recorder(stream, async () => {
      stream.cancel();
      await recorder.done;
    });
    return recorder;
  }

  static watch(app: string, since: number): Recorder {
    const abort = new AbortController();
    const recorder: Recorder = new Recorder(client.watch(app, { since, signal: abort.signal }), async () => {
      abort.abort();
      await recorder.done;
    });
    return recorder;
  }

  /** Port events of `app` (or every app) so far. */
  events(app?: string): PortEvent[] {
    return this.responses.flatMap((r) => (r.event && (app === undefined || r.event.app === app) ? [r.event] : []));
  }

  async until(what: string, done: () => boolean, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (this.error !== undefined) {
        throw this.error;
      }
      assert.ok(Date.now() < deadline, `no ${what} after ${timeoutMs} ms; got ${JSON.stringify(this.responses)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Wait for the event of `app` at `revision`. */
  untilRevision(app: string, revision: number): Promise<void> {
    return this.until(`${app} event at ${revision}`, () => this.events(app).some((e) => e.revision === revision));
  }
}

test("a watch of every app: a snapshot, then ASSIGNED and CHANGED in order with increasing revisions", async () => {
  const before = await createStopped("node-watch-old");
  const watch = Recorder.stream("apps/-", 0);
  await watch.until("snapshotComplete", () => watch.responses.some((r) => r.snapshotComplete));

  const marker = watch.responses.findIndex((r) => r.snapshotComplete);
  const snapshotRevision = watch.responses[marker].snapshotComplete?.revision ?? 0;
  assert.ok(snapshotRevision >= before.revision);
  const snapshot = watch.responses.slice(0, marker).map((r) => r.event);
  assert.ok(snapshot.every((e) => e?.kind === SNAPSHOT && e.revision === snapshotRevision));
  const old = snapshot.find((e) => e?.app === before.name);
  assert.deepEqual(published(old?.newBindings ?? []), published(before.bindings));

  const [first, second] = await freePorts(client, 2);
  const app = await createStopped("node-watch");
  const once = await addPublished(app, first);
  const twice = await addPublished(app, second);
  await watch.untilRevision(app.name, twice.revision);

  const mine = watch.events(app.name).filter((e) => e.kind === ASSIGNED || e.kind === CHANGED);
  assert.deepEqual(
    mine.map((e) => [PortEventKind[e.kind], e.revision, published(e.oldBindings), published(e.newBindings)]),
    [
      ["PORT_EVENT_KIND_ASSIGNED", app.revision, [], published(app.bindings)],
      ["PORT_EVENT_KIND_CHANGED", once.revision, published(app.bindings), [first]],
      ["PORT_EVENT_KIND_CHANGED", twice.revision, [first], [first, second]],
    ],
  );
  assert.ok(mine.every((e) => e.time instanceof Date));
  const live = watch.events().slice(snapshot.length);
  const revisions = live.map((e) => e.revision);
  assert.ok(
    revisions.every((r, i) => r > (i === 0 ? snapshotRevision : revisions[i - 1])),
    `revisions not strictly increasing: ${revisions}`,
  );
  await watch.stop();
});

test("a watch of one app sees only that app's events", async () => {
  const [mine, other] = [await createStopped("node-watch-mine"), await createStopped("node-watch-other")];
  const watch = Recorder.stream(mine.name, 0);
  await watch.until("snapshotComplete", () => watch.responses.some((r) => r.snapshotComplete));
  assert.deepEqual(
    watch.events().map((e) => [e.app, e.kind]),
    [[mine.name, SNAPSHOT]],
  );

  const [port, otherPort] = await freePorts(client, 2);
  await addPublished(other, otherPort);
  const edited = await addPublished(mine, port);
  await watch.untilRevision(mine.name, edited.revision);
  assert.deepEqual(
    watch.events().filter((e) => e.app !== mine.name),
    [],
  );
  assert.deepEqual(published(watch.events(mine.name).at(-1)?.newBindings ?? []), [port]);
  await watch.stop();
});

test("watching from a revision gives exactly the events after it", async () => {
  const app = await createStopped("node-watch-resume");
  const full = Recorder.stream(app.name, 0);
  const ports = await freePorts(client, 4);
  const edits: App[] = [];
  for (const port of ports.slice(0, 3)) {
    edits.push(await addPublished(app, port));
  }

  // From the middle: after the first edit, with the resuming helper.
  const middle = edits[0].revision;
  const resumed = Recorder.watch(app.name.replace("apps/", ""), middle);
  await resumed.untilRevision(app.name, edits[2].revision);
  const last = await addPublished(app, ports[3]); // everything before it has been sent
  await resumed.untilRevision(app.name, last.revision);
  await full.untilRevision(app.name, last.revision);

  const upTo = (events: PortEvent[]) => events.filter((e) => e.revision <= last.revision);
  const expected = upTo(full.events().filter((e) => e.revision > middle));
  assert.deepEqual(upTo(resumed.events()), expected);
  assert.deepEqual(
    expected.filter((e) => e.kind === CHANGED).map((e) => e.revision),
    [edits[1].revision, edits[2].revision, last.revision],
  );
  const revisions = resumed.events().map((e) => e.revision);
  assert.equal(new Set(revisions).size, revisions.length, `duplicates: ${revisions}`);
  assert.ok(resumed.responses.every((r) => !r.snapshotComplete));
  await Promise.all([full.stop(), resumed.stop()]);
});

async function expectWatchError(items: AsyncIterable<unknown>, code: status): Promise<MiasmaError> {
  const error = await (async () => {
    for await (const item of items) {
      assert.fail(`expected ${status[code]}, got ${JSON.stringify(item)}`);
    }
    assert.fail(`expected ${status[code]}, the stream ended`);
  })().catch((error: unknown) => error);
  assert.ok(error instanceof MiasmaError, `not a MiasmaError: ${String(error)}`);
  assert.equal(error.code, code, error.message);
  return error;
}

test("a negative start_revision is INVALID_ARGUMENT, from the stream and from watch (not retried)", async () => {
  const error = await expectWatchError(
    client.watchPortEvents({ name: "apps/-", startRevision: -1 }),
    status.INVALID_ARGUMENT,
  );
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["start_revision"],
  );
  const retries: string[] = [];
  await expectWatchError(
    client.watch(undefined, { since: -1, onReconnect: (e) => retries.push(e.message) }),
    status.INVALID_ARGUMENT,
  );
  assert.deepEqual(retries, []);
});

test("a revision ahead of the server is OUT_OF_RANGE with the current revision", async () => {
  const error = await expectWatchError(
    client.watchPortEvents({ name: "apps/-", startRevision: 1e12 }),
    status.OUT_OF_RANGE,
  );
  assert.equal(error.reason, "REVISION_AHEAD");
  assert.match(error.metadata.current_revision ?? "", /^\d+$/);
});
