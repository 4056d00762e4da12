// The devices `propipe plan` knows: published peak figures for GPUs (sources in the README's table),
// measured figures for this machine's CPU (`propipe plan --calibrate`), and the efficiencies that turn
// peaks into predicted time. Every field can be overridden from the command line.

export type Phase = 'forward' | 'recompute' | 'inputGrad' | 'weightGrad';
export const PHASES: readonly Phase[] = ['forward', 'recompute', 'inputGrad', 'weightGrad'];

export interface DeviceProfile {
  name: string;
  kind: 'cpu' | 'gpu';
  /** Memory a worker may fill (device memory on a GPU; the worker's --memory-gb on CPU). */
  memoryBytes: number;
  /** Peak of the float32 MatMul path ONNX Runtime uses (TF32 tensor cores on GPUs), FLOP/s. */
  matmulFlops: number;
  /** Peak memory bandwidth, bytes/s (element-wise ops are bound by it). */
  bandwidth: number;
  /** Bytes/s of element-wise ops that evaluate exp/log/sigmoid (Softmax, Sigmoid, ...): compute-bound on a CPU. */
  mathBandwidth: number;
  /** Fraction of both peaks each phase reaches (calibrated on CPU, assumed on GPUs). */
  efficiency: Record<Phase, number>;
  /** Fixed cost per executed op (kernel launch and ONNX Runtime dispatch), seconds. */
  opSeconds: number;
  /** Host <-> device copies per run (PCIe), bytes/s; Infinity on CPU. */
  hostLink: number;
  /** Host AdamW + the global norm's sum of squares, seconds per trainable parameter per step. */
  optimizerSecondsPerParam: number;
  /** CPU: a micro-batch's gradients added to the step's running sum in the backward run (an Add, copied out), seconds per parameter. */
  accumulateSecondsPerParam: number;
  /** Activation/gradient frames between neighbouring ranks, bytes/s. */
  peerLink: number;
  /** Fixed cost per session run (feeds, output copies into JS), seconds. */
  runSeconds: number;
  /** Device memory the runtime takes before any weight (CUDA context, cuBLAS workspace); 0 on CPU. */
  deviceRuntimeBytes: number;
  source: string;
}

const GiB = 2 ** 30;
const T = 1e12;

/**
 * Host-side figures every device shares: the optimizer runs in Node on the host and frames go over
 * gRPC. Measured on this machine: AdamW + sum of squares 6.9–7 ns and the gradient sum 2.5–3 ns per
 * parameter (bench/plan-profile.ts, 7.9 M parameters in 75 tensors, CPU time), bench:transfer's 16 MB
 * peer frames 670 MB/s.
 */
// accumulate: this machine's in-graph Add of a 4 M-float gradient into its running sum, one thread, 1.25 ns.
const HOST = { optimizerSecondsPerParam: 7e-9, accumulateSecondsPerParam: 1.3e-9, peerLink: 670e6, runSeconds: 1e-3 };

/** Assumed efficiencies of ONNX Runtime's CUDA kernels on unfused fp32 graphs (override with --efficiency). */
const GPU_EFFICIENCY: Record<Phase, number> = { forward: 0.45, recompute: 0.45, inputGrad: 0.4, weightGrad: 0.4 };

const gpu = (name: string, memGiB: number, tf32: number, bandwidth: number, hostLink: number, source: string): DeviceProfile => ({
  name,
  kind: 'gpu',
  memoryBytes: memGiB * GiB,
  matmulFlops: tf32 * T,
  bandwidth,
  // A GPU's special-function units keep these ops memory-bound.
  mathBandwidth: bandwidth,
  efficiency: { ...GPU_EFFICIENCY },
  opSeconds: 10e-6,
  hostLink,
  ...HOST,
  deviceRuntimeBytes: 1.5 * GiB,
  source,
});

