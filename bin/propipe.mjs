#!/usr/bin/env node
// Entry point of `propipe`. In a clone the TypeScript sources run through tsx, so there is no build
// step between `npm ci` and a working command. The published package ships no TypeScript: `npm pack`
// compiles it to dist/ (the prepack script), and that runs on plain Node without dev dependencies.
import fs from 'node:fs';

if (fs.existsSync(new URL('../cli/main.ts', import.meta.url))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
} else {
  await import('../dist/cli/main.js');
}
