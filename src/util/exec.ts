import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { Readable } from 'node:stream';
import { own } from './cleanup.js';
import { InternalError, UserError, errnoCode } from './errors.js';
import type { Logger } from './logger.js';

export interface ExecResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  /** Do not throw on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
  logger?: Logger;
  /** How to get the tool when it is not there (the fix of the one-line "not found" error). */
  notFound?: string;
}

const INSTALL_HINT = 'install it (scripts/install-deps.sh installs every part firebuild uses)';

/** The one error for a tool that could not be started: not found is a UserError saying how to get it. */
function startError(cmd: string, err: unknown, notFound: string | undefined): Error {
  if (errnoCode(err) === 'ENOENT') return new UserError(`${cmd} not found: ${notFound ?? INSTALL_HINT}`, { cause: err });
  return new InternalError(`cannot run ${cmd}`, { cause: err });
}

/** The single way the product runs an external tool. Tests can call it for real or spy on it. */
export async function exec(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  opts.logger?.debug('exec', { argv: [cmd, ...args] });
  const spawnOpts: SpawnOptions = { stdio: ['pipe', 'pipe', 'pipe'] };
  if (opts.cwd) spawnOpts.cwd = opts.cwd;
  if (opts.env) spawnOpts.env = opts.env;
  if (opts.timeoutMs) spawnOpts.timeout = opts.timeoutMs;
  return new Promise<ExecResult>((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args as string[], spawnOpts);
    } catch (err) {
      reject(new InternalError(`cannot run ${cmd}`, { cause: err }));
      return;
    }
    const out: Buffer[] = [];
    const errb: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => errb.push(d));
    child.on('error', (err) => reject(startError(cmd, err, opts.notFound)));
    child.on('close', (code, signal) => {
      const res: ExecResult = {
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(errb).toString('utf8'),
      };
      if (res.code !== 0 && !opts.allowFailure) {
        reject(new ExecError(cmd, args, res));
      } else {
        resolve(res);
      }
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

export interface StreamOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** What the child reads: a stream piped in, or bytes; none: /dev/null. */
  stdin?: Readable | string | Buffer;
  /** Aborting kills the child and what it started (SIGTERM to its process group, then SIGKILL after 2 s). */
  signal?: AbortSignal;
  /** Each stderr line as it comes (progress for the log); the tail is kept for the error either way. */
  onStderrLine?: (line: string) => void;
  /** Bytes of stderr kept for the error (default 64 KiB: the end of it). */
  tailBytes?: number;
  logger?: Logger;
  notFound?: string;
}

export interface StreamExit {
  code: number;
  signal: NodeJS.Signals | null;
  /** The end of stderr (at most tailBytes). */
  stderr: string;
  /** Killed by kill(), the AbortSignal, or the process's cancel (SIGINT/SIGTERM of firebuild). */
  killed: boolean;
}

export interface StreamChild {
  /** The child's stdout, to be consumed (or the child blocks once the pipe is full). */
  readonly stdout: Readable;
  /** How the child ended; rejects only when it could not be started (not found: the same UserError as exec). */
  readonly exit: Promise<StreamExit>;
  /** Resolves when the child exited 0; else rejects (ExecError with the stderr tail, or the start error). */
  wait(): Promise<void>;
  /** Kill the child and what it started (SIGTERM to its process group, then SIGKILL after 2 s); resolves once it is gone. */
  kill(): Promise<void>;
}

/**
 * The one way the product runs a long external tool whose output is a stream (a decompressor, BuildKit,
 * make): stdout is handed on as a stream, the end of stderr is kept for the error, and the child can be
 * cancelled (kill(), an AbortSignal). The child is owned by this process (util/cleanup.ts) while it runs:
 * a SIGINT/SIGTERM of firebuild kills it instead of leaving it running; started after a cancel, it is
 * killed at once and CancelledError thrown. A tool that is not installed is the same one-line UserError
 * as exec's.
 */
export function spawnStream(cmd: string, args: readonly string[], opts: StreamOptions = {}): StreamChild {
  opts.logger?.debug('exec', { argv: [cmd, ...args] });
  // A process group of its own, so that a kill reaches what the tool started too (make's compilers): they
  // would otherwise live on, holding the output pipe open.
  const spawnOpts: SpawnOptions = { stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], detached: true };
  if (opts.cwd) spawnOpts.cwd = opts.cwd;
  if (opts.env) spawnOpts.env = opts.env;
  const child: ChildProcess = spawn(cmd, args as string[], spawnOpts);
  const tailBytes = opts.tailBytes ?? 64 << 10;
  let killed = false;
  let stderr = '';
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    const text = d.toString('utf8');
    stderr += text;
    if (stderr.length > 2 * tailBytes) stderr = stderr.slice(-tailBytes);
    if (opts.onStderrLine) {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) opts.onStderrLine(l);
    }
  });
  const exit = new Promise<StreamExit>((resolve, reject) => {
    child.on('error', (err) => reject(startError(cmd, err, opts.notFound)));
    child.on('close', (code, signal) => {
      if (partial && opts.onStderrLine) opts.onStderrLine(partial);
      resolve({ code: code ?? -1, signal, stderr: stderr.slice(-tailBytes), killed });
    });
  });
  // Nobody may be awaiting `exit` when a start error comes: it is reported through wait()/exit when asked for.
  exit.catch(() => undefined);
  const gone = exit.then(() => undefined, () => undefined);
  const signalGroup = (sig: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      killed = true;
      signalGroup('SIGTERM');
      const timer = setTimeout(() => signalGroup('SIGKILL'), 2000);
      await gone;
      clearTimeout(timer);
    }
    await gone;
  };
  if (opts.stdin !== undefined) {
    // The child may exit before reading all of it (a failed build): EPIPE is its exit's business, not ours.
    child.stdin!.on('error', () => undefined);
    if (typeof opts.stdin === 'string' || Buffer.isBuffer(opts.stdin)) child.stdin!.end(opts.stdin);
    else opts.stdin.pipe(child.stdin!);
  }
  const onAbort = (): void => void kill();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();
  let release: () => void = () => undefined;
  void gone.then(() => {
    release();
    opts.signal?.removeEventListener('abort', onAbort);
  });
  release = own(`process ${cmd}${child.pid ? ` (pid ${child.pid})` : ''}`, kill);
  return {
    stdout: child.stdout!,
    exit,
    kill,
    wait: async () => {
      const r = await exit;
      if (r.code !== 0) throw new ExecError(cmd, args, { code: r.code, signal: r.signal, stdout: '', stderr: r.stderr });
    },
  };
}

export class ExecError extends InternalError {
  constructor(
    readonly cmd: string,
    readonly args: readonly string[],
    readonly result: ExecResult,
  ) {
    const tail = tailLines(result.stderr || result.stdout, 5);
    super(`${cmd} exited with ${result.signal ?? result.code}${tail ? `: ${tail}` : ''}`);
  }
}

export function tailLines(s: string, n: number): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}

/** True when `cmd` can be found on PATH (or is an executable path). */
export async function which(cmd: string): Promise<string | undefined> {
  const { access, constants } = await import('node:fs/promises');
  const path = await import('node:path');
  const candidates = cmd.includes('/')
    ? [cmd]
    : (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
        .split(':')
        .concat(['/usr/sbin', '/sbin'])
        .map((d) => path.join(d, cmd));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}
