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

/**
 * A VM that never started its init: the kernel panicked, the VMM exited, or the boot deadline passed. The
 * message names the panic line (or the last meaningful console lines); `console` is the whole serial log
 * as it was, for the faces to show and keep (the launch removes the VM and its run cache right after).
 */
export class BootFailure extends UserError {
  constructor(message: string, readonly vmId: string | undefined, readonly console: string) {
    super(message);
  }
}

/** Wait for the init's start line (or its exit line: a command that ended at once); a deadline or the VM's exit is a BootFailure. */
export async function waitForStart(serialLog: string, vmm: VmmIdentity, timeoutMs: number): Promise<string> {
  let text = '';
  // Polled every 50 ms: the boot time (bootTimes) is measured by this loop.
  for await (const chunk of followConsole(serialLog, vmm, { signal: AbortSignal.timeout(timeoutMs), pollMs: 50, ticks: true })) {
    // A cancelled process (SIGINT/SIGTERM) stops waiting: its owner registry tears the VM down.
    throwIfCancelled();
    text += chunk;
    if (START_RE.test(text) || EXIT_RE.test(text)) return text;
  }
  // The last lines the VMM wrote before it died (the follower stops reading once the deadline aborts).
  text = (await readConsole(serialLog)) || text;
  const panic = kernelPanic(text);
  if (panic) throw new BootFailure(`the VM's kernel panicked before its init started: ${panic}`, vmm.id, text);
  if (!vmmAlive(vmm)) throw new BootFailure(`the VM exited before its init started: console tail: ${consoleTail(text)}`, vmm.id, text);
  throw new BootFailure(`the VM did not start its init within ${Math.round(timeoutMs / 1000)} s: console tail: ${consoleTail(text)}`, vmm.id, text);
}

/** `Kernel panic - not syncing: ...` (the kernel's own words, without its timestamp). */
const PANIC_RE = /Kernel panic - not syncing:.*/;

/**
 * Console lines that say nothing about why a boot failed: the panic's register dump and call trace, its
 * end marker, the kernel's identification lines. Dropped from tails so the annotation shows the cause.
 */
const NOISE_RE = [
  /^-+\[ (end|cut here)/,
  /^(Call Trace|Kernel Offset|Hardware name|Modules linked in|CPU: \d+ .*PID|RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d+|FS|GS|CS|CR\d|DR\d|Code|PKRU)\b:?/,
  /^<\/?TASK>$/,
  /^(\? )?[\w.]+\+0x[0-9a-f]+\/0x[0-9a-f]+/,
  /^Rebooting in /,
  // QEMU microvm has no PCI (the kernel runs with pci=off): the kernel says so at every boot, harmlessly.
  /^PCI: Fatal: No config space access function found$/,
];

/** A console line as shown: no terminal escapes or control characters, no kernel timestamp. */
function cleanLine(line: string): string {
  // eslint-disable-next-line no-control-regex
  return line.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '').replace(/^\s*\[\s*\d+\.\d+\]\s?/, '').trim();
}

/** The console's lines that say something: cleaned, without blank lines and panic noise. */
export function meaningfulLines(text: string): string[] {
  return text.split(/\r?\n/).map(cleanLine).filter((l) => l !== '' && !NOISE_RE.some((re) => re.test(l)));
}

/**
 * The kernel's panic line, or undefined when the console holds no panic. Only that line: it names the
 * cause itself ("Requested init /x failed", "VFS: Unable to mount root fs", "No working init found"),
 * and under `quiet` the line before it is whatever warning came last, unrelated (on QEMU microvm: "PCI:
 * Fatal: No config space access function found"). The whole console is in the folded log and artifact.
 */
export function kernelPanic(text: string): string | undefined {
  const line = meaningfulLines(text).find((l) => PANIC_RE.test(l));
  return line === undefined ? undefined : PANIC_RE.exec(line)![0].trim();
}

/** The last `n` meaningful console lines, joined by ` | ` ('(empty)' when there are none). */
export function consoleTail(text: string, n = 5): string {
  const lines = meaningfulLines(text).slice(-n);
  return lines.length ? lines.join(' | ') : '(empty)';
}
