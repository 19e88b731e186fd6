import { afterEach, describe, expect, test } from '@jest/globals';
import { Readable } from 'node:stream';
import { cleanupAll, ownedNow, resetCleanupsForTests } from '../../src/util/cleanup.js';
import { UserError } from '../../src/util/errors.js';
import { ExecError, spawnStream } from '../../src/util/exec.js';

// The streaming spawn: stdout as a stream, the stderr tail in the error, a child that can be cancelled
// (kill, AbortSignal, the process's cancel) and the same not-found error as exec.

async function text(r: Readable): Promise<string> {
  let s = '';
  for await (const c of r) s += String(c);
  return s;
}

/** Whether a process with this pid is still there. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

afterEach(() => resetCleanupsForTests());

describe('spawnStream', () => {
  test('stdout streams, stdin is piped in, exit 0 resolves', async () => {
    const c = spawnStream('sh', ['-c', 'tr a-z A-Z; echo done >&2'], { stdin: Readable.from(['hello ', 'world']) });
    expect(await text(c.stdout)).toBe('HELLO WORLD');
    await c.wait();
    expect((await c.exit).stderr).toBe('done\n');
  });

  test('a non-zero exit is an ExecError carrying the end of stderr (not all of it)', async () => {
    const lines: string[] = [];
    const c = spawnStream('sh', ['-c', 'i=0; while [ $i -lt 2000 ]; do echo "noise $i" >&2; i=$((i+1)); done; echo "the real reason" >&2; exit 3'], { tailBytes: 1024, onStderrLine: (l) => lines.push(l) });
    await text(c.stdout);
    const err = await c.wait().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecError);
    expect((err as Error).message).toMatch(/^sh exited with 3: .*the real reason$/);
    expect((await c.exit).stderr.length).toBeLessThanOrEqual(1024);
    expect(lines).toHaveLength(2001);
  });

  test('a tool that is not installed is the one-line UserError, with the caller\'s fix', async () => {
    const c = spawnStream('firebuild-no-such-tool', [], { notFound: 'install the no-such package' });
    const err = await c.wait().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toBe('firebuild-no-such-tool not found: install the no-such package');
    await expect(c.exit).rejects.toBe(err);
  });

  test('an AbortSignal kills the child; the exit says it was killed', async () => {
    const ac = new AbortController();
    const c = spawnStream('sleep', ['30'], { signal: ac.signal });
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 100);
    const r = await c.exit;
    expect(r.killed).toBe(true);
    expect(r.signal).toBe('SIGTERM');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('kill() ends the child and what it started (holding the pipe), SIGKILL for those ignoring SIGTERM', async () => {
    const c = spawnStream('sh', ['-c', 'trap "" TERM; sleep 30 & echo ready; wait; sleep 30']);
    // Wait for the trap and the grandchild.
    await new Promise<void>((resolve) => c.stdout.once('data', () => resolve()));
    const t0 = Date.now();
    await c.kill();
    expect((await c.exit).signal).toBe('SIGKILL');
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  test('the child is owned while it runs: the process cancel kills it; after its exit it is released', async () => {
    const c = spawnStream('sleep', ['30']);
    expect(ownedNow().some((w) => w.startsWith('process sleep'))).toBe(true);
    const failures = await cleanupAll();
    expect(failures).toEqual([]);
    const r = await c.exit;
    expect(r.killed).toBe(true);
    const done = spawnStream('true', []);
    await done.wait();
    // Released once gone (on the next turn of the loop after exit).
    await new Promise((resolve) => setImmediate(resolve));
    expect(ownedNow()).toEqual([]);
  });

  test('spawned after the cancel: killed at once and refused', async () => {
    const { exitOnSignals } = await import('../../src/util/cleanup.js');
    let code: number | undefined;
    const off = exitOnSignals({ report: () => undefined, exit: (n) => (code = n) });
    try {
      process.emit('SIGTERM', 'SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(code).toBe(143);
      expect(() => spawnStream('sleep', ['30'])).toThrow(/cancelled by SIGTERM/);
      expect(ownedNow()).toEqual([]);
    } finally {
      off();
    }
  });

  test('a killed child is gone from the process table', async () => {
    const c = spawnStream('sh', ['-c', 'echo $$; exec sleep 30']);
    const pid = Number((await new Promise<Buffer>((resolve) => c.stdout.once('data', resolve))).toString());
    expect(alive(pid)).toBe(true);
    await c.kill();
    expect(alive(pid)).toBe(false);
  });
});
