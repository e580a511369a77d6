/**
 * The client against a real Miasma server at $MIASMA_SERVER (default
 * 127.0.0.1:50051, as `make run` listens), running apps from
 * $MIASMA_TEST_IMAGE (a busybox image with /www/index.html).
 *
 * $MIASMA_TEST_APP names the app whose ports are edited and keeps it
 * afterwards (published port $MIASMA_TEST_PUBLISHED_PORT -> target 80), so
 * the caller can check it in Docker; without it the app is deleted.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  type App,
  DesiredState,
  type LogLine,
  LogStream,
  MiasmaClient,
  MiasmaError,
  type PortBinding,
  status,
} from "../src";
import { freePorts, IMAGE, uniqueName } from "./support";

const KEPT_APP = process.env.MIASMA_TEST_APP;
// Busybox httpd on every PORT_<n> the app gets (as tests/conftest.py's HTTPD_COMMAND).
const HTTPD = [
  "sh",
  "-c",
  "trap 'exit 0' TERM INT; " +
    "for p in $(env | sed -n 's/^PORT_[0-9]*=//p'); do httpd -p $p -h /www; done; " +
    "while :; do sleep 1 & wait $!; done",
];

const client = new MiasmaClient();
const created: string[] = [];

after(async () => {
  for (const name of created) {
    await client.deleteApp({ name }).catch(() => undefined);
  }
  client.close();
});

/** Create an app; it is deleted after the tests unless it is $MIASMA_TEST_APP. */
async function createApp(appId: string, app: Partial<App>): Promise<App> {
  const reply = await client.createApp({ appId, app: { image: IMAGE, ...app } });
  if (appId !== KEPT_APP) {
    created.push(`apps/${appId}`);
  }
  assert.ok(reply.app);
  return reply.app;
}

function createStopped(prefix: string): Promise<App> {
  return createApp(uniqueName(prefix), { desiredState: DesiredState.DESIRED_STATE_STOPPED });
}

/** The parts of a binding a user chose or reads. */
function slots(app: App | undefined): Partial<PortBinding>[] {
  assert.ok(app);
  return app.bindings.map(({ publishedPort, targetPort, publishedExplicit, targetExplicit, envNames }) => ({
    publishedPort,
    targetPort,
    publishedExplicit,
    targetExplicit,
    envNames,
  }));
}

async function httpGet(port: number, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const reply = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) });
      return await reply.text();
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`nothing answered on 127.0.0.1:${port}`, { cause: error });
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function expectError(call: Promise<unknown>, code: status): Promise<MiasmaError> {
  const error = await call.then(
    () => assert.fail(`expected ${status[code]}`),
    (error: unknown) => error,
  );
  assert.ok(error instanceof MiasmaError, `not a MiasmaError: ${String(error)}`);
  assert.equal(error.code, code, error.message);
  assert.equal(error.codeName, status[code]);
  assert.match(error.message, new RegExp(`^${status[code]}: \\S`));
  assert.doesNotMatch(error.message, /\n/);
  return error;
}

test("server info names the version and the published port range", async () => {
  const info = await client.getServerInfo();
  assert.notEqual(info.version, "");
  assert.match(info.publishedPortRange, /^\d+-\d+$/);
  assert.equal(info.dockerReachable, true);
});

