// Records every frame a mailbox is handed, whatever its key (the mailbox itself overwrites): a test of
// access or validation counts what got through.
import type { InFrame } from '../../proto/frames.ts';
import type { Mailbox } from '../../worker/mailbox.ts';

export function spy(mailbox: Mailbox): InFrame[] {
  const seen: InFrame[] = [];
  const deliver = mailbox.deliver.bind(mailbox);
  mailbox.deliver = (f) => {
    seen.push(f);
    deliver(f);
  };
  return seen;
}
