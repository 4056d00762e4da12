// `npm run proto:types`: rewrites proto/messages.ts from proto/propipe.proto.
import fs from 'node:fs';
import { generateMessagesFile, MESSAGES_FILE } from './codegen.ts';

fs.writeFileSync(MESSAGES_FILE, generateMessagesFile());
console.log(`wrote ${MESSAGES_FILE}`);
