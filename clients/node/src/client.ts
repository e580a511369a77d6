/**
 * A thin promise client over the generated `miasma.v1.AppService` stubs:
 * requests are partial plain objects, replies are the generated types, and
 * every failure is a MiasmaError. Port events stream as async iterables.
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  credentials,
  Metadata,
  type MethodDefinition,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { MiasmaError } from "./errors";
import {
  AppServiceClient,
  AppServiceService,
  CreateAppRequest,
  type CreateAppResponse,
  type DeepPartial,
  DeleteAppRequest,
  type DeleteAppResponse,
  DeleteVolumeRequest,
  type DeleteVolumeResponse,
  EditAppRequest,
  type EditAppResponse,
  EditPortsRequest,
  type EditPortsResponse,
  GetAppRequest,
  type GetAppResponse,
  GetServerInfoRequest,
  type GetServerInfoResponse,
  ListAppsRequest,
  type ListAppsResponse,
  ListVolumesRequest,
  type ListVolumesResponse,
  PortEventKind,
  GetCallerRequest,
  type GetCallerResponse,
  ListAuditRecordsRequest,
  type ListAuditRecordsResponse,
  ReadLogsRequest,
  type ReadLogsResponse,
  RenameAppRequest,
  type RenameAppResponse,
  RestartAppRequest,
  type RestartAppResponse,
  StartAppRequest,
  type StartAppResponse,
  StopAppRequest,
  type StopAppResponse,
  UpdateAppRequest,
  type UpdateAppResponse,
  UpgradeAppRequest,
  type UpgradeAppResponse,
  WatchPortEventsRequest,
  type WatchPortEventsResponse,
} from "./gen/miasma/v1/apps";

export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** TLS material (PEM); an empty object means TLS with the system's roots. */
export interface TlsOptions {
  rootCerts?: Buffer;
  /** With certChain: a client certificate, for mutual TLS. */
  privateKey?: Buffer;
  certChain?: Buffer;
}

export interface MiasmaClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call; default $MIASMA_TOKEN. */
  token?: string;
  /** Use TLS; plaintext when absent. */
  tls?: TlsOptions;
}

/** Per-call options of @grpc/grpc-js, e.g. `{ deadline: Date.now() + 5000 }`. */
export type MiasmaCallOptions = Partial<CallOptions>;

/** Options of a streaming call: grpc-js's, and a signal that cancels it. */
export type MiasmaStreamOptions = MiasmaCallOptions & { signal?: AbortSignal };

/**
 * An open WatchPortEvents stream: iterate it (once) for the responses.
 * Leaving the loop, `cancel()` or the signal ends the call; iteration then
 * stops quietly. Any other end of the stream is thrown as a MiasmaError.
 */
export type PortEventStream = ResponseStream<WatchPortEventsResponse>;

/** A server stream (a log read): iterate it, or cancel it. */
export interface ResponseStream<T> extends AsyncIterable<T> {
  cancel(): void;
}

/** Options of {@link MiasmaClient.logs}. */
export interface LogsOptions {
  /** The last this many lines (0 or absent: all). */
  tail?: number;
  /** Only lines written at or after this time. */
  since?: Date;
  /** Keep the stream open and yield new lines (and notices) as they come. */
  follow?: boolean;
  /** Ends the read: the iteration returns. */
  signal?: AbortSignal;
}

/** Options of {@link MiasmaClient.watch}. */
export interface WatchOptions {
  /** The last revision already seen; 0 (the default) starts with a snapshot of the current bindings. */
  since?: number;
  /** Ends the watch: the iteration returns. */
  signal?: AbortSignal;
  /** Called before each reconnection, with what broke the stream and the delay in ms. */
  onReconnect?: (error: MiasmaError, delayMs: number) => void;
}

/** Reconnection delays of {@link MiasmaClient.watch}: doubling from the first to the max. */
export const WATCH_FIRST_DELAY_MS = 100;
export const WATCH_MAX_DELAY_MS = 2_000;

/**
 * Keepalive pings on idle connections keep watch streams open through proxies and
 * notice a dead server; the server accepts pings down to every 10 s.
 */
const KEEPALIVE = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
};

export class MiasmaClient {
  /** The generated grpc-js client, for anything this class does not wrap. */
  readonly stub: AppServiceClient;
  private readonly token: string | undefined;

