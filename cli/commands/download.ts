import path from 'node:path';
import { downloadModel } from '../../hub/download.ts';
import { RUN_FILES } from '../../hub/select.ts';
import { UsageError } from '../args.ts';
import type { Command } from '../command.ts';

export const downloadCommand: Command = {
  name: 'download',
  summary: 'fetch a model from the Hugging Face Hub (HF_TOKEN, HF_ENDPOINT): the files a run needs, checksummed, resumable',
  usage: 'propipe download REPO [--revision R] [--out DIR] [--include GLOB ...]',
  flags: {
    revision: { type: 'string', description: 'branch, tag or commit', default: 'main' },
    out: { type: 'string', description: 'target directory (default: models/<REPO>)' },
    include: { type: 'string', multiple: true, description: `only files matching these patterns (default: ${RUN_FILES.join(' ')})` },
    model: { type: 'string', description: "the repository, as ms-swift's --model (instead of REPO)" },
    json: { type: 'boolean', description: 'print the summary as JSON' },
  },
  async run(f) {
    const repo = f.positionals[0] ?? f.str('model');
    if (!repo) throw new UsageError('name the repository, e.g. propipe download Qwen/Qwen2.5-0.5B');
    if (f.positionals.length > 1) throw new UsageError(`one repository at a time, got ${f.positionals.join(' ')} (patterns go after --include)`);
    if (!/^[\w.-]+(\/[\w.-]+)?$/.test(repo)) throw new UsageError(`'${repo}' is not a Hub repository name like owner/name`);
    const out = f.str('out') ?? path.join('models', repo);
    const r = await downloadModel({
      repo,
      revision: f.str('revision'),
      out,
      include: f.list('include'),
      hubUrl: process.env.HF_ENDPOINT?.replace(/\/+$/, '') || undefined,
      token: process.env.HF_TOKEN || undefined,
    });
    if (f.bool('json')) console.log(JSON.stringify(r));
    else {
      const kept = r.files.filter((x) => x.status === 'kept').length;
      console.log(`${r.repo}@${r.revision} (${r.commit.slice(0, 12)}) → ${r.dir}: ${r.files.length} files verified, ${kept} already present, ${(r.bytesFetched / 1e6).toFixed(1)} MB fetched`);
      console.log(`next: propipe sft --model ${r.dir} --dataset train.jsonl --output_dir out ...`);
    }
  },
};
