import type { Readable } from 'node:stream';
import { UserError, InternalError } from '../util/errors.js';
import { exec, spawnStream, tailLines } from '../util/exec.js';
import type { Logger } from '../util/logger.js';
import type { SecretSource } from '../util/secrets.js';
import type { SshAgentSource } from '../util/ssh-agent.js';

/**
 * The one way firebuild runs `docker buildx`: BuildKit through `docker buildx build`, taking the file
 * system straight from `--output type=tar`: the context tar goes in on stdin, the root file system tar
 * comes out on stdout (no image is made). Its error policy: a failing Dockerfile step (BuildKit names its
 * line or exit code) is a UserError at that line; any other non-zero exit an InternalError with the end
 * of BuildKit's output; no docker CLI is the one-line not-found UserError; the build is killed when
 * firebuild is cancelled.
 */

/** Whether `docker buildx` is there (a docker CLI with the buildx plugin). */
export async function buildxAvailable(): Promise<boolean> {
  return exec('docker', ['buildx', 'version'], { allowFailure: true }).then((r) => r.code === 0, () => false);
}

export interface BuildxOptions {
  dockerfile: string;
  buildArgs: Record<string, string>;
  target?: string;
  labels: Record<string, string>;
  noCache?: boolean;
  /** Pull the bases from their registries even when the engine has them. */
  pull?: boolean;
  /** Build secrets, handed to BuildKit's own secret store (buildxSecrets). */
  secrets?: readonly SecretSource[];
  /** Build ssh agents (`--ssh ID=SOCKET`), forwarded by BuildKit itself. */
  sshAgents?: readonly SshAgentSource[];
}

/** One field of a docker CSV flag, quoted when it holds a comma or a quote. */
function csvField(f: string): string {
  return /[",\n]/.test(f) ? `"${f.replace(/"/g, '""')}"` : f;
}

/**
 * `--secret` flags for BuildKit: a file by its path (`src=`), a variable by its name (`env=`); a value
 * (the action's `secrets` input) goes into the docker CLI's environment as FIREBUILD_SECRET_<n>, named by
 * `env=`. No value is ever on the command line.
 */
export function buildxSecrets(secrets: readonly SecretSource[]): { args: string[]; env: Record<string, string> } {
  const args: string[] = [];
  const env: Record<string, string> = {};
  for (const [i, s] of secrets.entries()) {
    if (s.kind === 'file') args.push('--secret', `id=${s.id},${csvField(`src=${s.path}`)}`);
    else if (s.kind === 'env') args.push('--secret', `id=${s.id},env=${s.env}`);
    else {
      env[`FIREBUILD_SECRET_${i}`] = s.value.bytes().toString('utf8');
      args.push('--secret', `id=${s.id},env=FIREBUILD_SECRET_${i}`);
    }
  }
  return { args, env };
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
    ...(o.noCache ? ['--no-cache'] : []),
    ...(o.pull ? ['--pull'] : []),
    ...buildxSecrets(o.secrets ?? []).args,
    ...(o.sshAgents ?? []).flatMap((a) => ['--ssh', `${a.id}=${a.socket}`]),
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
  const secretEnv = buildxSecrets(o.secrets ?? []).env;
  const child = spawnStream('docker', buildxArgv(o), {
    ...(Object.keys(secretEnv).length ? { env: { ...process.env, ...secretEnv } } : {}),
    stdin: context,
    onStderrLine: (l) => {
      if (l.trim()) log.debug(l);
    },
    tailBytes: 1 << 19,
    notFound: 'install the docker CLI with the buildx plugin (docker-buildx)',
  });
  return {
    stream: child.stdout,
    done: async () => {
      const { code, stderr } = await child.exit;
      if (code === 0) return;
      const f = parseBuildkitFailure(stderr);
      if (f.exitCode !== undefined || f.line !== undefined) {
        throw new UserError(`the BuildKit build failed${f.exitCode !== undefined ? ` with exit code ${f.exitCode}` : ''}: ${f.message}`, { file, ...(f.line ? { line: f.line } : {}) });
      }
      throw new InternalError(`docker buildx build exited with ${code}: ${tailLines(stderr, 3)}`);
    },
  };
}