  /**
   * `address` defaults to $MIASMA_SERVER, else 127.0.0.1:50051; the token to
   * `options.token`, else $MIASMA_TOKEN (as the CLI). Every call that names an
   * app takes "web" or "apps/web".
   */
  constructor(address?: string, options: MiasmaClientOptions = {}) {
    const target = address ?? process.env.MIASMA_SERVER ?? DEFAULT_ADDRESS;
    this.stub = new AppServiceClient(target, channelCredentials(options.tls), KEEPALIVE);
    this.token = options.token ?? (process.env.MIASMA_TOKEN || undefined);
  }

  createApp(request: DeepPartial<CreateAppRequest>, options?: MiasmaCallOptions): Promise<CreateAppResponse> {
    return this.unary(AppServiceService.createApp, CreateAppRequest.fromPartial(request), options);
  }

  getApp(request: DeepPartial<GetAppRequest>, options?: MiasmaCallOptions): Promise<GetAppResponse> {
    return this.unary(AppServiceService.getApp, GetAppRequest.fromPartial(named(request)), options);
  }

  listApps(request: DeepPartial<ListAppsRequest> = {}, options?: MiasmaCallOptions): Promise<ListAppsResponse> {
    return this.unary(AppServiceService.listApps, ListAppsRequest.fromPartial(request), options);
  }

  updateApp(request: DeepPartial<UpdateAppRequest>, options?: MiasmaCallOptions): Promise<UpdateAppResponse> {
    return this.unary(AppServiceService.updateApp, UpdateAppRequest.fromPartial({ ...request, app: request.app && named(request.app) }), options);
  }

  deleteApp(request: DeepPartial<DeleteAppRequest>, options?: MiasmaCallOptions): Promise<DeleteAppResponse> {
    return this.unary(AppServiceService.deleteApp, DeleteAppRequest.fromPartial(named(request)), options);
  }

  startApp(request: DeepPartial<StartAppRequest>, options?: MiasmaCallOptions): Promise<StartAppResponse> {
    return this.unary(AppServiceService.startApp, StartAppRequest.fromPartial(named(request)), options);
  }

  stopApp(request: DeepPartial<StopAppRequest>, options?: MiasmaCallOptions): Promise<StopAppResponse> {
    return this.unary(AppServiceService.stopApp, StopAppRequest.fromPartial(named(request)), options);
  }

  restartApp(request: DeepPartial<RestartAppRequest>, options?: MiasmaCallOptions): Promise<RestartAppResponse> {
    return this.unary(AppServiceService.restartApp, RestartAppRequest.fromPartial(named(request)), options);
  }

  /** Pull the app's image again; `changed` when it was rolled out on a new one. A pull may take minutes. */
  upgradeApp(request: DeepPartial<UpgradeAppRequest>, options?: MiasmaCallOptions): Promise<UpgradeAppResponse> {
    return this.unary(AppServiceService.upgradeApp, UpgradeAppRequest.fromPartial(named(request)), options);
  }

  /** Give an app a new name (`newAppId`), keeping its ports, volumes and data. */
  renameApp(request: DeepPartial<RenameAppRequest>, options?: MiasmaCallOptions): Promise<RenameAppResponse> {
    return this.unary(AppServiceService.renameApp, RenameAppRequest.fromPartial(named(request)), options);
  }

  editPorts(request: DeepPartial<EditPortsRequest>, options?: MiasmaCallOptions): Promise<EditPortsResponse> {
    return this.unary(AppServiceService.editPorts, EditPortsRequest.fromPartial(named(request)), options);
  }

  /** Ports and volumes added or removed in one atomic change (what `miasma apps:edit` sends). */
  editApp(request: DeepPartial<EditAppRequest>, options?: MiasmaCallOptions): Promise<EditAppResponse> {
    return this.unary(AppServiceService.editApp, EditAppRequest.fromPartial(named(request)), options);
  }

  /** The volumes Miasma made, with the apps that mount them (none: left over). */
  listVolumes(request: DeepPartial<ListVolumesRequest> = {}, options?: MiasmaCallOptions): Promise<ListVolumesResponse> {
    return this.unary(AppServiceService.listVolumes, ListVolumesRequest.fromPartial(request.app ? { ...request, app: appName(request.app) } : request), options);
  }

  /** Delete a volume Miasma made that no app mounts (FAILED_PRECONDITION while one does). */
  deleteVolume(request: DeepPartial<DeleteVolumeRequest>, options?: MiasmaCallOptions): Promise<DeleteVolumeResponse> {
    return this.unary(AppServiceService.deleteVolume, DeleteVolumeRequest.fromPartial(request), options);
  }

