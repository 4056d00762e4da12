// `propipe plan`: op counts come from the real graphs, every memory figure traces to its formula, the
// JSON has what scripts read, what does not fit says what would, calibration files are used, and bad
// input gets a clear error. Needs only a config.json (a 13B one here: no weights anywhere).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { randomModelConfig } from '../model/hf/init.ts';
import { layerParamSpecs } from '../model/llama/param-specs.ts';
import { calibrate } from '../tasks/calibrate.ts';
import { RUNTIME } from '../plan/runtime.ts';
import { blockCosts } from '../plan/unit-costs.ts';
import { cpuProfile } from '../plan/calibration.ts';
import { parseFlags } from '../cli/args.ts';
import { planCommand } from '../cli/commands/plan.ts';
import { propipe } from './support/cli.ts';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-plan-'));
const LLAMA2_13B = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 5120, intermediate_size: 13824, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 40, vocab_size: 32000, rms_norm_eps: 1e-5, max_position_embeddings: 4096, tie_word_embeddings: false, torch_dtype: 'float16' };
const H = 5120;
const I = 13824;
const BLOCK_PARAMS = 4 * H * H + 3 * H * I + 2 * H;

function config13b(): string {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(LLAMA2_13B));
  return path.join(dir, 'config.json');
}

// No calibration of the machine running the tests: the built-in cpu figures.
const plan = (args: string[], env: Record<string, string> = {}) => propipe(['plan', ...args], { PROPIPE_LOG_LEVEL: 'warn', PROPIPE_CALIBRATION: '/nonexistent/calibration.json', ...env });
const PRO8 = ['--train-type', 'llamapro', '--llamapro-new-blocks', '8', '--per-device-train-batch-size', '1', '--max-length', '512', '--micro-batches', '8'];

test('op counts come from the graphs: a block forward is 2·tokens·(linear params) + the attention products; W of a trainable block is the linears again', () => {
  const { config } = randomModelConfig({ layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 352, vocab: 256 });
  const dims = { batch: 2, seq: 32 };
  const tokens = dims.batch * dims.seq;
  const linear = layerParamSpecs(config, 0).filter((p) => p.kind === 'linear_weight').reduce((a, p) => a + p.shape[0] * p.shape[1], 0);
  const attention = 2 * 2 * dims.batch * config.numHeads * dims.seq * dims.seq * config.headDim; // QKᵀ and PV
  const fwd = blockCosts(config, { state: 'forward', lora: [], trains: 'block' }, 0, dims);
  assert.equal(fwd.forward.flops, 2 * tokens * linear + attention);
  // Transcendental element-wise bytes (priced at their own rate): the attention Softmax and SwiGLU's Sigmoid, in + out.
  assert.equal(fwd.forward.mathBytes, 2 * 4 * (dims.batch * config.numHeads * dims.seq * dims.seq + tokens * config.intermediateSize));
  const train = blockCosts(config, { state: 'train', lora: [], trains: 'block' }, 0, dims);
  assert.equal(train.weightGrad.flops, 2 * tokens * linear);
  const cross = blockCosts(config, { state: 'cross', lora: [], trains: 'block' }, 0, dims);
  assert.equal(cross.weightGrad.flops, 0);
  assert.ok(cross.inputGrad.flops >= 2 * tokens * linear, 'dX passes every linear');
  // LoRA on q_proj adds rank-r products only.
  const lora = blockCosts(config, { state: 'train', lora: ['self_attn.q_proj'], trains: 'lora' }, 8, dims);
  assert.equal(lora.forward.flops - fwd.forward.flops, 2 * tokens * 8 * (128 + 128));
  assert.ok(lora.weightGrad.flops > 0 && lora.weightGrad.flops < train.weightGrad.flops / 10);
});

