// Generated tokens to text, one token at a time: incremental detokenization (a token may end inside
// a UTF-8 character or change how the previous ones decode), stop strings matched on the text so they
// are found even when they span token boundaries, and a held-back tail so a stream never sends text
// that a stop string later cuts away.
import type { TextTokenizer } from '../model/hf/tokenizer.ts';

export class TextStream {
  private readonly ids: number[] = [];
  private prefix = 0;
  private read = 0;
  private text = '';
  private sent = 0;
  private readonly hold: number;
  stopped = false;

  constructor(private readonly tokenizer: TextTokenizer, private readonly stops: readonly string[]) {
    this.hold = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** Adds a token; returns the text that is now safe to send. */
  push(id: number): string {
    if (this.stopped) return '';
    this.ids.push(id);
    // As vLLM does: decode a short window so earlier tokens give the new one its context.
    const before = this.tokenizer.decode(this.ids.slice(this.prefix, this.read), { skipSpecial: true });
    const after = this.tokenizer.decode(this.ids.slice(this.prefix), { skipSpecial: true });
    if (after.length > before.length && !after.endsWith('\uFFFD')) {
      const from = this.text.length;
      this.text += after.slice(before.length);
      this.prefix = this.read;
      this.read = this.ids.length;
      this.checkStops(from);
    }
    return this.take(this.stopped ? 0 : this.hold);
  }

  /** The rest of the text once generation ends. */
  flush(): string {
    return this.take(0);
  }

  /** The whole text (without a matched stop string). */
  get full(): string {
    return this.text;
  }

  private checkStops(newFrom: number): void {
    let cut = -1;
    for (const s of this.stops) {
      const at = this.text.indexOf(s, Math.max(0, newFrom - s.length + 1));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      this.stopped = true;
    }
  }

  private take(keep: number): string {
    const end = Math.max(this.sent, this.text.length - keep);
    const out = this.text.slice(this.sent, end);
    this.sent = end;
    return out;
  }
}