  /** Who the server takes this client for: token name or certificate subject, role, permissions. */
  getCaller(request: DeepPartial<GetCallerRequest> = {}, options?: MiasmaCallOptions): Promise<GetCallerResponse> {
    return this.unary(AppServiceService.getCaller, GetCallerRequest.fromPartial(request), options);
  }

  /** The audit log, newest first: changes and refused calls (admin only). */
  listAuditRecords(
    request: DeepPartial<ListAuditRecordsRequest> = {},
    options?: MiasmaCallOptions,
  ): Promise<ListAuditRecordsResponse> {
    return this.unary(AppServiceService.listAuditRecords, ListAuditRecordsRequest.fromPartial(request), options);
  }

  getServerInfo(
    request: DeepPartial<GetServerInfoRequest> = {},
    options?: MiasmaCallOptions,
  ): Promise<GetServerInfoResponse> {
    return this.unary(AppServiceService.getServerInfo, GetServerInfoRequest.fromPartial(request), options);
  }

  /**
   * Open a WatchPortEvents stream of `name` ("apps/{app}", or "apps/-" for
   * every app) from `startRevision` (0: a snapshot first). One stream: see
   * {@link watch} for one that survives server restarts.
   */
  watchPortEvents(
    request: DeepPartial<WatchPortEventsRequest>,
    options: MiasmaStreamOptions = {},
  ): PortEventStream {
    const message = WatchPortEventsRequest.fromPartial(named(request));
    return this.serverStream(AppServiceService.watchPortEvents, message, options);
  }

  /** Open one ReadLogs stream; see {@link logs} for a follow that survives server restarts. */
  readLogs(request: DeepPartial<ReadLogsRequest>, options: MiasmaStreamOptions = {}): ResponseStream<ReadLogsResponse> {
    return this.serverStream(AppServiceService.readLogs, ReadLogsRequest.fromPartial(named(request)), options);
  }


  /**
   * The output of `app` ("web" or "apps/web") as ReadLogsResponses: `line`
   * (time, stdout or stderr, text, the container or task that wrote it) or,
   * along a follow, `notice` (it moved to a new container). With `follow`,
   * a stream broken by UNAVAILABLE (server restart) is reopened from the last
   * line's time; lines of that millisecond already yielded are not yielded
   * again. Other errors are thrown as MiasmaError. Stop with `break` or the signal.
   */
  async *logs(app: string, options: LogsOptions = {}): AsyncGenerator<ReadLogsResponse, void, undefined> {
    const { signal, follow = false } = options;
    const name = appName(app);
    let request: DeepPartial<ReadLogsRequest> = { name, tailLines: options.tail ?? 0, sinceTime: options.since, follow };
    let lastTime: number | undefined;
    let atLastTime = new Set<string>(); // lines of the last millisecond, to skip on a reopen
    let delay = WATCH_FIRST_DELAY_MS;
    while (!signal?.aborted) {
      try {
        for await (const response of this.readLogs(request, { signal })) {
          delay = WATCH_FIRST_DELAY_MS;
          const line = response.line;
          if (line?.time !== undefined) {
            const key = `${line.source} ${line.stream} ${line.text}`;
            const time = line.time.getTime();
            if (time === lastTime && atLastTime.has(key)) {
              continue;
            }
            if (time !== lastTime) {
              lastTime = time;
              atLastTime = new Set();
            }
            atLastTime.add(key);
          }
          yield response;
        }
        return;
      } catch (caught) {
        if (!follow || !(caught instanceof MiasmaError) || caught.code !== status.UNAVAILABLE) {
          throw caught;
        }
      }
      request = { ...request, tailLines: 0, sinceTime: lastTime === undefined ? request.sinceTime : new Date(lastTime) };
      if (!(await pause(delay, signal))) {
        return;
      }
      delay = Math.min(delay * 2, WATCH_MAX_DELAY_MS);
    }
  }

