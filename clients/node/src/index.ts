/** Miasma's Node client: the thin client, its error, and the generated types. */
export { status } from "@grpc/grpc-js";
export {
  DEFAULT_ADDRESS,
  type MiasmaCallOptions,
  MiasmaClient,
  type MiasmaClientOptions,
  type TlsOptions,
} from "./client";
export { type FieldViolation, MiasmaError } from "./errors";
export * from "./gen/miasma/v1/apps";
