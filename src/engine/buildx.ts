import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { UserError, InternalError } from '../util/errors.js';
import { tailLines } from '../util/exec.js';
import type { Logger } from '../util/logger.js';

/**
 * BuildKit through `docker buildx build`, taking the file system straight from `--output type=tar`:
 * the context tar goes in on stdin, the root file system tar comes out on stdout (no image is made).
 */
export interface BuildxOptions {
  dockerfile: string;
  buildArgs: Record<string, string>;
  target?: string;
  labels: Record<string, string>;
}

export function buildxArgv(o: BuildxOptions): string[] {
  return [
    'buildx', 'build',
    '--progress=plain',
    '--file', o.dockerfile,
    '--output', 'type=tar,dest=-',
    ...Object.entries(o.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]),
    ...(o.target ? ['--target', o.target] : []),
    ...Object.entries(o.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
    '-',
  ];
}

/** BuildKit's failure output: the Dockerfile line (`  3 | >>> RUN false`) and the exit code. */
export function parseBuildkitFailure(stderr: string): { line?: number; exitCode?: number; message: string } {
  const line = /^\s*(\d+)\s*\|\s*>>>/m.exec(stderr);
  const code = /exit code: (\d+)/.exec(stderr);
  const err = /^ERROR: (.*)$/m.exec(stderr);
  const out: { line?: number; exitCode?: number; message: string } = { message: (err?.[1] ?? tailLines(stderr, 1)).trim() };
  if (line) out.line = Number(line[1]);
  if (code) out.exitCode = Number(code[1]);
  return out;
}

export function buildxTar(context: Readable, o: BuildxOptions, file: string, log: Logger): { stream: Readable; done: () => Promise<void> } {
  const child = spawn('docker', buildxArgv(o), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d;
    for (const l of d.toString().split('\n')) if (l.trim()) log.debug(l);
    if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
  });
  context.pipe(child.stdin);
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
  return {
    stream: child.stdout,
    done: async () => {
      const code = await exited;
      if (code === 0) return;
      const f = parseBuildkitFailure(stderr);
      if (f.exitCode !== undefined || f.line !== undefined) {
        throw new UserError(`the BuildKit build failed${f.exitCode !== undefined ? ` with exit code ${f.exitCode}` : ''}: ${f.message}`, { file, ...(f.line ? { line: f.line } : {}) });
      }
      throw new InternalError(`docker buildx build exited with ${code}: ${tailLines(stderr, 3)}`);
    },
  };
}
