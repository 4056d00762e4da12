// "did you mean …" for misspelt flags, config keys and commands: the closest known name by edit
// distance, offered only when it is close enough to be a plausible typo.

/** Levenshtein distance (insert, delete, substitute; each costs 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The known name nearest to `name`, or null when none is within a third of its length (at least 2
 * edits), so that an unrelated word is not "corrected". `-` and `_` are the same character here.
 */
export function closest(name: string, known: Iterable<string>): string | null {
  const norm = (s: string) => s.toLowerCase().replace(/_/g, '-');
  const target = norm(name);
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(target, norm(k));
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(target.length / 3)) ? best : null;
}

export function didYouMean(name: string, known: Iterable<string>, prefix = ''): string {
  const c = closest(name, known);
  return c === null ? '' : `; did you mean ${prefix}${c}?`;
}
