import { afterAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bootId, identify, procStartTime, signalVmm, vmmAlive, waitVmmGone } from '../../src/runtime/vmm-process.js';

/** The VMM identity check on real processes: pid + start time + boot id, and the command-line check for older states. */
const procs: ChildProcess[] = [];
function start(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: 'ignore' });
  procs.push(c);
  return c;
}
afterAll(() => {
  for (const c of procs) c.kill('SIGKILL');
});

describe('vmm identity', () => {
  test('the start time is field 22 of /proc/<pid>/stat, even when comm holds spaces and parentheses', async () => {
    // A command name (comm, the executable's name) with ') ' in it: the parser must split after the last ')'.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmm-id-'));
    const exe = path.join(dir, 'x) 1 2 (z');
    fs.copyFileSync('/bin/sleep', exe);
    fs.chmodSync(exe, 0o755);
    const c = start(exe, ['300']);
    await new Promise((r) => setTimeout(r, 200));
    expect(fs.readFileSync(`/proc/${c.pid}/stat`, 'utf8')).toContain('(x) 1 2 (z)');
    fs.rmSync(dir, { recursive: true });
    const st = procStartTime(c.pid!);
    expect(st).toMatch(/^\d+$/);
    expect(st).toBe(procStartTime(c.pid!));
    expect(procStartTime(process.pid)).not.toBe(st);
    expect(procStartTime(0)).toBeUndefined();
  });

  test('a VMM that exited but was never reaped (a zombie, as under a PID 1 that reaps no orphans) is not running', async () => {
    // `sleep 1` becomes a zombie: its parent execs into `sleep 30`, which never waits for it. The child must
    // outlive the exec (a child that exits first may be reaped by the shell itself), hence a second, not 0.
    const c = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    procs.push(c);
    const pid = Number(await new Promise<string>((r) => c.stdout!.once('data', (d: Buffer) => r(d.toString()))));
    const stat = (): string => fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    for (let i = 0; i < 200 && !/^\S+ \(.*\) Z/.test(stat()); i++) await new Promise((r) => setTimeout(r, 50));
    expect(stat()).toMatch(/\) Z /);
    expect(procStartTime(pid)).toBeUndefined();
    expect(vmmAlive({ pid, startTime: '1', bootId: bootId() })).toBe(false);
    expect(signalVmm({ pid, startTime: '1', bootId: bootId() }, 'SIGKILL')).toBe(false);
  });

  test('the recorded process is alive and can be signalled; another start time or boot id is another process, never signalled', async () => {
    const c = start('sleep', ['300']);
    const me = identify(c.pid!);
    expect(me.bootId).toBe(bootId());
    expect(vmmAlive(me)).toBe(true);
    const reused = { ...me, startTime: String(BigInt(me.startTime) + 1n) };
    expect(vmmAlive(reused)).toBe(false);
    expect(signalVmm(reused, 'SIGKILL')).toBe(false);
    expect(vmmAlive({ ...me, bootId: 'another-boot' })).toBe(false);
    expect(signalVmm({ ...me, startTime: 'exited' }, 'SIGKILL')).toBe(false);
    expect(c.exitCode === null && c.signalCode === null).toBe(true);
    expect(signalVmm(me, 'SIGTERM')).toBe(true);
    expect(await waitVmmGone(me, 5000)).toBe(true);
    // Gone means exited (maybe not yet reaped): the signal shows once Node has reaped it.
    if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
    expect(c.signalCode).toBe('SIGTERM');
  });

  test('a state without a start time: alive only when the command line names the VM id', () => {
    const c = start('sh', ['-c', 'sleep 300', 'abcdefghij0123456789']);
    expect(vmmAlive({ pid: c.pid!, id: 'abcdefghij0123456789' })).toBe(true);
    expect(vmmAlive({ pid: c.pid!, id: 'zzzzzzzzzzzzzzzzzzzz' })).toBe(false);
    expect(vmmAlive({ pid: c.pid! })).toBe(false);
    expect(vmmAlive({ pid: 0, id: 'abcdefghij0123456789' })).toBe(false);
  });
});
