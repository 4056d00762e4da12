// Which data plane a worker serves its neighbours on, and the links it opens to theirs. A worker serves
// one plane (`--data-plane socket|grpc`, PROPIPE_DATA_PLANE) and advertises its address in the plane's
// form (`socket://host:port`, or gRPC's plain `host:port`); a link follows the address it is given, so
// neighbours on different planes still reach each other.
import { callMetadata, channelCredentials, checkToken, serverCredentials, type Security } from '../proto/security.ts';
import type { RankTransport } from './assignment.ts';
import { DataPlaneLink, DataPlaneServer, isSocketAddress, SOCKET_SCHEME } from './data-plane.ts';
import { PeerLink, PeerServer } from './peer.ts';

export const DATA_PLANES = ['socket', 'grpc'] as const;
export type DataPlane = (typeof DATA_PLANES)[number];
/** The default: measured in bench/transfer.ts (README "The data plane"). */
export const DEFAULT_DATA_PLANE: DataPlane = 'socket';

/** The plane a flag or PROPIPE_DATA_PLANE names (the default when neither does). */
export function dataPlaneOf(value: string | undefined, what = '--data-plane'): DataPlane {
  if (value === undefined || value === '') return DEFAULT_DATA_PLANE;
  if ((DATA_PLANES as readonly string[]).includes(value)) return value as DataPlane;
  throw new Error(`${what} must be ${DATA_PLANES.join(' or ')}, got '${value}'`);
}

export interface PeerTransport {
  transport: RankTransport;
  /** What this worker listens on, in its plane's form. */
  address: string;
  stop(): Promise<void>;
}

export async function startPeerTransport(plane: DataPlane, sec: Security, host: string, port: number, workerId: string): Promise<PeerTransport> {
  const server = plane === 'socket' ? new DataPlaneServer(sec) : new PeerServer(serverCredentials(sec), (md) => checkToken(sec, md));
  const address = await server.start(host, port);
  const linkUp = (to: string) => (isSocketAddress(to) ? new DataPlaneLink(to, server.mailbox, server.expect, sec, workerId) : new PeerLink(to, server.mailbox, server.expect, channelCredentials(sec), callMetadata(sec)));
  return { transport: Object.assign(server, { linkUp }), address, stop: () => server.stop() };
}

/** `address` with its host replaced by `host` (the name neighbours dial), scheme and port kept. */
export function advertised(address: string, host: string): string {
  const scheme = isSocketAddress(address) ? SOCKET_SCHEME : '';
  return `${scheme}${host}:${address.slice(address.lastIndexOf(':') + 1)}`;
}