test('plan 13B LLaMA Pro +8 on 8 × A10G from config.json alone: per-stage ranks with memory, time and fits, formulas traceable', () => {
  const r = plan(['--model', config13b(), ...PRO8, '--workers', '8', '--device', 'a10g', '--frozen-dtype', 'bf16', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.stages.length, 2, 'bottom-up over two groups of four new blocks');
  for (const s of doc.stages) {
    assert.equal(s.ranks.length, 8);
    assert.ok(s.step_seconds > 0 && s.tokens_per_second > 0 && s.bubble > 0 && s.bubble < 1);
    assert.equal(s.ranks[0].start, 0);
    assert.equal(s.ranks[7].end, 48);
    for (const k of s.ranks) {
      assert.ok(Math.abs(Object.values(k.memory as Record<string, number>).reduce((a, b) => a + b, 0) - k.memory_bytes) <= 1);
      assert.equal(k.fits, k.memory_bytes <= doc.memory_limit_bytes);
      assert.equal(k.memory.optimizer, 0, 'AdamW state lives on the host');
      assert.ok(k.step_seconds > 0);
    }
  }
  // A rank's trainable weights are the 4 new blocks' float32 parameters it holds (sent to the device per run).
  const s0 = doc.stages[0];
  const trains = s0.ranks.reduce((a: number, k: { memory: { trainableWeights: number } }) => a + k.memory.trainableWeights, 0);
  assert.equal(trains, 4 * 4 * BLOCK_PARAMS);
  // The first stage trains the new blocks after originals 4, 9, 14, 19 (layers 5, 11, 17, 23).
  assert.deepEqual(s0.layers, [5, 11, 17, 23]);
  // Frozen weights of a rank that holds only original blocks and trains nothing: bf16 × the session copies.
  type PlannedRank = { start: number; end: number; memory: { trainableWeights: number; frozenWeights: number } };
  const idle = doc.stages[1].ranks.find((k: PlannedRank) => k.memory.trainableWeights === 0 && k.start > 0);
  assert.ok(idle, 'stage 2 has a forward-only rank');
  // Originals in bf16; new blocks trained in stage 1 stay float32 (a later stage never starts from rounded weights).
  const NEW = new Set([5, 11, 17, 23, 29, 35, 41, 47]);
  let bytes = 0;
  for (let l = idle.start; l < idle.end; l++) bytes += (NEW.has(l) ? 4 : 2) * BLOCK_PARAMS;
  // One resident copy per process (issue 9), or, with per-session copies, the forward session's only
  // (below every trainable block there is no backward session).
  const copies = RUNTIME.sharedWeightCopies > 0 ? RUNTIME.sharedWeightCopies : RUNTIME.forwardSessionCopies;
  assert.ok(Math.abs(idle.memory.frozenWeights - bytes * copies) < 1e-6 * bytes, JSON.stringify(idle));
  assert.ok(doc.device_profile.source.includes('A10'));
});

test('what does not fit says so and what would: more workers, 4-bit, smaller micro-batches; the text names the launch command', () => {
  const cfg = config13b();
  const r = plan(['--model', cfg, ...PRO8, '--workers', '2', '--device', 'a10g', '--frozen-dtype', 'fp32', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.fits, false, 'fp32 frozen 13B (52 GB of weights) does not fit 2 × 24 GB');
  assert.ok(doc.stages.some((s: { refused: unknown }) => s.refused !== null));
  assert.ok(doc.alternatives.length > 0);
  for (const a of doc.alternatives) {
    assert.equal(a.fits, true);
    assert.match(a.launch, /^propipe coordinator --workers \d+ .*--micro-batches \d+/);
  }
  assert.ok(doc.alternatives.some((a: { change: string }) => /4-bit/.test(a.change)));
  const text = plan(['--model', cfg, ...PRO8, '--workers', '2', '--device', 'a10g', '--frozen-dtype', 'fp32']);
  assert.match(text.stdout, /does NOT fit/);
  assert.match(text.stdout, /What fits:/);
  assert.match(text.stdout, /rank +blocks +frozen +trainable +grads +AdamW +activations +teacher +runtime +total/);
  // Enough memory: it fits and gives the command to run.
  const big = plan(['--model', cfg, ...PRO8, '--workers', '2', '--device', 'a10g', '--frozen-dtype', 'fp32', '--memory-gb', '1000']);
  assert.match(big.stdout, /fits: every stage fits every rank/);
  assert.match(big.stdout, /launch: propipe coordinator --workers 2 /);
});

test('the cpu profile comes from the calibration file: doubled efficiencies halve the compute time', async () => {
  const dir = tmp();
  const cal = await calibrate({ threads: 1, layers: 1, hidden: 128, batch: 1, seq: 16 });
  for (const [k, v] of Object.entries(cal.efficiency)) assert.ok(Number.isFinite(v) && v > 0, `${k} ${v}`);
  assert.ok(cal.matmul_flops > 1e8 && cal.bandwidth > 1e7);
  // Measured in CPU time; one thread gives no speed-up, so CPU and wall rates are the same.
  assert.equal(cal.clock, 'cpu');
  assert.equal(cal.parallelism, 1);
  assert.ok((cal.accumulate_seconds_per_param ?? 0) > 0 && cal.optimizer_seconds_per_param > 0);
  // Two threads that ran 1.6× faster than one: wall rates are 1.6× the CPU rates; the CPU-seconds profile undoes it.
  const two = { ...cal, parallelism: 1.6 };
  assert.ok(Math.abs(cpuProfile(two, 1, 'cpu').matmulFlops - cal.matmul_flops / 1.6) < 1e-9 * cal.matmul_flops);
  assert.equal(cpuProfile(two, 1).matmulFlops, cal.matmul_flops);
  const file = path.join(dir, 'cal.json');
  const fast = path.join(dir, 'fast.json');
  const slowCal = { ...cal, op_seconds: 0, run_seconds: 0, optimizer_seconds_per_param: 0, efficiency: { forward: 0.5, recompute: 0.5, inputGrad: 0.5, weightGrad: 0.5 } };
  fs.writeFileSync(file, JSON.stringify(slowCal));
  fs.writeFileSync(fast, JSON.stringify({ ...slowCal, efficiency: { forward: 1, recompute: 1, inputGrad: 1, weightGrad: 1 } }));
  const args = ['--model', config13b(), ...PRO8, '--workers', '8', '--memory-gb', '1000', '--json'];
  const slow = JSON.parse(plan(args, { PROPIPE_CALIBRATION: file }).stdout);
  const quick = JSON.parse(plan([...args, '--calibration', fast]).stdout);
  const ratio = slow.stages[0].ranks[1].backward_seconds / quick.stages[0].ranks[1].backward_seconds;
  assert.ok(Math.abs(ratio - 2) < 0.05, `ratio ${ratio}`);
  assert.match(slow.device_profile.source, /^calibrated /);
  fs.writeFileSync(file, JSON.stringify({ version: 1, efficiency: 'fast' }));
  const bad = plan(args, { PROPIPE_CALIBRATION: file });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /is not a propipe calibration .*run 'propipe plan --calibrate' again/);
});

test('plan --calibrate --model probes blocks of that model and run type (LoRA adapters train in a LoRA probe)', () => {
  const dir = tmp();
  const model = path.join(dir, 'config.json');
  const [hidden, inter, heads, kv, rank] = [64, 160, 4, 2, 4];
  fs.writeFileSync(model, JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: hidden, intermediate_size: inter, num_hidden_layers: 4, num_attention_heads: heads, num_key_value_heads: kv, vocab_size: 256, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 64, tie_word_embeddings: false, hidden_act: 'silu' }));
  const file = path.join(dir, 'cal.json');
  const run = ['--model', model, '--train-type', 'lora', '--lora-rank', String(rank), '--per-device-train-batch-size', '1', '--max-length', '16', '--threads', '1'];
  const out = plan(['--calibrate', ...run, '--calibration', file]);
  assert.equal(out.status, 0, out.stderr);
  const probe = JSON.parse(fs.readFileSync(file, 'utf8')).probe;
  assert.deepEqual({ hidden: probe.hidden, intermediate: probe.intermediate, heads: probe.heads, kv_heads: probe.kv_heads, lora_rank: probe.lora_rank, batch: probe.batch, seq: probe.seq }, { hidden, intermediate: inter, heads, kv_heads: kv, lora_rank: rank, batch: 1, seq: 16 });
  // Only the adapters of the probe's blocks train: rank · (in + out) per linear, 7 linears a block.
  const kvOut = (hidden / heads) * kv;
  const linears: [number, number][] = [[hidden, hidden], [hidden, kvOut], [hidden, kvOut], [hidden, hidden], [hidden, inter], [hidden, inter], [inter, hidden]];
  assert.equal(probe.trainable_params, probe.layers * linears.reduce((a, [i, o]) => a + rank * (i + o), 0));
  const used = JSON.parse(plan(['--model', model, '--train-type', 'lora', '--lora-rank', String(rank), '--json'], { PROPIPE_CALIBRATION: file }).stdout);
  assert.match(used.device_profile.source, /probe: blocks of hidden 64, LoRA rank 4/);
});

