// The ports of a one-rank run, in memory: the coordinator's calls go straight to its service, there is
// no neighbour to exchange frames with, and stage signals are delivered by the service itself. No
// socket, no NATS, no second process — and the same job and rank loop as a pipeline.
import type { CoordinatorService } from '../coordinator/service.ts';
import type { OutFrame } from '../proto/frames.ts';
import type { CoordinatorPort, RankTransport } from '../worker/assignment.ts';
import { Mailbox } from '../worker/mailbox.ts';
import type { FrameExpectation } from '../worker/peer.ts';

export function inProcessCoordinator(service: CoordinatorService): CoordinatorPort {
  return {
    register: (req) => service.register(req),
    reportStep: (req) => service.reportStep(req),
    commitShard: async (req) => service.commitShard(req),
    status: async () => service.status(),
    currentStage: async () => service.currentStage(),
    reportExport: async (req) => service.reportExport(req),
  };
}

/** One rank has no neighbours: nothing is sent, nothing arrives. */
export class NoNeighbours implements RankTransport {
  readonly mailbox = new Mailbox();
  expect: FrameExpectation = () => null;

  sendDown(f: OutFrame): Promise<void> {
    throw new Error(`a single rank has no rank below to send ${f.kind} of step ${f.step} to`);
  }

  linkUp(address: string): null {
    throw new Error(`a single rank has no rank above (asked for ${address})`);
  }
}
