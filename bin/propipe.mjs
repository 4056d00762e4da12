#!/usr/bin/env node
// Entry point for `npx propipe`: sources are TypeScript run through tsx, so there is no build step
// between `npm ci` and a working command.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
