/**
 * The CLI's entry passes no flag to Node (issue 12, item 10): `--env-file F` on firebuild's command line is
 * firebuild's (the guest's env file), never Node's. Node 20 reads `--env-file` anywhere in its argv unless a
 * `--` comes first, and runs the NODE_OPTIONS of that file in the host process.
 */
import { describe, expect, test, beforeAll, afterAll } from '@jest/globals';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BIN, REPO, runCli, runCommand, tempDir, type CliResult } from '../helpers/cli.js';

let dir: string;
let marker: string;
let envFile: string;

beforeAll(async () => {
  dir = await tempDir('firebuild-entry-');
  marker = path.join(dir, 'MARKER');
  const hook = path.join(dir, 'hook.cjs');
  await fsp.writeFile(hook, `require('fs').writeFileSync(${JSON.stringify(marker)}, String(process.pid));\n`);
  envFile = path.join(dir, 'guest.env');
  await fsp.writeFile(envFile, `NODE_OPTIONS=--require ${hook}\nGREETING=hello\n`);
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

// Node's env file never overrides a variable already set: the host's environment has no NODE_OPTIONS.
function hostEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, FIREBUILD_LOG_LEVEL: 'info' };
  delete env.NODE_OPTIONS;
  return env;
}

function spawnCli(cmd: string, args: string[]): Promise<CliResult> {
  return runCommand(cmd, args, { env: hostEnv() });
}

// A malformed tag fails after argv parsing and before any VM or store work: the command got as far as firebuild's own code.
const MALFORMED = /malformed tag 'Not A Tag'/;

describe('the CLI entry (bin/firebuild.js)', () => {
  test.each([
    ['--env-file F', (f: string) => ['--env-file', f]],
    ['--env-file=F', (f: string) => [`--env-file=${f}`]],
  ])('run by its shebang (the documented form) with %s: Node never reads the env file', async (_name, flag) => {
    fs.rmSync(marker, { force: true });
    const r = await runCli(['run', '--from', 'Not A Tag', ...flag(envFile)], { env: { NODE_OPTIONS: undefined } });
    expect(r.stderr).toMatch(MALFORMED);
    expect(r.code).not.toBe(0);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test("npm's bin link (node_modules/.bin/firebuild, a symlink run through its shebang) protects the same way", async () => {
    fs.rmSync(marker, { force: true });
    const binDir = path.join(dir, '.bin');
    await fsp.mkdir(binDir, { recursive: true });
    const link = path.join(binDir, 'firebuild');
    await fsp.rm(link, { force: true });
    await fsp.symlink(BIN, link);
    expect(fs.readFileSync(BIN, 'utf8').split('\n')[0]).toBe('#!/bin/sh');
    const r = await spawnCli(link, ['run', '--from', 'Not A Tag', '--env-file', envFile]);
    expect(r.stderr).toMatch(MALFORMED);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test("started as 'node bin/firebuild.js ... --env-file F' it refuses with one line naming the safe forms, exit 2", async () => {
    fs.rmSync(marker, { force: true });
    const r = await spawnCli(process.execPath, [BIN, 'run', '--from', 'Not A Tag', '--env-file', envFile]);
    // Node has already acted on the file (that is why this form is never documented) ...
    expect(fs.existsSync(marker)).toBe(true);
    // ... and firebuild stops before parsing anything, saying what to run instead.
    expect(r.code).toBe(2);
    expect(r.stderr).not.toMatch(MALFORMED);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error: started as 'node bin\/firebuild\.js' with --env-file.*run \.\/bin\/firebuild\.js, npx firebuild or the installed firebuild instead$/m);
    // With node's own `--` first (what the shebang line does), the same command line is safe and runs.
    fs.rmSync(marker, { force: true });
    const ok = await spawnCli(process.execPath, [BIN, '--', 'run', '--from', 'Not A Tag', '--env-file', envFile]);
    expect(ok.stderr).toMatch(MALFORMED);
    expect(fs.existsSync(marker)).toBe(false);
  });

  test("no doc, script or workflow tells anyone to start the CLI as 'node bin/firebuild.js'", () => {
    const files: string[] = ['README.md'];
    for (const d of ['docs', 'scripts', 'runner-setup', 'workflows', 'examples']) {
      const walk = (p: string): void => {
        for (const e of fs.readdirSync(path.join(REPO, p), { withFileTypes: true })) {
          const rel = path.join(p, e.name);
          if (e.isDirectory()) walk(rel);
          else if (/\.(md|sh|ya?ml)$/.test(e.name) || !e.name.includes('.')) files.push(rel);
        }
      };
      if (fs.existsSync(path.join(REPO, d))) walk(d);
    }
    const offenders: string[] = [];
    for (const f of files) {
      fs.readFileSync(path.join(REPO, f), 'utf8').split('\n').forEach((line, i) => {
        if (!/\bnode\s+["']?[^\s"']*bin\/firebuild\.js/.test(line)) return;
        // Markdown may name the form only to warn against it.
        if (f.endsWith('.md') && /\b(never|directly)\b/i.test(line)) return;
        offenders.push(`${f}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(files.length).toBeGreaterThan(5);
    expect(offenders).toEqual([]);
  });
});
