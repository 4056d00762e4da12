// Which files of a Hub model repository a training run needs: the config, the safetensors weights and
// their index, and the tokenizer and generation files; or, with --include, the files matching the
// user's patterns.
import { CARRIED_FILES } from '../model/hf/carried-files.ts';

/** Top-level files a run reads: config.json, the weights, and what an export carries along. */
export const RUN_FILES = ['config.json', '*.safetensors', '*.safetensors.index.json', ...CARRIED_FILES];

/**
 * fnmatch-style patterns as huggingface-cli's --include takes them: `*` matches any run of characters
 * (slashes included), `?` one character, `[abc]` a set.
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        re += `[${body.startsWith('!') ? '^' + body.slice(1) : body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The paths to fetch. Default patterns match top-level files only (not e.g. original/*.pth). */
export function selectFiles(paths: readonly string[], include: readonly string[] = []): string[] {
  if (include.length > 0) {
    const res = include.map(globToRegExp);
    return paths.filter((p) => res.some((r) => r.test(p)));
  }
  const res = RUN_FILES.map(globToRegExp);
  return paths.filter((p) => !p.includes('/') && res.some((r) => r.test(p)));
}
