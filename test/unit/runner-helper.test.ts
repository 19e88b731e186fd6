import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import { endRunnerFiles, runnerFiles, startAction } from '../helpers/runner.js';

/**
 * The runner stand-in the action tests share (test/helpers/runner.ts). A step a test left running (a test
 * that timed out) once outlived its runner directory: it ended later, failed reading GITHUB_OUTPUT in its
 * exit handler, and the uncaught error failed whichever test file the Jest worker ran next. Steps here are
 * shell commands in place of `node dist/<action>` (startAction's `wrap`).
 */
const step = (script: string): string[] => ['sh', '-c', script, 'step'];

describe('the runner stand-in', () => {
  test('the cleanup stops a step still running and waits for its end before removing the runner directory', async () => {
    const files = await runnerFiles();
    const main = startAction('none/index.js', {}, files, {}, step('echo "started<<ghadelimiter_1" >> "$GITHUB_OUTPUT"; echo yes >> "$GITHUB_OUTPUT"; echo ghadelimiter_1 >> "$GITHUB_OUTPUT"; exec sleep 600'));
    while (!fs.readFileSync(files.output, 'utf8').includes('ghadelimiter_1\n')) await new Promise((r) => setTimeout(r, 20));
    await endRunnerFiles();
    expect(main.child.signalCode).toBe('SIGKILL');
    // The step's files were still there when it ended: its outputs were read.
    await expect(main.done).resolves.toMatchObject({ code: -1, outputs: { started: 'yes' } });
    expect(fs.existsSync(files.dir)).toBe(false);
  }, 30_000);

  test('a step whose runner directory is gone when it ends fails its own result, not the process', async () => {
    const files = await runnerFiles();
    const main = startAction('none/index.js', {}, files, {}, step('while [ -e "$GITHUB_OUTPUT" ]; do sleep 0.05; done'));
    fs.rmSync(files.dir, { recursive: true });
    await expect(main.done).rejects.toThrow(/ENOENT.*output/);
  }, 30_000);
});
