import * as fsp from 'node:fs/promises';
import { UserError } from '../util/errors.js';
import { vmmAlive, type VmmIdentity } from './vmm-process.js';

/** The VM's serial console as the runtime reads it: waiting for a line, and a tail for error messages. */

/** What the host writes on QEMU's console socket to ask the guest init for a graceful stop. */
export const STOP_LINE = 'FIREBUILD-STOP';
/** Wait for a console line; a deadline or the VM's exit is an error carrying the console tail. */
export async function waitForConsole(serialLog: string, re: RegExp, vmm: VmmIdentity, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await fsp.readFile(serialLog, 'utf8').catch(() => '');
    if (re.test(text)) return text;
    if (!vmmAlive(vmm)) throw new UserError(`the VM exited before its init started: console tail: ${consoleTail(text)}`);
    if (Date.now() > deadline) throw new UserError(`the VM did not start its init within ${Math.round(timeoutMs / 1000)} s: console tail: ${consoleTail(text)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function consoleTail(text: string, n = 5): string {
  const lines = text.trim().split(/\r?\n/).filter(Boolean).slice(-n);
  return lines.length ? lines.join(' | ') : '(empty)';
}
