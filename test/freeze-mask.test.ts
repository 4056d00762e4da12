// One freeze-mask type: the stage plan makes it, the partition planner and the ranks read it, the wire
// carries it; one function says which layer a tensor belongs to.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import { planExpansion } from '../model/expand/expand.ts';
import { randomModelConfig } from '../model/hf/init.ts';
import { layerOf, splitLayerName } from '../model/llama/param-specs.ts';
import { maskFromWire, maskToWire } from '../proto/mask.ts';
import { PROTO_FILE } from '../proto/codegen.ts';
import type { StageInfoMsg } from '../proto/messages.ts';
import { describeMask, maskCovers, type FreezeMask } from '../recipe/freeze-mask.ts';
import { parseRunConfig } from '../recipe/run-config.ts';
import { planStages, type LayerKind, type StagePlan } from '../recipe/stages.ts';
import { backwardRanks } from '../worker/rank.ts';

const base = { model: 'm', dataset: 'd', output_dir: 'o' };
const { config } = randomModelConfig({ layers: 8, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300 });
const originals: LayerKind[] = Array.from({ length: 8 }, (_, i) => ({ kind: 'original', source: i }));

test('layerOf: decoder layers by index (LoRA factors included), the ends by name, anything else refused', () => {
  assert.equal(layerOf('model.layers.12.mlp.down_proj.weight'), 12);
  assert.equal(layerOf('model.layers.3.self_attn.q_proj.lora_B.weight'), 3);
  assert.equal(layerOf('model.embed_tokens.weight'), 'embed');
  assert.equal(layerOf('model.norm.weight'), 'norm');
  assert.equal(layerOf('lm_head.weight'), 'head');
  assert.deepEqual(splitLayerName('model.layers.7.input_layernorm.weight'), { layer: 7, rest: 'input_layernorm.weight' });
  assert.equal(splitLayerName('model.norm.weight'), null);
  assert.throws(() => layerOf('transformer.h.0.attn.weight'), /not a tensor name of a Llama-family model/);
});

/** The mask and the tensor list of every stage describe the same thing. */
function assertMaskMatchesTensors(plan: StagePlan): void {
  for (const s of plan.stages) {
    for (const n of s.trainable) assert.ok(maskCovers(s.mask, n), `stage ${s.index}: ${n} trains but the mask (${describeMask(s.mask)}) does not cover it`);
    s.mask.layers.forEach((state, l) => {
      const own = s.trainable.filter((n) => layerOf(n) === l);
      if (state === 'frozen') assert.equal(own.length, 0, `stage ${s.index} layer ${l}`);
      if (state === 'lora') assert.ok(own.length > 0 && own.every((n) => /\.lora_[AB]\.weight$/.test(n)), `stage ${s.index} layer ${l}: ${own}`);
      if (state === 'trainable') assert.ok(own.some((n) => !/\.lora_[AB]\.weight$/.test(n)), `stage ${s.index} layer ${l}`);
    });
    assert.equal(s.mask.embed, s.trainable.includes('model.embed_tokens.weight'));
    assert.equal(s.mask.head, s.trainable.includes('model.norm.weight'));
  }
}

test('the stage plan gives every stage a mask: full, LoRA, LLaMA Pro with LoRA on the regions, head in the last stage', () => {
  const full = planStages(parseRunConfig({ ...base, train_type: 'full', blocks_per_group: 3 }), config, originals);
  assertMaskMatchesTensors(full);
  assert.equal(describeMask(full.stages[0].mask), 'embed, 0-2 trainable');
  assert.equal(describeMask(full.stages[2].mask), '6-7 trainable, head');

  const lora = planStages(parseRunConfig({ ...base, train_type: 'lora', lora_rank: 2, blocks_per_group: 4, train_head_last_stage: true }), config, originals);
  assertMaskMatchesTensors(lora);
  assert.deepEqual(lora.stages.map((s) => describeMask(s.mask)), ['0-3 lora', '4-7 lora, head']);

  const { config: c6 } = randomModelConfig({ layers: 6, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300 });
  const layout = planExpansion(4, 2).map((l) => ({ kind: l.kind, source: l.source }));
  const pro = planStages(parseRunConfig({ ...base, train_type: 'llamapro', llamapro_new_blocks: 2, lora_rank: 2, lora_targets: 'q_proj' }), c6, layout);
  assertMaskMatchesTensors(pro);
  assert.deepEqual(pro.stages.map((s) => s.mask.layers), [
    ['lora', 'lora', 'trainable', 'frozen', 'frozen', 'frozen'],
    ['frozen', 'frozen', 'frozen', 'lora', 'lora', 'trainable'],
  ]);
});

test('ranks run backward from the lowest one the mask trains', () => {
  const partition = [{ start: 0, end: 3, embed: true, head: false }, { start: 3, end: 6, embed: false, head: false }, { start: 6, end: 8, embed: false, head: true }];
  const mask = (layers: FreezeMask['layers'], head = false): FreezeMask => ({ layers, embed: false, head });
  const F = 'frozen' as const;
  assert.deepEqual(backwardRanks(partition, mask([F, F, F, F, 'lora', F, F, F])), [false, true, true]);
  assert.deepEqual(backwardRanks(partition, mask([F, F, F, F, F, F, F, F], true)), [false, false, true]);
  assert.deepEqual(backwardRanks(partition, mask(['trainable', F, F, F, F, F, F, F])), [true, true, true]);
});

test('the mask survives the gRPC wire (StageInfo, encoded and decoded as proto-loader does)', () => {
  const plan = planStages(parseRunConfig({ ...base, train_type: 'lora', lora_rank: 2, blocks_per_group: 4, train_head_last_stage: true }), config, originals);
  const mask = plan.stages[1].mask;
  // The method definition gRPC itself serializes and deserializes CurrentStage with (options of proto/load.ts).
  const def = protoLoader.loadSync(PROTO_FILE, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const method = (def['propipe.v1.Coordinator'] as protoLoader.ServiceDefinition).CurrentStage;
  const bytes = method.responseSerialize({ stage: 1, effectiveStep: 9, trainable: plan.stages[1].trainable, mask: maskToWire(mask) });
  const got = method.responseDeserialize(bytes) as StageInfoMsg;
  assert.deepEqual(got.trainable, plan.stages[1].trainable);
  assert.deepEqual(maskFromWire(got.mask), mask);
  assert.throws(() => maskFromWire(null), /without its freeze mask.*update both/);
});
