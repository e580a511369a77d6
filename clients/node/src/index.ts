/** Miasma's Node client: the thin client, its error, and the generated types. */
export { status } from "@grpc/grpc-js";
export {
  appName,
  DEFAULT_ADDRESS,
  type MiasmaCallOptions,
  MiasmaClient,
  type MiasmaClientOptions,
  type MiasmaStreamOptions,
  type LogsOptions,
  type PortEventStream,
  type ResponseStream,
  type TlsOptions,
  WATCH_FIRST_DELAY_MS,
  WATCH_MAX_DELAY_MS,
  type WatchOptions,
} from "./client";
export { type FieldViolation, MiasmaError } from "./errors";
export * from "./gen/miasma/v1/apps";
