// What both processes of bench/transfer.ts share: channel option variants, the IPC messages, the raw
// gRPC service and the frame helpers.
import * as grpc from '@grpc/grpc-js';
import { type OutFrame } from '../proto/frames.ts';
import { CHANNEL_OPTIONS } from '../proto/load.ts';
import { callMetadata, channelCredentials, checkToken, serverCredentials, type Security, type SecurityFiles } from '../proto/security.ts';
import { DataPlaneLink, DataPlaneServer } from '../worker/data-plane.ts';
import type { Mailbox } from '../worker/mailbox.ts';
import { PEER_CHANNEL_OPTIONS, PeerLink, PeerServer } from '../worker/peer.ts';

export const MB = 1024 * 1024;
export const KB = 1024;

// ---------------------------------------------------------------------------------------------
// Channel option variants for the peer service (the same options on both ends).

export const VARIANTS: Record<string, grpc.ChannelOptions> = {
  /** What the workers use (worker/peer.ts): the shared options with a 16 MB flow-control window. */
  current: PEER_CHANNEL_OPTIONS,
  /** The shared channel options alone (proto/load.ts): grpc-js's HTTP/2 default window of 64 KB. */
  'window-64k': CHANNEL_OPTIONS,
  'window-1m': { ...PEER_CHANNEL_OPTIONS, 'grpc-node.flow_control_window': 1 * MB },
  'window-4m': { ...PEER_CHANNEL_OPTIONS, 'grpc-node.flow_control_window': 4 * MB },
  'window-64m': { ...PEER_CHANNEL_OPTIONS, 'grpc-node.flow_control_window': 64 * MB },
  /** C-core options that grpc-js does not read: measured to show they change nothing. */
  'write-buffer': { ...PEER_CHANNEL_OPTIONS, 'grpc.http2.write_buffer_size': 8 * MB, 'grpc.http2.lookahead_bytes': 8 * MB },
  /** A bounded HTTP/2 session memory (MB) instead of grpc-js's unlimited default. */
  'session-memory-64': { ...PEER_CHANNEL_OPTIONS, 'grpc-node.max_session_memory': 64 },
  /** The gRPC peer stream as `propipe launch --data-plane grpc` runs it: mutual TLS with a bearer token. */
  tls: PEER_CHANNEL_OPTIONS,
};
/** Variants that run over mutual TLS (compared with a raw TLS socket as well). */
export const SECURE = new Set(['tls', 'socket-tls']);
/** The socket data plane (worker/data-plane.ts) instead of the gRPC peer stream: over TCP and over mutual TLS. */
export const SOCKET_PLANE = new Set(['socket', 'socket-tls']);

/** The receiving end of a peer channel (either plane), as both processes of the bench use it. */
export interface BenchServer {
  readonly mailbox: Mailbox;
  chunkBytes?: number;
  start(host: string, port: number): Promise<string>;
  sendDown(f: OutFrame): Promise<void>;
  stop(): Promise<void>;
}
export interface BenchLink {
  chunkBytes?: number;
  sendUp(f: OutFrame): Promise<void>;
  close(): void;
}

export function benchServer(variant: string, sec: Security): BenchServer {
  const s = SECURE.has(variant) ? sec : {};
  if (SOCKET_PLANE.has(variant)) return new DataPlaneServer(s);
  return new PeerServer(s.tls ? serverCredentials(s) : undefined, s.tls ? (md) => checkToken(s, md) : undefined, VARIANTS[variant]);
}

export function benchLink(variant: string, address: string, mailbox: Mailbox, sec: Security): BenchLink {
  const s = SECURE.has(variant) ? sec : {};
  if (SOCKET_PLANE.has(variant)) return new DataPlaneLink(address, mailbox, () => null, s, 'bench');
  return new PeerLink(address, mailbox, () => null, s.tls ? channelCredentials(s) : undefined, s.tls ? callMetadata(s) : undefined, VARIANTS[variant]);
}

// ---------------------------------------------------------------------------------------------
// Messages between the two processes (IPC).

export type Mode = 'tcp' | 'plain' | 'peer-up' | 'peer-down';
export type ToChild =
  | { t: 'creds'; files: SecurityFiles }
  | { t: 'tcp'; secure: boolean }
  | { t: 'plain' }
  | { t: 'peer-serve'; id: number; variant: string }
  | { t: 'peer-connect'; id: number; variant: string; address: string }
  | { t: 'expect'; mode: Mode; id: number; count: number; step: number }
  | { t: 'exit' };
export type FromChild = { t: 'port'; port: number } | { t: 'address'; address: string } | { t: 'ok' } | { t: 'ready' } | { t: 'done'; cpuMs: number } | { t: 'error'; message: string };

// A raw-bytes service for the plain grpc-js reference (no protobuf, whole messages, default options).
export const RAW_SERVICE: grpc.ServiceDefinition = {
  Stream: {
    path: '/bench.Raw/Stream',
    requestStream: true,
    responseStream: true,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};
export const RAW_OPTIONS: grpc.ChannelOptions = { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 };

/** A received tensor as the executor needs it: a Float32Array (copied when the bytes are unaligned). */
export function asFloats(b: Buffer): Float32Array {
  const aligned = b.byteOffset % 4 === 0 ? b : Buffer.from(b);
  return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
}

export const frame = (kind: 'ACTIVATION' | 'GRADIENT', step: number, data: Float32Array): OutFrame => ({ kind, step, microBatch: 0, tensor: { dtype: 'float32', shape: [1, data.length / 256, 256], data } });
export const TOKEN = new Float32Array(256);
export const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};