/** Dense (no sparsity) TF32 tensor-core peaks and memory bandwidth from NVIDIA's datasheets. */
export const GPUS: Record<string, DeviceProfile> = {
  a10g: gpu('a10g', 24, 62.5, 600e9, 32e9, 'NVIDIA A10 datasheet (A10G is the AWS g5 variant): TF32 62.5 TFLOPS dense, 600 GB/s GDDR6, 24 GB, PCIe Gen4 x16'),
  l4: gpu('l4', 24, 60, 300e9, 32e9, 'NVIDIA L4 datasheet: TF32 60 TFLOPS dense (120 with sparsity), 300 GB/s, 24 GB, PCIe Gen4 x16'),
  'a100-40': gpu('a100-40', 40, 156, 1555e9, 32e9, 'NVIDIA A100 datasheet: TF32 156 TFLOPS dense, 1555 GB/s HBM2 (40 GB), PCIe Gen4'),
  'a100-80': gpu('a100-80', 80, 156, 2039e9, 32e9, 'NVIDIA A100 datasheet: TF32 156 TFLOPS dense, 2039 GB/s HBM2e (80 GB SXM), PCIe Gen4'),
  h100: gpu('h100', 80, 494.5, 3350e9, 64e9, 'NVIDIA H100 SXM datasheet: TF32 494.5 TFLOPS dense (989 with sparsity), 3.35 TB/s HBM3, 80 GB, PCIe Gen5'),
};

export const DEVICE_NAMES = ['cpu', ...Object.keys(GPUS)] as const;

/**
 * One thread of this machine before calibration (what the coordinator balances CPU workers with): the
 * figures of `propipe plan --calibrate --threads 1` in CPU time (tasks/calibrate.ts), rounded from six
 * calibrations at load averages of 6–8 (MatMul 96–102 GFLOP per CPU second, element-wise chain
 * 71–79 GB/s, Softmax/Sigmoid 17–23 GB/s, efficiencies 0.80–0.98 / 0.64–0.86 / 0.68–0.86). The ratios
 * between them are what balance ranks: a slow element-wise rate (8 GB/s, the DRAM figure this profile
 * had) priced the loss and the input gradients ~9× too high against MatMuls and split a 20-block
 * LLaMA Pro job 10 | 10 where rank 0's forward + recompute made it 1.2× rank 1.
 */
export const CPU_DEFAULT: Omit<DeviceProfile, 'memoryBytes'> = {
  name: 'cpu',
  kind: 'cpu',
  matmulFlops: 97e9,
  bandwidth: 73e9,
  mathBandwidth: 20e9,
  efficiency: { forward: 0.9, recompute: 0.9, inputGrad: 0.75, weightGrad: 0.8 },
  opSeconds: 0.3e-6,
  hostLink: Infinity,
  ...HOST,
  deviceRuntimeBytes: 0,
  source: 'uncalibrated defaults (run `propipe plan --calibrate` on the machine that trains)',
};

/**
 * The profile the coordinator prices a registered worker with: the memory model follows the worker's
 * device (`--device cpu|cuda`: RSS of one process, or device memory with AdamW state and JS copies on the
 * host and the CUDA runtime's allowance), the limit is its `--memory-gb`. A CUDA worker does not say which
 * GPU it is: its times (which only balance the ranks) use the A10G's figures, the users' GPU.
 * One object per (device, memory), so the stage model's per-device tables are shared by equal workers.
 */
export function workerDevice(device: string, memoryBytes: number): DeviceProfile {
  const key = `${device}:${memoryBytes}`;
  let d = WORKER_DEVICES.get(key);
  if (!d) {
    if (!['', 'cpu', 'cuda'].includes(device)) throw new Error(`worker device '${device}' is not cpu or cuda: start the worker with --device cpu or --device cuda`);
    d = device === 'cuda' ? { ...GPUS.a10g, name: 'cuda', memoryBytes } : { ...CPU_DEFAULT, memoryBytes };
    if (WORKER_DEVICES.size > 256) WORKER_DEVICES.clear();
    WORKER_DEVICES.set(key, d);
  }
  return d;
}
const WORKER_DEVICES = new Map<string, DeviceProfile>();
