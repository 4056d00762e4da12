// proto/messages.ts is generated from proto/propipe.proto; these tests fail when the two disagree.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import * as protoLoader from '@grpc/proto-loader';
import { generateMessages, generateMessagesFile, MESSAGES_FILE, PROTO_FILE, tsName } from '../proto/codegen.ts';

/** Field names of each exported interface in a generated messages.ts. */
function interfaceFields(ts: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of ts.matchAll(/export interface (\w+) \{([^}]*)\}/g)) {
    out.set(m[1], [...m[2].matchAll(/^ {2}(\w+):/gm)].map((f) => f[1]));
  }
  return out;
}

test('proto/messages.ts is what `npm run proto:types` generates from proto/propipe.proto', () => {
  const committed = fs.readFileSync(MESSAGES_FILE, 'utf8');
  assert.equal(committed, generateMessagesFile(), 'proto/messages.ts is out of date with proto/propipe.proto: run `npm run proto:types` and commit the result');
});

test('a field added to the .proto changes the generated interface, with its kind', () => {
  const source = fs.readFileSync(PROTO_FILE, 'utf8');
  const added = source.replace(/message Assignment \{\n/, 'message Assignment {\n  repeated string freeze_probe = 99;\n  BlockRange probe_range = 98;\n');
  assert.notEqual(added, source, 'message Assignment not found in the .proto');
  const generated = generateMessages(added);
  assert.notEqual(generated, fs.readFileSync(MESSAGES_FILE, 'utf8'));
  const body = /export interface AssignmentMsg \{([^}]*)\}/.exec(generated)![1];
  assert.match(body, /^ {2}freezeProbe: string\[\];$/m);
  assert.match(body, /^ {2}probeRange: BlockRangeMsg \| null;$/m);
});

test('every message proto-loader delivers has exactly the fields of its generated interface', () => {
  // The options proto/load.ts uses: the generated types describe what the gRPC code actually receives.
  const def = protoLoader.loadSync(PROTO_FILE, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const fields = interfaceFields(fs.readFileSync(MESSAGES_FILE, 'utf8'));
  let messages = 0;
  for (const [name, d] of Object.entries(def)) {
    if (!('format' in d) || d.format !== 'Protocol Buffer 3 DescriptorProto') continue;
    const type = d.type as { name: string; field: { name: string }[] };
    messages++;
    const iface = tsName(type.name);
    assert.ok(fields.has(iface), `${name} has no interface ${iface} in proto/messages.ts`);
    const delivered = type.field.map((f) => f.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
    assert.deepEqual(fields.get(iface), delivered, `${name}: fields differ between the .proto and proto/messages.ts`);
  }
  assert.ok(messages >= 15, `only ${messages} messages found in ${PROTO_FILE}`);
});
