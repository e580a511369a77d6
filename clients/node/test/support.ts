/** What the suites against a real server share (not a test file itself). */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type { MiasmaClient } from "../src";

export const IMAGE = process.env.MIASMA_TEST_IMAGE ?? "miasma-test/busybox:latest";

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(true));
    probe.listen(port, "0.0.0.0", () => probe.close(() => resolve(false)));
  });
}

/**
 * Ports of the server's published range, picked at random, that no app holds
 * (stopped ones included) and nothing listens on now.
 */
export async function freePorts(client: MiasmaClient, count: number, taken: number[] = []): Promise<number[]> {
  const { publishedPortRange } = await client.getServerInfo();
  const { apps } = await client.listApps({ pageSize: 1000 });
  const held = new Set([...taken, ...apps.flatMap((app) => app.bindings.map((b) => b.publishedPort))]);
  const [low, high] = publishedPortRange.split("-").map(Number);
  const found = new Set<number>();
  for (let tries = 0; found.size < count && tries < 200; tries++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (!held.has(port) && !(await listening(port))) {
      found.add(port);
    }
  }
  assert.equal(found.size, count, `no ${count} free ports in ${publishedPortRange}`);
  return [...found];
}
