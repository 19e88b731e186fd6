import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { REPO } from '../helpers/cli.js';

/**
 * Every action.yml and its code agree (as codeql-action checks): each input the code reads is declared,
 * each declared input is read, and runs.main/post point at the bundled files for node24.
 */
const ACTIONS: Record<string, string[]> = {
  '.': ['src/actions/build-rootfs/impl.ts', 'src/actions/vm-inputs.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
  'build-rootfs': ['src/actions/build-rootfs/impl.ts', 'src/actions/vm-inputs.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
  'build-baseos': ['src/actions/build-baseos/impl.ts', 'src/actions/summary.ts'],
  'smoke-test': ['src/actions/smoke-test/impl.ts', 'src/actions/vm-inputs.ts', 'src/actions/summary.ts'],
  publish: ['src/actions/publish/impl.ts', 'src/actions/summary.ts'],
  setup: ['src/actions/setup/impl.ts', 'src/actions/setup/host.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
};

test('every action folder is checked', () => {
  const dirs = fs.readdirSync(REPO).filter((d) => d !== 'node_modules' && fs.existsSync(path.join(REPO, d, 'action.yml')));
  expect(dirs.sort()).toEqual(Object.keys(ACTIONS).filter((d) => d !== '.').sort());
});

function inputsRead(files: string[]): string[] {
  const names = new Set<string>();
  for (const f of files) {
    const src = fs.readFileSync(path.join(REPO, f), 'utf8');
    for (const m of src.matchAll(/\b(?:input|listInput|boolInput)\('([a-z0-9-]+)'/g)) names.add(m[1] as string);
  }
  return [...names].sort();
}

describe('action.yml files', () => {
  test.each(Object.entries(ACTIONS))('%s: declared inputs are exactly the inputs read', (name, files) => {
    const yml = parseYaml(fs.readFileSync(path.join(REPO, name, 'action.yml'), 'utf8')) as { inputs: Record<string, unknown>; runs: { using: string; main: string; post?: string } };
    expect(Object.keys(yml.inputs).sort()).toEqual(inputsRead(files));
    expect(yml.runs.using).toBe('node24');
    expect(yml.runs.main).toBe(name === '.' ? 'dist/build-rootfs/index.js' : `../dist/${name}/index.js`);
    expect(fs.existsSync(path.join(REPO, name, yml.runs.main))).toBe(true);
    if (yml.runs.post) expect(fs.existsSync(path.join(REPO, name, yml.runs.post))).toBe(true);
  });

  test('the checker itself sees a read that is not declared', () => {
    expect(inputsRead(['src/actions/publish/impl.ts'])).toContain('oci-ref');
  });
});
