/**
 * What the client puts on the wire and how it reports transport failures,
 * checked against an in-process grpc-js server (no Miasma needed).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  type sendUnaryData,
  Server,
  type ServerUnaryCall,
  ServerCredentials,
} from "@grpc/grpc-js";
import { AppServiceService, GetServerInfoResponse, MiasmaClient, MiasmaError, status } from "../src";

const server = new Server();
let address = "";

before(async () => {
  // Answers GetServerInfo with the authorization header it received as the version.
  server.addService(AppServiceService, {
    getServerInfo(call: ServerUnaryCall<unknown, unknown>, reply: sendUnaryData<GetServerInfoResponse>) {
      const [auth] = call.metadata.get("authorization");
      if (auth === undefined) {
        reply({ code: status.UNAUTHENTICATED, details: "no token" });
      } else {
        reply(null, GetServerInfoResponse.fromPartial({ version: String(auth) }));
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
