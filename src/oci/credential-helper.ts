import { spawn } from 'node:child_process';
import { own } from '../util/cleanup.js';
import { UserError } from '../util/errors.js';

/**
 * A Docker credential helper run as Docker runs it (docker-credential-helpers' client.Get):
 * `docker-credential-<name> get`, the server URL on stdin, `{"ServerURL","Username","Secret"}` on stdout.
 * A non-zero exit whose stdout is `credentials not found in native keychain` means no credentials
 * (anonymous); any other failure is an error naming the helper and the registry. Bounded: the helper
 * must answer within FIREBUILD_CREDENTIAL_HELPER_TIMEOUT seconds (default 60) and in at most 64 KiB,
 * else it is killed. The secret only ever travels on the helper's stdout: it is never logged, never on
 * an argv, never in an error (a malformed answer is reported without its text).
 */
export const ENV_HELPER_TIMEOUT = 'FIREBUILD_CREDENTIAL_HELPER_TIMEOUT';
export const DEFAULT_HELPER_TIMEOUT_MS = 60_000;
export const HELPER_MAX_OUTPUT = 64 * 1024;
/** docker-credential-helpers' ErrCredentialsNotFound message. */
export const NOT_FOUND_MESSAGE = 'credentials not found in native keychain';
/** The Username a helper answers with when the Secret is an identity (refresh) token. */
export const TOKEN_USERNAME = '<token>';

export interface HelperAnswer { username: string; secret: string }

export interface HelperCall {
  /** The helper's suffix: `desktop` runs docker-credential-desktop. */
  helper: string;
  /** What the helper is asked for: `https://index.docker.io/v1/` or the registry host. */
  serverUrl: string;
  /** The registry, for messages. */
  registry: string;
  /** Where the helper was configured, for messages: `credsStore in /home/u/.docker/config.json`. */
  from: string;
  env?: NodeJS.ProcessEnv;
}

function timeoutMs(env: NodeJS.ProcessEnv): number {
  const v = env[ENV_HELPER_TIMEOUT];
  if (v === undefined || v === '') return DEFAULT_HELPER_TIMEOUT_MS;
  if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new UserError(`malformed ${ENV_HELPER_TIMEOUT}='${v}': give seconds, e.g. ${ENV_HELPER_TIMEOUT}=30`);
  return Math.round(Number(v) * 1000);
}

/** The first line of what a failed helper said, at most 200 characters. */
function firstLine(s: string): string {
  const line = s.trim().split('\n')[0]?.trim() ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

/** The credentials the helper holds for `serverUrl`; undefined when it has none (anonymous). */
export async function helperGet(c: HelperCall): Promise<HelperAnswer | undefined> {
  const env = c.env ?? process.env;
  const program = `docker-credential-${c.helper}`;
  const what = `the credential helper ${program} (${c.from})`;
  // A name with a slash would run a file by path, not a helper found on PATH.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(c.helper)) throw new UserError(`${what} has a malformed name '${c.helper}': give the part after docker-credential-, e.g. desktop or ecr-login`);
  const limit = timeoutMs(env);
  type Outcome = { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; why?: string; startError?: NodeJS.ErrnoException };
  let child: ReturnType<typeof spawn> | undefined;
  // The helper and whatever it starts (a script's `sleep`) are one process group, killed together.
  const killGroup = (): void => {
    try {
      if (child?.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  // Registered before the spawn: a cancel (SIGINT/SIGTERM) kills the helper with the rest.
  const release = own(`credential helper ${program}`, killGroup);
  const r = await new Promise<Outcome>((resolve) => {
    const p = spawn(program, ['get'], { stdio: ['pipe', 'pipe', 'pipe'], env, detached: true });
    child = p;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let why: string | undefined;
    const stop = (reason: string): void => {
      why ??= reason;
      killGroup();
      // Something that left the group may still hold the pipes: do not wait for it.
      setTimeout(() => finish({ code: null, signal: 'SIGKILL' }), 2000).unref();
    };
    const timer = setTimeout(() => stop(`gave no answer within ${Math.round(limit / 1000)} s (${ENV_HELPER_TIMEOUT} allows longer)`), limit);
    const take = (into: Buffer[]) => (d: Buffer): void => {
      size += d.length;
      if (size > HELPER_MAX_OUTPUT) return stop(`wrote more than ${HELPER_MAX_OUTPUT / 1024} KiB (an answer is one small JSON object)`);
      into.push(d);
    };
    let finished = false;
    const finish = (o: Omit<Outcome, 'stdout' | 'stderr'>): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      p.stdout.destroy();
      p.stderr.destroy();
      resolve({ ...o, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ...(why ? { why } : {}) });
    };
    p.stdout.on('data', take(out));
    p.stderr.on('data', take(err));
    p.stdin.on('error', () => undefined);
    p.on('error', (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, startError: e }));
    p.on('close', (code, signal) => finish({ code, signal }));
    // Docker writes the server URL without a newline.
    p.stdin.end(c.serverUrl);
  }).finally(release);
  if (r.startError) {
    if (r.startError.code === 'ENOENT') throw new UserError(`${what} is needed for registry ${c.registry} but ${program} is not on PATH: install it, or remove it from the Docker config`);
    throw new UserError(`${what} cannot be started for registry ${c.registry}: ${r.startError.code ?? r.startError.message}`);
  }
  if (r.why) throw new UserError(`${what} ${r.why}, asked for registry ${c.registry}: killed it`);
  if (r.code !== 0) {
    const said = r.stdout.trim();
    if (said === NOT_FOUND_MESSAGE) return undefined;
    const msg = firstLine(said || r.stderr);
    throw new UserError(`${what} failed for registry ${c.registry} (${r.signal ? `killed by ${r.signal}` : `exit ${r.code}`})${msg ? `: ${msg}` : ''}`);
  }
  let answer: unknown;
  try {
    answer = JSON.parse(r.stdout);
  } catch {
    answer = undefined;
  }
  const a = answer as { Username?: unknown; Secret?: unknown } | undefined;
  if (!a || typeof a !== 'object' || (a.Username !== undefined && typeof a.Username !== 'string') || (a.Secret !== undefined && typeof a.Secret !== 'string')) {
    throw new UserError(`${what} answered for registry ${c.registry} with something other than {"ServerURL","Username","Secret"} JSON: is it a Docker credential helper?`);
  }
  const username = (a.Username as string | undefined) ?? '';
  const secret = (a.Secret as string | undefined) ?? '';
  return username || secret ? { username, secret } : undefined;
}
