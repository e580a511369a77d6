/**
 * A thin promise client over the generated `miasma.v1.AppService` stubs:
 * requests are partial plain objects, replies are the generated types, and
 * every failure is a MiasmaError.
 */
import {
  type CallOptions,
  type ChannelCredentials,
  credentials,
  Metadata,
  type MethodDefinition,
  type ServiceError,
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
  EditPortsRequest,
  type EditPortsResponse,
  GetAppRequest,
  type GetAppResponse,
  GetServerInfoRequest,
  type GetServerInfoResponse,
  ListAppsRequest,
  type ListAppsResponse,
  RestartAppRequest,
  type RestartAppResponse,
  StartAppRequest,
  type StartAppResponse,
  StopAppRequest,
  type StopAppResponse,
  UpdateAppRequest,
  type UpdateAppResponse,
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
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Use TLS; plaintext when absent. */
  tls?: TlsOptions;
}

/** Per-call options of @grpc/grpc-js, e.g. `{ deadline: Date.now() + 5000 }`. */
export type MiasmaCallOptions = Partial<CallOptions>;

export class MiasmaClient {
  /** The generated grpc-js client, for anything this class does not wrap. */
  readonly stub: AppServiceClient;
  private readonly token: string | undefined;

  /** `address` defaults to $MIASMA_SERVER, else 127.0.0.1:50051. */
  constructor(address?: string, options: MiasmaClientOptions = {}) {
    const target = address ?? process.env.MIASMA_SERVER ?? DEFAULT_ADDRESS;
    this.stub = new AppServiceClient(target, channelCredentials(options.tls));
    this.token = options.token;
  }

  createApp(request: DeepPartial<CreateAppRequest>, options?: MiasmaCallOptions): Promise<CreateAppResponse> {
    return this.unary(AppServiceService.createApp, CreateAppRequest.fromPartial(request), options);
  }

  getApp(request: DeepPartial<GetAppRequest>, options?: MiasmaCallOptions): Promise<GetAppResponse> {
    return this.unary(AppServiceService.getApp, GetAppRequest.fromPartial(request), options);
  }

  listApps(request: DeepPartial<ListAppsRequest> = {}, options?: MiasmaCallOptions): Promise<ListAppsResponse> {
    return this.unary(AppServiceService.listApps, ListAppsRequest.fromPartial(request), options);
  }

  updateApp(request: DeepPartial<UpdateAppRequest>, options?: MiasmaCallOptions): Promise<UpdateAppResponse> {
    return this.unary(AppServiceService.updateApp, UpdateAppRequest.fromPartial(request), options);
  }

  deleteApp(request: DeepPartial<DeleteAppRequest>, options?: MiasmaCallOptions): Promise<DeleteAppResponse> {
    return this.unary(AppServiceService.deleteApp, DeleteAppRequest.fromPartial(request), options);
  }

  startApp(request: DeepPartial<StartAppRequest>, options?: MiasmaCallOptions): Promise<StartAppResponse> {
    return this.unary(AppServiceService.startApp, StartAppRequest.fromPartial(request), options);
  }

  stopApp(request: DeepPartial<StopAppRequest>, options?: MiasmaCallOptions): Promise<StopAppResponse> {
    return this.unary(AppServiceService.stopApp, StopAppRequest.fromPartial(request), options);
  }

  restartApp(request: DeepPartial<RestartAppRequest>, options?: MiasmaCallOptions): Promise<RestartAppResponse> {
    return this.unary(AppServiceService.restartApp, RestartAppRequest.fromPartial(request), options);
  }

  editPorts(request: DeepPartial<EditPortsRequest>, options?: MiasmaCallOptions): Promise<EditPortsResponse> {
    return this.unary(AppServiceService.editPorts, EditPortsRequest.fromPartial(request), options);
  }

  getServerInfo(
    request: DeepPartial<GetServerInfoRequest> = {},
    options?: MiasmaCallOptions,
  ): Promise<GetServerInfoResponse> {
    return this.unary(AppServiceService.getServerInfo, GetServerInfoRequest.fromPartial(request), options);
  }

  /** Close the channel; later calls fail. */
  close(): void {
    this.stub.close();
  }

  private unary<Req, Res>(
    method: MethodDefinition<Req, Res>,
    request: Req,
    options: MiasmaCallOptions = {},
  ): Promise<Res> {
    const metadata = new Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return new Promise((resolve, reject) => {
      this.stub.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        metadata,
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
}

function channelCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (tls === undefined) {
    return credentials.createInsecure();
  }
  return credentials.createSsl(tls.rootCerts ?? null, tls.privateKey ?? null, tls.certChain ?? null);
}
