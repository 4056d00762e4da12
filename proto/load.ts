// Loads propipe.proto at run time (no generated code) for the coordinator, the workers and tests.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO = path.resolve(import.meta.dirname, 'propipe.proto');

export interface PropipeProto {
  Peer: grpc.ServiceClientConstructor;
  Coordinator: grpc.ServiceClientConstructor;
}

let cached: PropipeProto | null = null;

export function loadProto(): PropipeProto {
  if (cached) return cached;
  const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { propipe: { v1: PropipeProto } };
  cached = pkg.propipe.v1;
  return cached;
}

/**
 * Message size limit for every channel and server (PROPIPE_MAX_MESSAGE_MB, default 64): frames are
 * chunked well below it, so a larger message is hostile or broken and gRPC refuses it
 * (RESOURCE_EXHAUSTED) before it is buffered.
 */
export const MAX_MESSAGE_BYTES = Math.round(Number(process.env.PROPIPE_MAX_MESSAGE_MB ?? 64) * 1024 * 1024);

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
};
