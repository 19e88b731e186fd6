import { spawn, type SpawnOptions } from 'node:child_process';
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
    child.on('error', (err) => {
      if (errnoCode(err) === 'ENOENT') {
        reject(new UserError(`${cmd} not found: install it (scripts/install-deps.sh installs every part firebuild uses)`, { cause: err }));
      } else {
        reject(new InternalError(`cannot run ${cmd}`, { cause: err }));
      }
    });
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
