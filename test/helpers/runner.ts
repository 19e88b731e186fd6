import { afterAll } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, tempDir } from './cli.js';

/**
 * Runs a bundled action as the GitHub runner does: `node dist/<action>/index.js` with `INPUT_*`
 * variables and real GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_STATE and RUNNER_TEMP files; saved
 * state reaches the post step as `STATE_*` variables, as the runner passes it. RUNNER_ENVIRONMENT is
 * `self-hosted` (this machine) unless a test says otherwise, also when the suite itself runs in a hosted job.
 */
export interface ActionRun {
  code: number;
  stdout: string;
  outputs: Record<string, string>;
  state: Record<string, string>;
  /** Variables exported for later steps (GITHUB_ENV). */
  exported: Record<string, string>;
  summary: string;
}

export function parseFileCommands(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /^([^<\n]+)<<(ghadelimiter_[0-9a-f-]+)\r?\n([\s\S]*?)\r?\n\2\r?$/gm;
  for (const m of text.matchAll(re)) out[m[1] as string] = m[3] as string;
  return out;
}

export interface RunnerFiles { dir: string; output: string; summary: string; state: string; env: string; path: string }

/**
 * What this test file started and made: its steps still running, and its runner directories. The module
 * is loaded once per test file (Jest gives every file its own module registry), so these lists are the
 * file's own and the cleanup below never touches another file's directories.
 */
const running = new Set<{ child: ChildProcess; done: Promise<ActionRun> }>();
const made: string[] = [];

/**
 * After the file's tests: stop every step still running (one a timed-out test left behind), wait until it
 * has exited, and only then remove the runner directories. A step that outlived its directory used to end
 * later and fail reading GITHUB_OUTPUT in its exit handler, an uncaught error that Jest blamed on whatever
 * test file that worker ran next. Exported for the helper's own test.
 */
export async function endRunnerFiles(): Promise<void> {
  for (const run of [...running]) {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
    await run.done.catch(() => undefined);
  }
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}
afterAll(endRunnerFiles);

export async function runnerFiles(): Promise<RunnerFiles> {
  const dir = await tempDir('firebuild-runner-');
  made.push(dir);
  const f = { dir, output: path.join(dir, 'output'), summary: path.join(dir, 'summary.md'), state: path.join(dir, 'state'), env: path.join(dir, 'env'), path: path.join(dir, 'path') };
  for (const p of [f.output, f.summary, f.state, f.env, f.path]) fs.writeFileSync(p, '');
  return f;
}

/** `wrap` replaces `node` on the command line (e.g. a namespace helper, then node with options). */
export function startAction(entry: string, inputs: Record<string, string>, files: RunnerFiles, extraEnv: NodeJS.ProcessEnv = {}, wrap: string[] = []): { child: ChildProcess; done: Promise<ActionRun>; output: () => string } {
  const env: NodeJS.ProcessEnv = { ...process.env, RUNNER_ENVIRONMENT: 'self-hosted', ...extraEnv, GITHUB_OUTPUT: files.output, GITHUB_STEP_SUMMARY: files.summary, GITHUB_STATE: files.state, GITHUB_ENV: files.env, GITHUB_PATH: files.path, RUNNER_TEMP: files.dir, GITHUB_ACTIONS: 'true' };
  for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v;
  const argv = [...(wrap.length ? wrap : [process.execPath]), path.join(REPO, 'dist', entry)];
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stdout += d));
  const done = new Promise<ActionRun>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      // Never a throw in an event handler: it would surface as an uncaught error outside any test.
      try {
        resolve({
          code: code ?? -1,
          stdout,
          outputs: parseFileCommands(fs.readFileSync(files.output, 'utf8')),
          state: parseFileCommands(fs.readFileSync(files.state, 'utf8')),
          exported: parseFileCommands(fs.readFileSync(files.env, 'utf8')),
          summary: fs.readFileSync(files.summary, 'utf8'),
        });
      } catch (err) {
        reject(err as Error);
      }
    });
  });
  const run = { child, done, output: (): string => stdout };
  running.add(run);
  void done.finally(() => running.delete(run)).catch(() => undefined);
  return run;
}

export async function runAction(entry: string, inputs: Record<string, string>, extraEnv: NodeJS.ProcessEnv = {}, files?: RunnerFiles, wrap: string[] = []): Promise<ActionRun> {
  return startAction(entry, inputs, files ?? (await runnerFiles()), extraEnv, wrap).done;
}

/** The post step with the main step's saved state. */
export async function runPost(entry: string, state: Record<string, string>, extraEnv: NodeJS.ProcessEnv = {}): Promise<ActionRun> {
  const env: NodeJS.ProcessEnv = { ...extraEnv };
  for (const [k, v] of Object.entries(state)) env[`STATE_${k}`] = v;
  return runAction(entry, {}, env);
}

/**
 * Cancel a running step as the runner cancels a job: SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s
 * after that, each only while the step still runs. Returns the signals sent.
 */
export async function cancelAsRunner(run: { child: ChildProcess; done: Promise<ActionRun> }): Promise<NodeJS.Signals[]> {
  const sent: NodeJS.Signals[] = [];
  const ended = run.done.then(() => true, () => true);
  for (const [signal, after] of [['SIGINT', 0], ['SIGTERM', 7500], ['SIGKILL', 2500]] as const) {
    if (after) await Promise.race([ended, new Promise((r) => setTimeout(r, after))]);
    if (run.child.exitCode !== null || run.child.signalCode !== null) break;
    run.child.kill(signal);
    sent.push(signal);
  }
  await ended;
  return sent;
}

/** `::error ...::message` lines of a step's output. */
export function annotations(stdout: string, kind = 'error'): string[] {
  return stdout.split('\n').filter((l) => l.startsWith(`::${kind}`)).map((l) => l.trim());
}
