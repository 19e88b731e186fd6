import * as path from 'node:path';
import type { Step } from '../../dockerfile/plan-schema.js';
import { SSH_VSOCK_PORT, sshPortName, type GuestSshAgent } from '../../guest/run-config.js';
import { own } from '../../util/cleanup.js';
import { UserError } from '../../util/errors.js';
import { FALSE, mountIntOption, TRUE } from './mount-options.js';
import type { Logger } from '../../util/logger.js';
import { checkSshId, sshAgentReachable, type SshAgentSource } from '../../util/ssh-agent.js';
import { SshAgentRelay } from './ssh-relay.js';

/**
 * `RUN --mount=type=ssh` in the vm engine, as BuildKit does it: the host's ssh agent (`--ssh ID=SOCKET`)
 * is reachable inside that RUN's VM through a unix socket at the target, `SSH_AUTH_SOCK` naming the first
 * one. The socket is the guest init's relay, which passes whole agent messages down a virtio-serial port
 * (QEMU) or vsock (Firecracker) to the host relay (ssh-relay.ts), which forwards only the requests that
 * list keys and sign, never one that adds, removes or locks. The agent's path stays on the host: the step's
 * key holds only the mount's spec. The target's missing parent directories (and the target, as a mount
 * point) are made for the step and removed after it, as for secrets.
 */

export interface SshMount {
  id: string;
  /** Absolute once resolved against the WORKDIR (sshMounts). */
  target: string;
  required: boolean;
  mode: number;
  uid: number;
  gid: number;
}

const KEYS = new Set(['type', 'id', 'target', 'dst', 'destination', 'required', 'mode', 'uid', 'gid']);
/** Where the guest's own file systems are mounted, or firebuild's init lives: no socket goes there. */
const RESERVED = ['/proc', '/sys', '/dev', '/.firebuild'];

/**
 * One `--mount=type=ssh,...` as BuildKit reads it: `id` (default `default`), `target` (`dst`,
 * `destination`; default `/run/buildkit/ssh_agent.<n>`, n counting the RUN's ssh mounts from 0),
 * `required` (default false), `mode` (octal, default 0600), `uid` and `gid` (default 0).
 */
export function parseSshMount(m: Record<string, string>, n: number, where: { file: string; line: number }): SshMount {
  const what = 'RUN --mount=type=ssh';
  for (const k of Object.keys(m)) {
    if (!KEYS.has(k)) throw new UserError(`${what} does not take '${k}': use id, target, required, mode, uid or gid`, where);
  }
  const target = m.target ?? m.dst ?? m.destination ?? `/run/buildkit/ssh_agent.${n}`;
  if (target === '') throw new UserError(`${what}: target is empty: give a path, e.g. target=/run/ssh.sock`, where);
  const id = m.id || 'default';
  try {
    checkSshId(id, what);
  } catch (err) {
    throw new UserError((err as Error).message, where);
  }
  const int = (key: 'mode' | 'uid' | 'gid', def: number): number => mountIntOption(m, key, def, what, where, '0660');
  let required = false;
  if (m.required !== undefined) {
    if (TRUE.has(m.required)) required = true;
    else if (!FALSE.has(m.required)) throw new UserError(`${what}: required=${m.required.slice(0, 20)} is not true or false`, where);
  }
  return { id, target, required, mode: int('mode', 0o600), uid: int('uid', 0), gid: int('gid', 0) };
}

/** The step's ssh mounts (checked, numbered as BuildKit numbers them), targets made absolute against the WORKDIR. */
export function sshMounts(step: Step, workdir: string): SshMount[] {
  const where = { file: step.file, line: step.line };
  return (step.mounts ?? []).filter((m) => m.type === 'ssh').map((m, n) => {
    const s = parseSshMount(m, n, where);
    const target = path.posix.resolve(workdir || '/', s.target);
    if (target === '/') throw new UserError(`RUN --mount=type=ssh,id=${s.id}: the target is the root directory: give a socket path`, where);
    const reserved = RESERVED.find((r) => target === r || target.startsWith(`${r}/`));
    if (reserved) throw new UserError(`RUN --mount=type=ssh,id=${s.id}: the target ${target} is under ${reserved}, which the build VM mounts itself: give another path`, where);
    return { ...s, target };
  });
}

/**
 * BuildKit's environment for a RUN with ssh mounts: SSH_AUTH_SOCK is the first mount's target unless the
 * step's environment sets it (llb's ExecState does the same, whether or not the agent was given).
 */
export function sshEnv(mounts: readonly SshMount[], env: readonly string[]): string[] {
  if (!mounts.length || env.some((e) => e.startsWith('SSH_AUTH_SOCK='))) return [...env];
  return [...env, `SSH_AUTH_SOCK=${mounts[0]!.target}`];
}

/** A mount the step forwards: the guest's side (GuestSshAgent) and the host agent it reaches. */
export interface StepSshAgent {
  guest: GuestSshAgent;
  agent: SshAgentSource;
}

/**
 * The agents a RUN forwards: a mount whose id was not given (or whose socket is gone) is skipped with an
 * info line, as BuildKit does, unless it says required=true, which is one line naming the id and how to
 * pass it. Channels are numbered in the order of the mounts forwarded.
 */
export async function stepSshAgents(mounts: readonly SshMount[], agents: ReadonlyMap<string, SshAgentSource>, label: string, where: { file: string; line: number }, log: Logger): Promise<StepSshAgent[]> {
  const out: StepSshAgent[] = [];
  for (const m of mounts) {
    const agent = agents.get(m.id);
    if (!agent || !(await sshAgentReachable(agent))) {
      if (m.required) {
        throw new UserError(`${label}: the ssh agent '${m.id}' is required (required=true) and ${agent ? 'its socket is gone' : 'was not given'}: pass --ssh ${m.id === 'default' ? 'default' : `${m.id}=SOCKET`} (the socket of an ssh agent, e.g. ${m.id}=$SSH_AUTH_SOCK), or in build-rootfs the input ssh`, where);
      }
      log.info(`${label}: ssh agent '${m.id}' not given: its mount is skipped`);
      continue;
    }
    out.push({ guest: { channel: out.length, target: m.target, mode: m.mode, uid: m.uid, gid: m.gid }, agent });
  }
  return out;
}

/**
 * The host relays of a RUN's forwarded agents, one channel each (listening once the backend says where),
 * owned from here: closed (their sockets removed) when the step ends, fails or is cancelled.
 */
export function startSshRelays(agents: readonly StepSshAgent[], label: string, log: Logger): { channels: SshAgentRelay[]; close: () => Promise<void> } {
  if (!agents.length) return { channels: [], close: async () => undefined };
  const channels = agents.map((a) => new SshAgentRelay(a.agent.id, a.agent.socket, { name: sshPortName(a.guest.channel), vsockPort: SSH_VSOCK_PORT + a.guest.channel }, log));
  const closeAll = async (): Promise<void> => {
    for (const r of channels) await r.close();
  };
  const release = own(`the ssh agent relays of ${label}`, closeAll);
  return {
    channels,
    close: async () => {
      await closeAll();
      release();
      for (const r of channels) log.debug(`${label}: ssh agent '${r.id}': ${r.counts.forwarded} request(s) forwarded, ${r.counts.refused} refused`);
    },
  };
}