  /**
   * Port events of `app` ("hello" or "apps/hello"; every app when omitted)
   * after revision `since` (0: a snapshot of the current bindings, then
   * `snapshotComplete`, then live events), as WatchPortEventsResponses:
   * `event`, `snapshotComplete` or `progress`.
   *
   * When the stream breaks with UNAVAILABLE (server shutdown or restart,
   * connection lost) it reconnects after a short backoff from the last
   * revision seen, so every event arrives once, in order. A snapshot broken
   * before its marker starts over (it is state, not history). Other errors
   * (OUT_OF_RANGE: `since` was compacted away; INVALID_ARGUMENT; …) are
   * thrown as MiasmaError. Stop with `break` or the signal.
   */
  async *watch(app?: string, options: WatchOptions = {}): AsyncGenerator<WatchPortEventsResponse, void, undefined> {
    const { signal, onReconnect } = options;
    const name = app === undefined ? "apps/-" : appName(app);
    let since = options.since ?? 0;
    let delay = WATCH_FIRST_DELAY_MS;
    while (!signal?.aborted) {
      let error = streamEnded();
      try {
        for await (const response of this.watchPortEvents({ name, startRevision: since }, { signal })) {
          since = resumeRevision(since, response);
          delay = WATCH_FIRST_DELAY_MS;
          yield response;
        }
      } catch (caught) {
        if (!(caught instanceof MiasmaError) || caught.code !== status.UNAVAILABLE) {
          throw caught;
        }
        error = caught;
      }
      if (signal?.aborted) {
        return;
      }
      onReconnect?.(error, delay);
      if (!(await pause(delay, signal))) {
        return;
      }
      delay = Math.min(delay * 2, WATCH_MAX_DELAY_MS);
    }
  }

  /** Close the channel; later calls fail. */
  close(): void {
    this.stub.close();
  }

  private serverStream<Req, Res>(
    method: MethodDefinition<Req, Res>,
    request: Req,
    options: MiasmaStreamOptions,
  ): ResponseStream<Res> {
    const { signal, ...callOptions } = options;
    const call = this.stub.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      this.metadata(),
      callOptions,
    );
    return new CallStream<Res>(call, signal);
  }

  private unary<Req, Res>(
    method: MethodDefinition<Req, Res>,
    request: Req,
    options: MiasmaCallOptions = {},
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.stub.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        this.metadata(),
        options,
        (error: ServiceError | null, response?: Res) => {
          if (error) {
            reject(new MiasmaError(error));
          } else {
            resolve(response as Res);
          }
        },
      );
    });
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }
}

/** A grpc-js response stream as an async iterable that can be cancelled. */
class CallStream<T> implements ResponseStream<T> {
  private cancelled = false;

  constructor(
    private readonly call: ClientReadableStream<T>,
    signal: AbortSignal | undefined,
  ) {
    // The iterator reports errors; without a listener an unread one would crash the process.
    call.on("error", () => undefined);
    if (signal !== undefined) {
      const onAbort = () => this.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      call.on("status", () => signal.removeEventListener("abort", onAbort));
      if (signal.aborted) {
        this.cancel();
      }
    }
  }

  cancel(): void {
    this.cancelled = true;
    this.call.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T, void, undefined> {
    try {
      for await (const response of this.call) {
        yield response as T;
      }
    } catch (error) {
      if (!this.cancelled) {
        throw isServiceError(error) ? new MiasmaError(error) : error;
      }
    } finally {
      this.call.cancel(); // a no-op once the call has ended
    }
  }
}

/** Where to resume after `response`: snapshot events count only once their marker arrives. */
function resumeRevision(since: number, response: WatchPortEventsResponse): number {
  if (response.event !== undefined) {
    return response.event.kind === PortEventKind.PORT_EVENT_KIND_SNAPSHOT ? since : response.event.revision;
  }
  if (response.snapshotComplete !== undefined) {
    return response.snapshotComplete.revision;
  }
  if (response.progress !== undefined) {
    return Math.max(since, response.progress.revision);
  }
  return since;
}

/** A watch stream the server closed without an error: reconnect as after UNAVAILABLE. */
function streamEnded(): MiasmaError {
  const details = "the server ended the watch stream";
  return new MiasmaError(
    Object.assign(new Error(details), { code: status.UNAVAILABLE, details, metadata: new Metadata() }),
  );
}

/** "web" -> "apps/web"; "apps/web" and "apps/-" stay as they are. */
export function appName(name: string): string {
  return name.startsWith("apps/") ? name : `apps/${name}`;
}

/** A request whose `name` (an app's) may be given bare. */
function named<T extends { name?: string }>(request: T): T {
  return request.name ? { ...request, name: appName(request.name) } : request;
}

/** Wait `ms`; false when the signal aborts first. */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

function channelCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (tls === undefined) {
    return credentials.createInsecure();
  }
  return credentials.createSsl(tls.rootCerts ?? null, tls.privateKey ?? null, tls.certChain ?? null);
}
