/**
 * One error type for every failed call: the gRPC status plus Miasma's
 * `google.rpc` details, decoded from the `grpc-status-details-bin` trailer.
 */
import { type ServiceError, status } from "@grpc/grpc-js";
import { BadRequest, ErrorInfo, ResourceInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

/** One bad field of a request, as the server named it (`add_published_ports[0]`). */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A call that failed: refused by Miasma (with a stable `reason`) or by gRPC
 * itself (server unreachable, deadline exceeded), where `reason` is undefined.
 */
export class MiasmaError extends Error {
  override name = "MiasmaError";
  /** The gRPC status code, e.g. 3. */
  readonly code: status;
  /** Its name, e.g. "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The server's message, without the code. */
  readonly details: string;
  /** ErrorInfo.reason, stable across versions, e.g. "PORT_OUT_OF_RANGE". */
  readonly reason: string | undefined;
  /** ErrorInfo.metadata: facts about the refusal, by name. */
  readonly metadata: Record<string, string>;
  /** BadRequest.field_violations. */
  readonly fieldViolations: FieldViolation[];
  /** ResourceInfo.resource_name: the app in the way, e.g. "apps/postgres". */
  readonly resourceName: string | undefined;

  constructor(error: ServiceError) {
    const codeName = status[error.code] ?? `CODE_${error.code}`;
    const details = error.details.replace(/\s+/g, " ").trim();
    super(`${codeName}: ${details}`, { cause: error });
    this.code = error.code;
    this.codeName = codeName;
    this.details = details;
    this.metadata = {};
    this.fieldViolations = [];
    for (const detail of richDetails(error)) {
      if (detail.type === "google.rpc.ErrorInfo") {
        const info = ErrorInfo.decode(detail.value);
        this.reason = info.reason;
        this.metadata = info.metadata;
      } else if (detail.type === "google.rpc.BadRequest") {
        const bad = BadRequest.decode(detail.value);
        this.fieldViolations = bad.fieldViolations.map(({ field, description }) => ({ field, description }));
      } else if (detail.type === "google.rpc.ResourceInfo") {
        this.resourceName = ResourceInfo.decode(detail.value).resourceName;
      }
    }
  }
}

function* richDetails(error: ServiceError): Generator<{ type: string; value: Uint8Array }> {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!Buffer.isBuffer(raw)) {
    return;
  }
  for (const any of Status.decode(raw).details) {
    // "type.googleapis.com/google.rpc.ErrorInfo" -> "google.rpc.ErrorInfo"
    yield { type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1), value: any.value };
  }
}
