// Worker-thread entry of the session thread: sources are TypeScript, so register tsx first (a worker
// does not inherit the parent's loader hooks).
import { register } from 'tsx/esm/api';

register();
await import('./session-thread.ts');
