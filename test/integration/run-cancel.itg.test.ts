import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, REPO, runCli, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll } from '../helpers/vm.js';
import { cgroup2Mount } from '../../src/runtime/cgroup.js';

/**
 * A `firebuild run` cancelled or killed mid-boot leaves nothing on the host: no QEMU, no run cache
 * directory, no cgroup (issue 14). Real bin, real QEMU (TCG), the suite's kernel.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const runCache = (): string => path.join(work, 'home', 'run');
beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  expect(await importTestKernel(env)).toBe(0);
  const b = await runCli(['rootfs', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M', '--accel', 'tcg'], { env });
  expect({ code: b.code, stderr: b.code ? b.stderr : '' }).toEqual({ code: 0, stderr: '' });
});
afterAll(async () => {
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

interface Started { pid: number; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> }
function startRun(args: string[]): Started {
  const child = spawn(BIN, ['run', '--from', 'examples/hello:1', '--accel', 'tcg', ...args], { cwd: REPO, env: { ...process.env, FIREBUILD_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((r) => child.on('close', (code, signal) => r({ code, signal, stderr })));
  return { pid: child.pid!, exited };
}

/** The one VM state in the run cache, once `ready` says so (polled every 10 ms). */
async function waitState(ready: (s: { id: string; pid: number }, dir: string) => boolean, timeoutMs = 60_000): Promise<{ id: string; pid: number; cgroup?: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // The VMs as ls sees them (not a `.new-<id>` being created).
    for (const id of fs.existsSync(runCache()) ? fs.readdirSync(runCache()).filter((n) => !n.startsWith('.')) : []) {
      try {
        const s = JSON.parse(fs.readFileSync(path.join(runCache(), id, 'state.json'), 'utf8')) as { id: string; pid: number; cgroup?: string };
        if (ready(s, path.join(runCache(), id))) return s;
      } catch {
        // not written yet
      }
    }
    if (Date.now() > deadline) throw new Error('no VM state reached the expected point');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Nothing of the VM `id` is left: no run cache entry, no process naming its directory, no cgroup. */
async function expectNothingLeft(id: string): Promise<void> {
  expect(fs.existsSync(runCache()) ? fs.readdirSync(runCache()) : []).toEqual([]);
  const procs = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(path.join(runCache(), id));
    } catch {
      return false;
    }
  });
  expect(procs).toEqual([]);
  const mount = await cgroup2Mount();
  if (mount) expect(fs.existsSync(path.join(mount, 'firebuild', id))).toBe(false);
}

const booting = (s: { pid: number }, dir: string): boolean => s.pid > 0 && !/FIREBUILD-START/.test(fs.readFileSync(path.join(dir, 'serial.log'), 'utf8'));

describe('a cancelled run leaves nothing', () => {
  test.each([
    ['SIGINT', 130, []],
    ['SIGTERM', 143, []],
    ['SIGINT', 130, ['--wait-exit-code', '0']],
    ['SIGTERM', 143, ['--wait-http', 'http://127.0.0.1:9/']],
  ] as const)('%s (exit %s) of run %j while the guest boots: the VM torn down', async (signal, code, extra) => {
    const r = startRun([...extra, '--', 'sleep', '100']);
    const s = await waitState(booting);
    process.kill(r.pid, signal);
    const e = await r.exited;
    expect({ code: e.code, stderr: e.stderr }).toEqual({ code, stderr: expect.stringContaining(`${signal} received: removing VM`) });
    await expectNothingLeft(s.id);
  });

  test('SIGINT before the VMM starts (the rootfs copy): exit 130, nothing left', async () => {
    const r = startRun(['--', 'sleep', '100']);
    const s = await waitState((st) => st.pid === 0);
    process.kill(r.pid, 'SIGINT');
    const e = await r.exited;
    expect(e.code).toBe(130);
    await expectNothingLeft(s.id);
  });

  test('SIGINT in the foreground after the boot: the guest is torn down, exit 130', async () => {
    const r = startRun(['--', 'sleep', '100']);
    const s = await waitState((st, dir) => st.pid > 0 && /FIREBUILD-START/.test(fs.readFileSync(path.join(dir, 'serial.log'), 'utf8')));
    process.kill(r.pid, 'SIGINT');
    expect((await r.exited).code).toBe(130);
    await expectNothingLeft(s.id);
  });

  test('a run SIGKILLed before its VMM starts is not running; purge removes it and all it created', async () => {
    const r = startRun(['--', 'sleep', '100']);
    const s = await waitState((st) => st.pid === 0);
    process.kill(r.pid, 'SIGKILL');
    await r.exited;
    const ls = JSON.parse((await runCli(['ls', '--json'], { env })).stdout) as { id: string; running: boolean }[];
    expect(ls).toEqual([expect.objectContaining({ id: s.id, running: false })]);
    const p = await runCli(['purge'], { env });
    expect({ code: p.code, stdout: p.stdout }).toEqual({ code: 0, stdout: `${s.id}\n` });
    await expectNothingLeft(s.id);
  });
});
