import { expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { main } from '../../src/cli/main.js';

// `--target` names the stage to build, as docker build's does; `--dockerfile-stage` stays its alias.
const DOCKERFILE = 'FROM scratch AS a\nLABEL s=a\nFROM scratch AS b\nLABEL s=b\n';

async function plan(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-cli-target-'));
  let out = '';
  let err = '';
  const io = { stdout: { write: (s: string) => void (out += s) }, stderr: { write: (s: string) => void (err += s) }, env: { FIREBUILD_CACHE_DIR: cache } };
  try {
    const code = await main(['rootfs', '--plan', '--dockerfile', DOCKERFILE, ...args], io as never);
    return { code, out, err };
  } finally {
    fs.rmSync(cache, { recursive: true, force: true });
  }
}

test('rootfs --plan --target picks the stage; --dockerfile-stage is the same; disagreeing values are refused', async () => {
  const byTarget = await plan(['--target', 'a']);
  expect(byTarget.code).toBe(0);
  expect(JSON.parse(byTarget.out).target).toEqual({ index: 0, name: 'a' });
  expect(JSON.parse((await plan(['--dockerfile-stage', 'a'])).out).target).toEqual({ index: 0, name: 'a' });
  expect(JSON.parse((await plan([])).out).target).toEqual({ index: 1, name: 'b' });
  const both = await plan(['--target', 'a', '--dockerfile-stage', 'b']);
  expect(both.code).toBe(2);
  expect(both.err).toMatch(/--target a and --dockerfile-stage b disagree/);
});
