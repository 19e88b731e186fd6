import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lines, runCli, tempDir } from '../helpers/cli.js';
import { alive } from '../helpers/vm.js';

/**
 * Issue 12, item 6 (PID reuse): a VM's state names a pid that now belongs to an unrelated process
 * (here a live `sleep 300` whose recorded start time differs, as after the VMM died and the kernel
 * handed its pid on). `ls` must show the VM as not running, `purge` must remove it and `kill` must
 * remove it without signalling the unrelated process. Real processes, the real CLI; no VM needed.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const procs: ChildProcess[] = [];
const runCache = (): string => path.join(work, 'home', 'run');

function startTime(pid: number): string {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!;
}
const bootId = (): string => fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

function spawnProc(cmd: string, args: string[]): number {
  const c = spawn(cmd, args, { stdio: 'ignore' });
  procs.push(c);
  return c.pid!;
}

/** A state as `run` writes it, for a VM that owns no cgroup, netns or jail. */
function writeState(id: string, pid: number, identity: { pidStartTime?: string; bootId?: string }): void {
  const dir = path.join(runCache(), id);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'serial.log'), '');
  const state = {
    schemaVersion: 1, id, name: id.slice(0, 12), image: 'x/y:1', kernel: 'k', backend: 'qemu', accel: 'tcg', pid, ...identity,
    started: new Date().toISOString(), hostname: 'h', network: { mode: 'none', ports: [] },
    serialLog: path.join(dir, 'serial.log'), cacheDir: dir,
  };
  fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify(state), { mode: 0o600 });
}

async function ls(): Promise<Record<string, boolean>> {
  const r = await runCli(['ls', '--json'], { env });
  expect(r.code).toBe(0);
  return Object.fromEntries((JSON.parse(r.stdout) as { id: string; running: boolean }[]).map((v) => [v.id, v.running]));
}

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  fs.mkdirSync(runCache(), { recursive: true });
});
afterAll(() => {
  for (const c of procs) c.kill('SIGKILL');
  fs.rmSync(work, { recursive: true, force: true });
});

describe('VM identity is pid + start time + boot id, never a bare pid', () => {
  test('a reused pid (live sleep, other start time): ls says not running, kill leaves the sleep alone, purge removes the state', async () => {
    const sleep = spawnProc('sleep', ['300']);
    const other = String(BigInt(startTime(sleep)) + 1n);
    writeState('reusedkill0000000000', sleep, { pidStartTime: other, bootId: bootId() });
    writeState('reusedpurge000000000', sleep, { pidStartTime: other, bootId: bootId() });
    // A state from an older release (no start time) whose pid is now the sleep: its command line does not name the VM.
    writeState('legacypurge000000000', sleep, {});
    // The same start time on another boot is another process too.
    writeState('otherboot00000000000', sleep, { pidStartTime: startTime(sleep), bootId: '00000000-0000-0000-0000-000000000000' });
    expect(await ls()).toEqual({ reusedkill0000000000: false, reusedpurge000000000: false, legacypurge000000000: false, otherboot00000000000: false });

    const k = await runCli(['kill', '--vmm-id', 'reusedkill0000000000', '--shutdown-timeout', '1'], { env });
    expect(k.code).toBe(0);
    expect(k.stderr).toMatch(/VM removed .*stop="?already stopped"?/);
    expect(alive(sleep)).toBe(true);

    const p = await runCli(['purge'], { env });
    expect(p.code).toBe(0);
    expect(lines(p.stdout).sort()).toEqual(['legacypurge000000000', 'otherboot00000000000', 'reusedpurge000000000']);
    expect(alive(sleep)).toBe(true);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test('the recorded process itself (same start time), and an older state whose process names the VM: running, and kill stops it', async () => {
    const vmm = spawnProc('sleep', ['300']);
    writeState('samevmm0000000000000', vmm, { pidStartTime: startTime(vmm), bootId: bootId() });
    // An older release's state: the VMM's command line holds the VM's id (QEMU: the run cache path; Firecracker: --id).
    const legacy = spawnProc('sh', ['-c', 'sleep 300', 'legacyvmm00000000000']);
    writeState('legacyvmm00000000000', legacy, {});
    expect(await ls()).toEqual({ samevmm0000000000000: true, legacyvmm00000000000: true });
    const p = await runCli(['purge'], { env });
    expect(p.stdout.trim()).toBe('');
    for (const [id, pid] of [['samevmm0000000000000', vmm], ['legacyvmm00000000000', legacy]] as const) {
      const k = await runCli(['kill', '--vmm-id', id, '--shutdown-timeout', '1'], { env });
      expect(k.code).toBe(0);
      expect(k.stderr).toMatch(/stop=forced/);
      const c = procs.find((x) => x.pid === pid)!;
      for (let i = 0; i < 50 && c.signalCode === null; i++) await new Promise((r) => setTimeout(r, 100));
      expect(c.signalCode).toBe('SIGTERM');
    }
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});
