// The RFC 6902 operations that turn one manifest into another: what an overlay's `patches:` hold, so
// the overlays are computed from the renderer rather than written by hand.
export interface PatchOp {
  op: 'add' | 'remove' | 'replace';
  path: string;
  value?: unknown;
}

const escape = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function jsonDiff(from: unknown, to: unknown, at = ''): PatchOp[] {
  if (isObject(from) && isObject(to)) {
    const ops: PatchOp[] = [];
    for (const k of Object.keys(from)) if (!(k in to)) ops.push({ op: 'remove', path: `${at}/${escape(k)}` });
    for (const [k, v] of Object.entries(to)) ops.push(...(k in from ? jsonDiff(from[k], v, `${at}/${escape(k)}`) : [{ op: 'add' as const, path: `${at}/${escape(k)}`, value: v }]));
    return ops;
  }
  // Lists of objects of equal length change element by element (e.g. one container); other lists
  // (command arguments) are replaced whole, which reads better than edits by index.
  if (Array.isArray(from) && Array.isArray(to) && from.length === to.length && from.every(isObject)) return from.flatMap((v, i) => jsonDiff(v, to[i], `${at}/${i}`));
  return JSON.stringify(from) === JSON.stringify(to) ? [] : [{ op: 'replace', path: at, value: to }];
}