test("creating an app, editing its ports and reading them back", async () => {
  const name = KEPT_APP ?? uniqueName("node");
  const fromEnv = Number(process.env.MIASMA_TEST_PUBLISHED_PORT ?? 0);
  const [port, extra] = fromEnv ? [fromEnv, ...(await freePorts(client, 1, [fromEnv]))] : await freePorts(client, 2);

  const app = await createApp(name, { command: HTTPD });
  assert.equal(app.name, `apps/${name}`);
  assert.equal(app.desiredState, DesiredState.DESIRED_STATE_RUNNING);
  assert.deepEqual(
    slots(app).map((s) => [s.publishedExplicit, s.targetExplicit, s.envNames]),
    [[false, false, ["PORT", "PORT_1"]]],
  );

  const edited = await client.editPorts({
    name: app.name,
    addPublishedPorts: [{ number: port }],
    addTargetPorts: [{ number: 80 }],
  });
  const want = [
    { publishedPort: port, targetPort: 80, publishedExplicit: true, targetExplicit: true, envNames: ["PORT", "PORT_1"] },
  ];
  assert.deepEqual(slots(edited.app), want);
  assert.deepEqual(
    edited.changes.map((c) => [c.slot, c.oldBinding?.publishedPort, c.newBinding?.publishedPort]),
    [[0, app.bindings[0].publishedPort, port]],
  );

  const read = (await client.getApp({ name: app.name })).app;
  assert.deepEqual(slots(read), want);
  assert.ok(read?.urls.some((url) => url.endsWith(`:${port}`)), `urls: ${read?.urls}`);
  assert.notEqual(read?.etag, app.etag);

  const listed: App[] = [];
  let pageToken = "";
  do {
    const page = await client.listApps({ pageSize: 2, pageToken });
    listed.push(...page.apps);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  assert.deepEqual(slots(listed.find((a) => a.name === app.name)), want);

  // The app really listens on target 80 behind the published port.
  assert.match(await httpGet(port), /miasma-test/);

  // A second published port opens slot 2 with a random target, as PORT_2;
  // removing it drops the slot again and leaves slot 1 alone.
  const two = await client.editPorts({ name: app.name, addPublishedPorts: [{ number: extra }] });
  const [, second] = slots(two.app);
  assert.equal(second.publishedPort, extra);
  assert.equal(second.targetExplicit, false);
  assert.deepEqual(second.envNames, ["PORT_2"]);
  const one = await client.editPorts({ name: app.name, removePublishedPorts: [{ number: extra }] });
  assert.deepEqual(slots(one.app), want);
});

test("a port out of range is INVALID_ARGUMENT naming the field, and changes nothing", async () => {
  const app = await createStopped("node-bad");
  const error = await expectError(
    client.editPorts({ name: app.name, addPublishedPorts: [{ number: 70000 }] }),
    status.INVALID_ARGUMENT,
  );
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["add_published_ports[0]"],
  );
  assert.match(error.fieldViolations[0].description, /70000/);
  assert.equal(error.reason, "INVALID_PORT");
  assert.deepEqual(slots((await client.getApp({ name: app.name })).app), slots(app));
});

test("a published port held by another app is ALREADY_EXISTS naming the holder", async () => {
  const [port] = await freePorts(client, 1);
  const holder = await createStopped("node-holder");
  const other = await createStopped("node-other");
  await client.editPorts({ name: holder.name, addPublishedPorts: [{ number: port }] });
  const error = await expectError(
    client.editPorts({ name: other.name, addPublishedPorts: [{ number: port }] }),
    status.ALREADY_EXISTS,
  );
  assert.equal(error.resourceName, holder.name);
  assert.equal(error.reason, "PORT_IN_USE");
});

test("an unknown app is NOT_FOUND", async () => {
  const name = `apps/${uniqueName("ghost")}`;
  const error = await expectError(client.getApp({ name }), status.NOT_FOUND);
  assert.equal(error.reason, "APP_NOT_FOUND");
  assert.equal(error.resourceName, name);
});

test("a deleted app is gone", async () => {
  const app = await createStopped("node-gone");
  const deleted = await client.deleteApp({ name: app.name });
  assert.equal(deleted.app?.name, app.name);
  await expectError(client.getApp({ name: app.name }), status.NOT_FOUND);
  const { apps } = await client.listApps({ pageSize: 1000 });
  assert.ok(!apps.some((a) => a.name === app.name));
});

