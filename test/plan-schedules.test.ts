// `propipe plan` and schedules: ZB-H1 is priced as its own schedule (B and W runs, W filling the
// bubble, the deferred stashes held), and the recommendations include micro-batches (more of them when
// the bubble is large, 1F1B instead of GPipe when in-flight inputs do not fit). Needs only config.json.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { randomModelConfig } from '../model/hf/init.ts';
import { LARGE_BUBBLE } from '../plan/estimate.ts';
import { propipe } from './support/cli.ts';

const LLAMA2_13B = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 5120, intermediate_size: 13824, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 40, vocab_size: 32000, rms_norm_eps: 1e-5, max_position_embeddings: 4096, tie_word_embeddings: false, torch_dtype: 'bfloat16' };

function configFile(raw: object): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'propipe-plan-sched-'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(raw));
  return path.join(dir, 'config.json');
}
const plan = (args: string[]) => {
  const r = propipe(['plan', ...args], { PROPIPE_LOG_LEVEL: 'warn', PROPIPE_CALIBRATION: '/nonexistent/calibration.json' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};
const PRO8 = ['--train-type', 'llamapro', '--llamapro-new-blocks', '8', '--per-device-train-batch-size', '1', '--max-length', '1024', '--micro-batches', '8', '--workers', '8', '--device', 'a10g', '--quantize', '4bit'];

interface Rank { rank: number; trainable_params: number; backward_seconds: number; backward_input_seconds: number; backward_weight_seconds: number; host_bytes: number; memory_bytes: number; start: number; end: number }
interface Stage { bubble: number; step_seconds: number; ranks: Rank[] }

test('zb1 is priced as ZB-H1: B and W per rank, W fills the bubble, deferred stashes held on the host', () => {
  const cfg = configFile(LLAMA2_13B);
  // Against textbook 1F1B (no slack): ZB-H1's warm-up is textbook 1F1B's.
  const one = JSON.parse(plan(['--model', cfg, ...PRO8, '--schedule', '1f1b', '--pipeline-slack', '0', '--json'])).stages as Stage[];
  const zb = JSON.parse(plan(['--model', cfg, ...PRO8, '--schedule', 'zb1', '--json'])).stages as Stage[];
  let stashed = 0;
  for (let s = 0; s < one.length; s++) {
    // The same split: the planner balances the same per-micro-batch cost.
    assert.deepEqual(zb[s].ranks.map((k) => [k.start, k.end]), one[s].ranks.map((k) => [k.start, k.end]));
    for (const [r, k] of zb[s].ranks.entries()) {
      const f = one[s].ranks[r];
      assert.equal(k.backward_weight_seconds > 0, f.trainable_params > 0, `rank ${r}: a W run exactly where weights train`);
      if (f.backward_seconds === 0) continue;
      // B + W run the nodes of the one backward graph, plus W's own run: never less than 1F1B's backward.
      assert.ok(k.backward_input_seconds + k.backward_weight_seconds >= f.backward_seconds, `rank ${r}`);
      assert.ok(k.backward_input_seconds < f.backward_seconds || k.backward_weight_seconds === 0, `rank ${r}: B is shorter than the whole backward`);
      // Rank r defers up to r W runs and holds their stash (host memory: the Node API keeps no device tensors;
      // a rank whose lowest block trains has no input gradient to compute first, so no stash).
      assert.ok(k.host_bytes >= f.host_bytes, `rank ${r}`);
      if (k.host_bytes > f.host_bytes) stashed++;
      if (r === 0) assert.equal(k.host_bytes, f.host_bytes, 'rank 0 defers nothing');
      assert.equal(k.memory_bytes, f.memory_bytes, 'device memory is unchanged');
    }
    assert.ok(zb[s].bubble <= one[s].bubble, `stage ${s}: bubble ${zb[s].bubble} vs 1F1B ${one[s].bubble}`);
  }
  assert.ok(stashed > 0, 'ranks after the first hold deferred stashes');
  assert.ok(zb.some((st, s) => st.bubble < one[s].bubble - 0.01 && st.step_seconds < one[s].step_seconds), 'W runs fill some of 1F1B’s bubble');
  const text = plan(['--model', cfg, ...PRO8, '--schedule', 'zb1']);
  assert.match(text, /8 × a10g .*, zb1, 8 micro-batches/);
  assert.match(text, /F ms\/mb +B ms\/mb +W ms\/mb +busy s\/step/);
});

test('a large bubble recommends more micro-batches, with the bubble they give and the launch command', () => {
  const cfg = configFile(LLAMA2_13B);
  const doc = JSON.parse(plan(['--model', cfg, ...PRO8, '--json']));
  const bubble = Math.max(...(doc.stages as Stage[]).map((s) => s.bubble));
  assert.ok(bubble > LARGE_BUBBLE, `8 micro-batches over 8 ranks leave a large bubble (${bubble})`);
  const more = doc.alternatives.find((a: { change: string }) => /^\d+ micro-batches per step/.test(a.change));
  assert.ok(more, JSON.stringify(doc.alternatives.map((a: { change: string }) => a.change)));
  const m = Number(/^(\d+) micro-batches/.exec(more.change)![1]);
  assert.ok([16, 32, 64].includes(m));
  assert.match(more.launch, new RegExp(`--micro-batches ${m} `));
  const [, before, after] = /bubble (\d+) % → (\d+) %/.exec(more.change)!.map(Number);
  assert.equal(before, Math.round(bubble * 100));
  assert.ok(after < before);
  // Its plan, asked for directly, has that bubble and more tokens/s.
  const direct = JSON.parse(plan(['--model', cfg, ...PRO8.map((x, i) => (PRO8[i - 1] === '--micro-batches' ? String(m) : x)), '--json']));
  assert.equal(Math.round(Math.max(...(direct.stages as Stage[]).map((s) => s.bubble)) * 100), after);
  assert.ok(direct.stages[0].tokens_per_second > doc.stages[0].tokens_per_second);
  const text = plan(['--model', cfg, ...PRO8]);
  assert.match(text, new RegExp(`- ${m} micro-batches per step \\(bubble ${before} % → ${after} %; ${m / 8}× the tokens per step\\)`));
});

test('GPipe whose in-flight inputs do not fit: the recommendation is 1F1B, which holds at most P micro-batches', () => {
  const { raw } = randomModelConfig({ layers: 4, hidden: 256, heads: 4, kvHeads: 2, intermediate: 688, vocab: 512 });
  const cfg = configFile(raw);
  const args = ['--model', cfg, '--train-type', 'full', '--per-device-train-batch-size', '16', '--max-length', '512', '--micro-batches', '32', '--workers', '2', '--device', 'cpu', '--json'];
  const peak = (schedule: string, extra: string[] = []) => {
    const d = JSON.parse(plan([...args, '--schedule', schedule, ...extra]));
    return { d, bytes: Math.max(...(d.stages as Stage[]).flatMap((s) => s.ranks.map((k) => k.memory_bytes))) };
  };
  const gpipe = peak('gpipe', ['--memory-gb', '1000']).bytes;
  const onef = peak('1f1b', ['--memory-gb', '1000']).bytes;
  assert.ok(gpipe > 1.2 * onef, `GPipe holds 32 inputs in flight: ${gpipe} vs ${onef}`);
  const { d } = peak('gpipe', ['--memory-gb', String((gpipe + onef) / 2 / 2 ** 30)]);
  assert.equal(d.fits, false);
  const alt = d.alternatives.find((a: { change: string }) => a.change.startsWith('--schedule 1f1b'));
  assert.ok(alt, JSON.stringify(d.alternatives.map((a: { change: string }) => a.change)));
  assert.equal(alt.fits, true);
  assert.match(alt.change, /at most 2 micro-batches in flight instead of 32/);
  assert.match(alt.launch, /^propipe launch --workers 2 --schedule 1f1b --micro-batches 32/);
});