test('bad input gets a clear error', async () => {
  const cfg = config13b();
  const dev = plan(['--model', cfg, '--workers', '2', '--device', 'tpu']);
  assert.equal(dev.status, 2);
  assert.match(dev.stderr, /--device must be one of cpu, a10g, l4, a100-40, a100-80, h100, got 'tpu'.*\nRun 'propipe plan --help'/s);
  // The rest in process (the same command object the binary runs).
  const run = (args: string[]) => planCommand.run(parseFlags(args, planCommand.flags));
  await assert.rejects(run(['--model', cfg, '--workers', '41', '--train-type', 'full']), /41 workers for 40 blocks: .*use at most 40 workers/);
  await assert.rejects(run(['--model', cfg, '--frozen-dtype', 'int3']), /frozen_dtype: Invalid option: expected one of "auto"|"fp32"|"fp16"|"bf16"/);
  await assert.rejects(run(['--model', path.join(tmp(), 'nothing')]), /config\.json: not found; is .* a Hugging Face model directory\?/);
  await assert.rejects(run(['--model', cfg, '--device', 'a10g', '--efficiency', 'forward=2']), /--efficiency: '2' is not a fraction in \(0, 1\]/);
  await assert.rejects(run(['--model', cfg, '--device', 'a10g', '--weight-copies', '0']), /--weight-copies must be a positive number/);
});
