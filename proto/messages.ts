// TypeScript shapes of the proto messages as @grpc/proto-loader delivers them (camelCase, longs as
// numbers, enums as strings).
export type FrameKind = 'FRAME_KIND_UNSPECIFIED' | 'ACTIVATION' | 'GRADIENT' | 'EVAL_ACTIVATION';

export interface TensorMsg {
  dtype: string;
  shape: number[];
  data: Buffer;
}

export interface FrameMsg {
  kind: FrameKind;
  step: number;
  microBatch: number;
  tensor: TensorMsg | null;
  labels: TensorMsg | null;
  stepTokens: number;
  chunk: number;
  chunks: number;
  inputIds: TensorMsg | null;
}

export interface BlockRangeMsg {
  start: number;
  end: number;
  embed: boolean;
  head: boolean;
}

export interface RegisterRequest {
  workerId: string;
  peerAddress: string;
  device: string;
  memoryBytes: number;
}

export interface AssignmentMsg {
  jobId: string;
  rank: number;
  worldSize: number;
  range: BlockRangeMsg;
  nextPeer: string;
  runConfigJson: string;
  natsUrl: string;
  stage: number;
  startStep: number;
  resumeCheckpoint: string;
  schedule: string;
  microBatches: number;
  epoch: number;
  partition: BlockRangeMsg[];
  stageStep: number;
  positionEpoch: number;
  positionIndex: number;
  incarnation: string;
}

export type Directive = 'DIRECTIVE_UNSPECIFIED' | 'CONTINUE' | 'EVALUATE' | 'STOP' | 'REASSIGN' | 'ABORT';

export interface StepReportMsg {
  workerId: string;
  rank: number;
  step: number;
  epoch: number;
  gradSqSum: number;
  lossSum: number;
  klSum: number;
  tokens: number;
  busySeconds: number;
  stepSeconds: number;
  traceJson: string;
  evalLossSum: number;
  evalTokens: number;
  stageSteps: number;
  positionEpoch: number;
  positionIndex: number;
  isEval: boolean;
  evalBatches: number;
  rssBytes: number;
  trainableParams: number;
}

export interface ExportReportMsg {
  workerId: string;
  finalDir: string;
  adapterDir: string;
}

export interface StepDecisionMsg {
  step: number;
  gradNorm: number;
  clipScale: number;
  directive: Directive;
  stage: number;
  stageStep: number;
  save: boolean;
  stageSteps: number;
  evalBatches: number;
}

export interface ShardReportMsg {
  workerId: string;
  rank: number;
  step: number;
  file: string;
  bytes: number;
  sha256: string;
}

export interface AckMsg {
  ok: boolean;
  message: string;
}

export interface JobStatusMsg {
  jobId: string;
  state: string;
  step: number;
  stage: number;
  workers: number;
  lastLoss: number;
  lastCheckpoint: string;
}

export interface StageInfoMsg {
  stage: number;
  effectiveStep: number;
  trainable: string[];
}
