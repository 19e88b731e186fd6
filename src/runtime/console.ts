import * as fsp from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { throwIfCancelled } from '../util/cleanup.js';
import { UserError } from '../util/errors.js';
import { vmmAlive, type VmmIdentity } from './vmm-process.js';

/**
 * The guest console protocol, in one place. The guest init (src/guest/init) prints a start line once it
 * has set the guest up and started the command, and an exit line with the command's code before it halts;
 * the host asks for a graceful stop by writing the stop line on QEMU's console socket (Firecracker's stop is
 * Ctrl+Alt+Del through its API). Everything on the host that reads the console goes through here: the
 * launch's wait for the init, `run` in the foreground, `logs --follow`, the exit-code probe, kill's report,
 * the vm engine's build steps.
 */

/** `FIREBUILD-START pid=N ...`: the init has configured the guest and started the command. */
export const START_RE = /FIREBUILD-START/;
/** `FIREBUILD-EXIT code=N`: the command ended with code N (the VM halts next). */
export const EXIT_RE = /FIREBUILD-EXIT code=(\d+)/;
/** What the host writes on QEMU's console socket to ask the guest init for a graceful stop. */
export const STOP_LINE = 'FIREBUILD-STOP';

/** The command's exit code from console text (a line or the whole log), or undefined when it has not exited. */
export function exitCodeOf(text: string): number | undefined {
  const m = EXIT_RE.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** One console line as the protocol sees it. */
export function lineKind(line: string): { kind: 'start' } | { kind: 'exit'; code: number } | { kind: 'output' } {
  if (START_RE.test(line)) return { kind: 'start' };
  const code = exitCodeOf(line);
  return code === undefined ? { kind: 'output' } : { kind: 'exit', code };
}

export interface FollowOptions {
  /** Start reading at this byte offset of the serial log (0: from the start). */
  fromOffset?: number;
  /** How often the log and the VMM are looked at (ms). */
  pollMs?: number;
  /** Stop following (returns quietly, the VM untouched): a deadline (AbortSignal.timeout) or the caller's cancel. */
  signal?: AbortSignal;
  /** Also yield '' on every poll that found nothing new, so a caller can do periodic work (deadlines, disk checks). */
  ticks?: boolean;
}

/**
 * Follow a VM's serial log: yields the console's text as it is written (chunks of whole UTF-8 characters,
 * not lines: see consoleLines), until the VMM is gone, then whatever it wrote last, then returns. The log is
 * read again after the VMM is seen gone, so nothing written just before its exit is lost. A log that does
 * not exist (yet) reads as empty. Breaking out of the loop stops the following; it never touches the VM.
 */
export async function* followConsole(serialLog: string, vmm: VmmIdentity, o: FollowOptions = {}): AsyncGenerator<string, void, undefined> {
  let offset = o.fromOffset ?? 0;
  const decoder = new StringDecoder('utf8');
  const read = async (): Promise<string> => {
    const fh = await fsp.open(serialLog, 'r').catch(() => undefined);
    if (!fh) return '';
    try {
      const { size } = await fh.stat();
      if (size <= offset) return '';
      const buf = Buffer.alloc(size - offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      offset += bytesRead;
      return decoder.write(buf.subarray(0, bytesRead));
    } finally {
      await fh.close();
    }
  };
  for (;;) {
    if (o.signal?.aborted) return;
    const gone = !vmmAlive(vmm);
    const text = await read();
    if (text || o.ticks) yield text;
    if (gone) {
      const rest = decoder.end();
      if (rest) yield rest;
      return;
    }
    await new Promise((r) => setTimeout(r, o.pollMs ?? 250));
  }
}

/** Whole lines (without their line end) of a followed console; the last, unterminated line comes at the end. Ticks ('') are dropped. */
export async function* consoleLines(chunks: AsyncIterable<string>): AsyncGenerator<string, void, undefined> {
  let partial = '';
  for await (const chunk of chunks) {
    const lines = (partial + chunk).split(/\r?\n/);
    partial = lines.pop() ?? '';
    yield* lines;
  }
  if (partial) yield partial;
}

/** The whole console so far ('' when there is none). */
export async function readConsole(serialLog: string): Promise<string> {
  return fsp.readFile(serialLog, 'utf8').catch(() => '');
}

/** Wait for the init's start line (or its exit line: a command that ended at once); a deadline or the VM's exit is an error carrying the console tail. */
export async function waitForStart(serialLog: string, vmm: VmmIdentity, timeoutMs: number): Promise<string> {
  let text = '';
  for await (const chunk of followConsole(serialLog, vmm, { signal: AbortSignal.timeout(timeoutMs), pollMs: 200, ticks: true })) {
    // A cancelled process (SIGINT/SIGTERM) stops waiting: its owner registry tears the VM down.
    throwIfCancelled();
    text += chunk;
    if (START_RE.test(text) || EXIT_RE.test(text)) return text;
  }
  if (!vmmAlive(vmm)) throw new UserError(`the VM exited before its init started: console tail: ${consoleTail(text)}`);
  throw new UserError(`the VM did not start its init within ${Math.round(timeoutMs / 1000)} s: console tail: ${consoleTail(text)}`);
}

export function consoleTail(text: string, n = 5): string {
  const lines = text.trim().split(/\r?\n/).filter(Boolean).slice(-n);
  return lines.length ? lines.join(' | ') : '(empty)';
}
