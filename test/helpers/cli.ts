import { afterAll, beforeAll } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = path.join(REPO, 'bin', 'firebuild.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the built CLI as a user would: a real process, real files. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; wrap?: string[] } = {}): Promise<CliResult> {
  // Through the bin's own shebang, as a user runs it; `wrap` prefixes a command (`ip netns exec NS`).
  const [cmd, ...pre] = opts.wrap?.length ? [...opts.wrap, BIN] : [BIN];
  return runCommand(cmd as string, [...pre, ...args], { cwd: opts.cwd ?? REPO, env: { ...process.env, FIREBUILD_LOG_LEVEL: 'info', ...opts.env }, input: opts.input ?? '' });
}

/** Any command (the CLI started another way: `node bin/firebuild.js`, an npm-style link), its output collected. */
export function runCommand(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/** A fresh temp dir, removed by the returned cleanup. */
export async function tempDir(prefix = 'firebuild-test-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Every path under `dir` with its type, mode and size: compare before/after to prove nothing changed. */
export function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      const st = fs.lstatSync(p);
      out.push(`${path.relative(dir, p)} ${st.mode.toString(8)} ${st.isDirectory() ? '-' : st.size}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** Non-empty lines of a text. */
export function lines(s: string): string[] {
  return s.split('\n').filter((l) => l.trim() !== '');
}

/**
 * A temp FIREBUILD_HOME for the suite: `home.dir` and `home.env` are set before the tests run and the
 * directory is removed after them. Call at the top level of a test file.
 */
export function useTempHome(): { dir: string; env: NodeJS.ProcessEnv } {
  const home = { dir: '', env: {} as NodeJS.ProcessEnv };
  beforeAll(async () => {
    home.dir = await tempDir();
    home.env = { FIREBUILD_HOME: home.dir };
  });
  afterAll(async () => {
    await fsp.rm(home.dir, { recursive: true, force: true });
  });
  return home;
}

/** A command that must succeed and print one JSON object: on failure the error shows all it printed. */
export function expectJsonResult(r: CliResult): void {
  if (r.code !== 0 || !r.stdout.trimStart().startsWith('{')) throw new Error(`expected exit 0 and a JSON object, got ${JSON.stringify(r, null, 2)}`);
}
