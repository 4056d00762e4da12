// ms-swift's argument names for the LLaMA Pro flow (the seed's `swift sft` command line), mapped onto
// propipe's run config, so a command copied from ms-swift runs unchanged but for the program name.
import fs from 'node:fs';
import path from 'node:path';

export type SwiftKind = 'number' | 'boolean' | 'string';

/** ms-swift name → what it sets in the run config, with its meaning (shown by `--help`). */
export const SWIFT_ARGS: Record<string, { kind: SwiftKind; sets: string; help: string }> = {
  use_llamapro: { kind: 'boolean', sets: 'train_type', help: 'ms-swift: train LLaMA Pro blocks (= train_type llamapro; 4 new blocks unless llamapro_num_new_blocks is given or the model is already expanded)' },
  llamapro_num_new_blocks: { kind: 'number', sets: 'llamapro_new_blocks', help: 'ms-swift: new blocks to insert (= llamapro_new_blocks)' },
  llamapro_num_groups: { kind: 'number', sets: 'llamapro_groups', help: 'ms-swift: groups the original blocks are split into (= llamapro_groups)' },
  llamapro_num_target_modules: { kind: 'number', sets: 'blocks_per_group', help: 'new blocks unfrozen together in each stage (= blocks_per_group)' },
  num_train_epochs_per_stage: { kind: 'number', sets: 'epochs_per_stage', help: 'epochs each stage trains (= epochs_per_stage)' },
  target_modules: { kind: 'string', sets: 'lora_targets', help: 'ms-swift: LoRA target modules, e.g. all-linear (= lora_targets)' },
};

/** ms-swift's default for llamapro_num_new_blocks. */
const SWIFT_NEW_BLOCKS = 4;

/**
 * Rewrites ms-swift keys into run-config keys. A key given under both names with different values is
 * an error naming both, so that nothing is silently dropped.
 */
export function resolveSwiftKeys(input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) if (!(k in SWIFT_ARGS)) out[k] = v;
  const set = (alias: string, key: string, value: unknown) => {
    if (key in out && out[key] !== value) throw new Error(`${alias} ${JSON.stringify(input[alias])} and ${key} ${JSON.stringify(out[key])} disagree: give one of them`);
    out[key] = value;
  };
  for (const [alias, spec] of Object.entries(SWIFT_ARGS)) {
    if (!(alias in input) || alias === 'use_llamapro') continue;
    set(alias, spec.sets, input[alias]);
  }
  if ('use_llamapro' in input) {
    if (input.use_llamapro === true) {
      set('use_llamapro', 'train_type', 'llamapro');
      const expanded = typeof out.model === 'string' && fs.existsSync(path.join(out.model, 'llama_pro.json'));
      if (!('llamapro_new_blocks' in out) && !expanded) out.llamapro_new_blocks = SWIFT_NEW_BLOCKS;
    } else if (input.use_llamapro === false) {
      // propipe's default train_type is llamapro, so "not LLaMA Pro" must say what instead.
      if (!('train_type' in out) || out.train_type === 'llamapro') throw new Error('use_llamapro false: give train_type full or lora (propipe trains LLaMA Pro blocks by default)');
    } else throw new Error(`use_llamapro must be true or false, got ${JSON.stringify(input.use_llamapro)}`);
  }
  return out;
}

/**
 * Whether an ms-swift model_type names the family of config.json's model_type: ms-swift names the
 * release (llama2, llama3_1, qwen2_5, mistral), HF's config the architecture family (llama, qwen2).
 */
export function modelTypeMatches(given: string, configType: string): boolean {
  const g = given.toLowerCase().replace(/-/g, '_');
  const c = configType.toLowerCase();
  if (g === c) return true;
  if (!g.startsWith(c)) return false;
  // What follows the family must be a release number (llama3_1), not another family (qwen2_moe, qwen2_vl).
  return /^[\d_.]+$/.test(g.slice(c.length));
}

export function checkModelType(given: string | undefined, raw: Record<string, unknown>, modelDir: string): void {
  if (given === undefined) return;
  const actual = typeof raw.model_type === 'string' ? raw.model_type : '';
  if (!modelTypeMatches(given, actual)) {
    throw new Error(`model_type '${given}' does not match ${path.join(modelDir, 'config.json')}, whose model_type is '${actual || '(none)'}': drop model_type, or point model at a ${given} checkpoint`);
  }
}