test("volumes: mounted on create, swapped atomically by editApp, kept or deleted with the app", async () => {
  const name = uniqueName("nodevol");
  const first = `${name}-data`;
  const second = `${name}-more`;
  const app = await createApp(name, {
    command: HTTPD,
    volumes: [{ source: first, target: "/data", readOnly: false }],
    stopGrace: { seconds: 3, nanos: 0 },
  });
  assert.deepEqual(
    app.volumes.map((v) => [v.source, v.target, v.readOnly]),
    [[first, "/data", false]],
  );
  assert.equal(app.stopGrace?.seconds, 3);
  assert.match(app.uid, /^[0-9a-f]{6}$/);

  const bad = await expectError(
    client.editApp({ name: app.name, addVolumes: [{ source: second, target: "relative" }] }),
    status.INVALID_ARGUMENT,
  );
  assert.deepEqual(
    bad.fieldViolations.map((v) => v.field),
    ["add_volumes[0].target"],
  );

  const edited = await client.editApp({
    name: app.name,
    removeVolumes: [{ target: "/data" }],
    addVolumes: [{ source: second, target: "/data", readOnly: true }],
  });
  assert.deepEqual(
    edited.app?.volumes.map((v) => [v.source, v.target, v.readOnly]),
    [[second, "/data", true]],
  );

  const listed = (await client.listVolumes({})).volumes.filter((v) => v.name.startsWith(name));
  assert.deepEqual(
    listed.map((v) => [v.name, v.createdFor, v.mountedBy]),
    [
      [first, app.name, []],
      [second, app.name, [app.name]],
    ],
  );
  await expectError(client.deleteVolume({ name: second }), status.FAILED_PRECONDITION);

  const deleted = await client.deleteApp({ name: app.name, deleteVolumes: true });
  created.splice(created.indexOf(app.name), 1);
  assert.deepEqual(deleted.deletedVolumes, [second]);
  assert.equal((await client.deleteVolume({ name: first })).volume?.name, first);
  assert.deepEqual(
    (await client.listVolumes({})).volumes.filter((v) => v.name.startsWith(name)),
    [],
  );
});

test("logs: the last lines, stdout and stderr apart, then a follow until aborted", async () => {
  const name = uniqueName("node-logs");
  const talker = "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo out $i; echo err $i >&2; sleep 0.1 & wait $!; done";
  await createApp(name, { command: ["sh", "-c", talker] });
  let lines: LogLine[] = [];
  for (let tries = 0; lines.length < 4 && tries < 100; tries++) {
    lines = [];
    for await (const response of client.logs(name, { tail: 4 })) {
      if (response.line) {
        lines.push(response.line);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(lines.length, 4);
  for (const line of lines) {
    const expected = line.text.startsWith("err") ? LogStream.LOG_STREAM_STDERR : LogStream.LOG_STREAM_STDOUT;
    assert.equal(line.stream, expected, line.text);
    assert.equal(line.source.length, 12);
  }

  const stop = new AbortController();
  const followed: string[] = [];
  for await (const response of client.logs(`apps/${name}`, { follow: true, since: new Date(), signal: stop.signal })) {
    if (response.line) {
      followed.push(response.line.text);
    }
    if (followed.length >= 6) {
      stop.abort();
    }
  }
  assert.equal(followed.length, 6);
  const outs = followed.filter((text) => text.startsWith("out")).map((text) => Number(text.split(" ")[1]));
  assert.deepEqual(outs, [...outs].sort((a, b) => a - b));
  await expectError(client.logs("no-such-app").next(), status.NOT_FOUND);
});

test("every call that names an app takes it bare or as apps/NAME", async () => {
  const name = uniqueName("node-bare");
  await createApp(name, { desiredState: DesiredState.DESIRED_STATE_STOPPED });
  assert.equal((await client.getApp({ name })).app?.name, `apps/${name}`);
  const edited = await client.editApp({ name, setEnv: { GREETING: "hi" }, hidden: true });
  assert.deepEqual(edited.app?.env, { GREETING: "hi" });
  assert.equal(edited.app?.hidden, true);
  const updated = await client.updateApp({
    app: { name, env: { GREETING: "hello" } },
    updateMask: ["env.GREETING"],
  });
  assert.deepEqual(updated.app?.env, { GREETING: "hello" });
  assert.equal((await client.listVolumes({ app: name })).volumes.length, 0);
  const hidden = (await client.listApps({ showHidden: true })).apps.map((app) => app.name);
  assert.ok(hidden.includes(`apps/${name}`));
  assert.ok(!(await client.listApps({})).apps.some((app) => app.name === `apps/${name}`));
});
