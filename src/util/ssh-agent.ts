import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError, errnoCode } from './errors.js';

/**
 * Build ssh agents, as `docker build --ssh` takes them: an id (`default` unless named) and the host path
 * of an ssh agent's socket. Only the id is ever printed or logged: the socket's path stays on the host
 * (never in the image, a step's key, the metadata or the log).
 */
export interface SshAgentSource {
  id: string;
  /** The agent's unix socket on this host (absolute). */
  socket: string;
}

/** An ssh agent's id (BuildKit's, as a secret's): letters, digits, `_`, `.` and `-` (not `.` or `..`). */
export function checkSshId(id: string, what: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(id) || id === '.' || id === '..') throw new UserError(`${what}: '${id.slice(0, 80)}' is not a valid ssh id: use letters, digits, '_', '.' and '-'`);
  return id;
}

/**
 * One `--ssh` spec: `default` (the socket in $SSH_AUTH_SOCK), `ID` alone (the same), or `ID=SOCKET`.
 * A key file instead of an agent socket is refused when checked (checkSshAgents), as is a list of paths.
 */
export function parseSshFlag(spec: string, env: NodeJS.ProcessEnv = process.env, flag = '--ssh'): SshAgentSource {
  const s = spec.trim();
  const eq = s.indexOf('=');
  const id = checkSshId(eq < 0 ? s : s.slice(0, eq), `malformed ${flag}`);
  let socket = eq < 0 ? '' : s.slice(eq + 1);
  if (socket.includes(',')) throw new UserError(`${flag} ${id}=...: give one agent socket per id (firebuild forwards an agent, not a list of keys)`);
  if (!socket) {
    socket = env.SSH_AUTH_SOCK ?? '';
    if (!socket) throw new UserError(`${flag} ${id}: SSH_AUTH_SOCK is not set: start an ssh agent (eval $(ssh-agent); ssh-add) or give ${id}=SOCKET_PATH`);
  }
  return { id, socket: path.resolve(socket) };
}

/** The agents by id; a later one of the same id replaces an earlier one. */
export function sshAgentsById(sources: readonly SshAgentSource[]): Map<string, SshAgentSource> {
  return new Map(sources.map((s) => [s.id, s]));
}

/**
 * Every agent given is a unix socket, checked before the build starts: a key file is refused in one line
 * saying to load it into an agent with ssh-add; a missing socket is one line naming the id. The paths are
 * not named (an agent's socket path is the user's own knowledge, not the log's).
 */
export async function checkSshAgents(sources: readonly SshAgentSource[], flag = '--ssh'): Promise<void> {
  for (const s of sources) {
    const st = await fsp.stat(s.socket).catch((err: unknown) => {
      throw new UserError(`${flag} ${s.id}: the agent socket cannot be reached (${errnoCode(err) ?? (err as Error).message}): start an ssh agent and give its socket (${s.id}=$SSH_AUTH_SOCK)`);
    });
    if (st.isFile()) throw new UserError(`${flag} ${s.id}: a key file is not an ssh agent: load it into an agent with ssh-add and pass the agent's socket (${s.id}=$SSH_AUTH_SOCK)`);
    if (!st.isSocket()) throw new UserError(`${flag} ${s.id}: not a unix socket: give the socket of an ssh agent (${s.id}=$SSH_AUTH_SOCK)`);
  }
}

/** Whether the agent's socket is there now (a build step checks before it forwards it). */
export async function sshAgentReachable(s: SshAgentSource): Promise<boolean> {
  return fsp.stat(s.socket).then((st) => st.isSocket(), () => false);
}
