import { describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BootFailure, consoleLines, consoleTail, exitCodeOf, followConsole, kernelPanic, lineKind, waitForStart } from '../../src/runtime/console.js';
import { identify } from '../../src/runtime/vmm-process.js';

/** The guest console protocol on a real log written by a real process standing in for the VMM. */
function vmmWriting(script: string): { log: string; vmm: ReturnType<typeof identify> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
  const log = path.join(dir, 'serial.log');
  const c = spawn('sh', ['-c', script, log], { stdio: 'ignore' });
  return { log, vmm: identify(c.pid!) };
}
async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('guest console protocol', () => {
  test('exitCodeOf and lineKind read the init lines', () => {
    expect(exitCodeOf('boot\nFIREBUILD-START pid=1\nhello\nFIREBUILD-EXIT code=42\r\n')).toBe(42);
    expect(exitCodeOf('FIREBUILD-START pid=1\nhello\n')).toBeUndefined();
    expect(lineKind('FIREBUILD-START pid=1 init-began=0.3')).toEqual({ kind: 'start' });
    expect(lineKind('FIREBUILD-EXIT code=0')).toEqual({ kind: 'exit', code: 0 });
    expect(lineKind('FIREBUILD-EXIT code=')).toEqual({ kind: 'output' });
  });

  test('followConsole yields everything until the VMM is gone, including what it wrote right before exiting, and a character split across writes whole', async () => {
    // 'é' is 0xc3 0xa9: its two bytes arrive in separate polls.
    const { log, vmm } = vmmWriting(`printf 'boot\\nFIREBUILD-START pid=1\\n' >> "$0"; sleep 0.4; printf 'caf\\303' >> "$0"; sleep 0.4; printf '\\251\\nFIREBUILD-EXIT code=3' >> "$0"`);
    const chunks = await collect(followConsole(log, vmm, { pollMs: 50 }));
    const text = chunks.join('');
    expect(text).toBe('boot\nFIREBUILD-START pid=1\ncafé\nFIREBUILD-EXIT code=3');
    expect(chunks.every((c) => !c.includes('\ufffd'))).toBe(true);
    expect(exitCodeOf(text)).toBe(3);
  });

  test('consoleLines splits into whole lines, the unterminated last one at the end; fromOffset skips what was read', async () => {
    const { log, vmm } = vmmWriting(`printf 'a\\r\\nb\\n' >> "$0"; sleep 0.2; printf 'c\\nd' >> "$0"`);
    expect(await collect(consoleLines(followConsole(log, vmm, { pollMs: 50 })))).toEqual(['a', 'b', 'c', 'd']);
    expect((await collect(followConsole(log, vmm, { fromOffset: 5 }))).join('')).toBe('c\nd');
  });

  test('a signal stops following while the VMM still runs; ticks come on idle polls', async () => {
    const { log, vmm } = vmmWriting(`printf 'x\\n' >> "$0"; exec sleep 30`);
    const started = Date.now();
    const chunks = await collect(followConsole(log, vmm, { pollMs: 50, ticks: true, signal: AbortSignal.timeout(500) }));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(chunks.join('')).toBe('x\n');
    expect(chunks.filter((c) => c === '').length).toBeGreaterThan(2);
    process.kill(vmm.pid, 'SIGKILL');
  });

  test('waitForStart: the start line returns, a VMM gone first is an error with the console tail', async () => {
    const ok = vmmWriting(`sleep 0.2; printf 'FIREBUILD-START pid=1\\n' >> "$0"; exec sleep 30`);
    await expect(waitForStart(ok.log, ok.vmm, 10_000)).resolves.toContain('FIREBUILD-START');
    process.kill(ok.vmm.pid, 'SIGKILL');
    const dead = vmmWriting(`printf 'Kernel panic\\n' >> "$0"`);
    await expect(waitForStart(dead.log, dead.vmm, 10_000)).rejects.toThrow('the VM exited before its init started: console tail: Kernel panic');
    const slow = vmmWriting('exec sleep 30');
    await expect(waitForStart(slow.log, slow.vmm, 300)).rejects.toThrow('the VM did not start its init within 0 s: console tail: (empty)');
    process.kill(slow.vmm.pid, 'SIGKILL');
  });

  // A real panic's shape (the suite kernel booted with init=/no-such-init, quiet): the cause, then the noise.
  const PANIC = [
    '[    0.753397] PCI: Fatal: No config space access function found',
    '\x1b[0m[    0.912345] Run /no-such-init as init process',
    '[    0.913000] Kernel panic - not syncing: Requested init /no-such-init failed (error -2).',
    '[    0.913500] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0 #1',
    '[    0.913600] Hardware name: QEMU MicroVM',
    '[    0.913700] Call Trace:',
    '[    0.913800]  <TASK>',
    '[    0.913900]  dump_stack_lvl+0x34/0x48',
    '[    0.914100]  ? rest_init+0xc0/0xc0',
    '[    0.914300]  ret_from_fork+0x22/0x30',
    '[    0.914400]  </TASK>',
    '[    0.914500] Kernel Offset: disabled',
    '[    0.914600] ---[ end Kernel panic - not syncing: Requested init /no-such-init failed (error -2). ]---',
    '',
  ].join('\r\n');

  test('kernelPanic names the panic line alone; the tail leaves out the register dump, the call trace and microvm\'s harmless PCI line', () => {
    expect(kernelPanic(PANIC)).toBe('Kernel panic - not syncing: Requested init /no-such-init failed (error -2).');
    expect(kernelPanic('[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n')).toBe('Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)');
    expect(kernelPanic('booting\nhello\n')).toBeUndefined();
    expect(consoleTail(PANIC, 2)).toBe('Run /no-such-init as init process | Kernel panic - not syncing: Requested init /no-such-init failed (error -2).');
    expect(consoleTail('\n\n')).toBe('(empty)');
    expect(consoleTail('[ 0.7] PCI: Fatal: No config space access function found\n[ 0.9] EXT4-fs (vda): mounted\n')).toBe('EXT4-fs (vda): mounted');
  });

  test('waitForStart: a kernel panic is a BootFailure naming the panic line and carrying the whole console', async () => {
    const { log, vmm } = (() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'console-'));
      const l = path.join(dir, 'serial.log');
      const c = spawn('sh', ['-c', 'printf "%s" "$1" >> "$0"', l, PANIC], { stdio: 'ignore' });
      return { log: l, vmm: { ...identify(c.pid!), id: 'vm1' } };
    })();
    const err = await waitForStart(log, vmm, 10_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BootFailure);
    expect((err as BootFailure).message).toBe("the VM's kernel panicked before its init started: Kernel panic - not syncing: Requested init /no-such-init failed (error -2).");
    expect((err as BootFailure).console).toBe(PANIC);
    expect((err as BootFailure).vmId).toBe('vm1');
  });
});
