import { expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliReference, REFERENCE_START, spliceReference } from '../../src/cli/reference.js';
import { main } from '../../src/cli/main.js';

const README = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'README.md');

test('the README command reference is generated from the CLI definition and current (npm run docs:cli)', () => {
  const readme = fs.readFileSync(README, 'utf8');
  expect(readme).toContain(REFERENCE_START);
  expect(spliceReference(readme, cliReference())).toBe(readme);
});

test('the reference lists every command and flag', () => {
  const ref = cliReference();
  for (const c of ['profile-create', 'profile-ls', 'profile-inspect', 'image ls', 'image inspect <tag>', 'image rm <tag>', 'kernel import <file>', 'kernel ls', 'kernel rm <id>', 'doctor']) {
    expect(ref).toContain(`### \`firebuild ${c}`);
  }
  for (const f of ['--storage-provider-property-int64', '--tracing-collector-host-port', '--log-as-json', '--overwrite', '--require']) expect(ref).toContain(f);
});

test('main() maps errors to exit codes without exiting the process', async () => {
  let err = '';
  const io = { stdout: { write: () => undefined }, stderr: { write: (s: string) => void (err += s) }, env: {} };
  expect(await main(['image', 'inspect', 'NOT-A-TAG'], io)).toBe(2);
  expect(err).toMatch(/^error: malformed tag 'NOT-A-TAG'/);
  expect(await main(['--version'], io)).toBe(0);
});

test('docs/plan.schema.json is generated from the plan schema and current (npm run docs:schema)', async () => {
  const { planJsonSchema } = await import('../../src/dockerfile/plan-schema.js');
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'plan.schema.json');
  expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(planJsonSchema());
});
