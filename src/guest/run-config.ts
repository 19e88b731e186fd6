import type { ImageConfig } from '../store/metadata.js';
import { UserError } from '../util/errors.js';
import type { SecretValue } from '../util/secrets.js';

/**
 * The run configuration the guest init reads from the config disk: `run.sh` (hostname, network, user,
 * workdir, stop signal, SSH user, and the command as `set --`) and `env.sh` (the environment, also
 * installed as /etc/profile.d/run-env.sh with mode 0600). Every value is single-quoted for the shell.
 */
export interface RunConfig {
  hostname: string;
  /** `kernel`: the kernel configured eth0 from `ip=` on its command line (kernelIpArg); the init skips it. */
  net: { mode: 'none' | 'dhcp' } | { mode: 'static' | 'kernel'; ip: string; gateway?: string };
  dns?: string[];
  /** Image ENV, then env files in order, then --env: later entries win. */
  env: string[];
  command: string[];
  user: string;
  workdir: string;
  stopSignal: string;
  sshUser?: string;
  /** `image`: after the setup, exec the image's own init (/sbin/init) instead of the command. */
  init?: 'firebuild' | 'image';
  /** How the init ends the VM: `poweroff` (QEMU) or `reboot` (Firecracker exits on the guest's reboot). */
  halt?: 'poweroff' | 'reboot';
  /** A build step: no tmpfs on /tmp and /run, no /etc/profile.d/run-env.sh (the image keeps what RUN writes). */
  build?: boolean;
  /** A build step's secrets (RUN --mount=type=secret): on the config disk for that step only. */
  secrets?: GuestSecret[];
  /** A build step's ssh agents (RUN --mount=type=ssh): a socket at each target, relayed to the host's agent. */
  sshAgents?: GuestSshAgent[];
  /** A build step's cache, bind and tmpfs mounts (RUN --mount), mounted by the init before the secrets. */
  mounts?: GuestMount[];
}

/**
 * One forwarded ssh agent for the guest init: a unix socket at `target` (mode, uid, gid as asked) whose
 * agent requests go, one whole frame at a time, down the virtio-serial port `firebuild.ssh.<channel>`
 * (QEMU) or a vsock connection to the host on port SSH_VSOCK_PORT + channel (Firecracker).
 */
export interface GuestSshAgent {
  channel: number;
  target: string;
  mode: number;
  uid: number;
  gid: number;
}

/** The virtio-serial port name of ssh agent channel `n`, as the guest init looks it up. */
export function sshPortName(n: number): string {
  return `firebuild.ssh.${n}`;
}

/** The vsock port of ssh agent channel `n` (guest init: SSH_VSOCK_PORT in guest/init.c). */
export const SSH_VSOCK_PORT = 7300;

/**
 * How the inits find the ssh agents: `ssh.nul` (compiled init) holds five fields per agent (channel,
 * target, octal mode, uid, gid); `ssh.sh` (shell init) is there so the shell init can refuse them.
 */
export function renderSshAgents(agents: readonly GuestSshAgent[]): { nul: Buffer; sh: string } {
  const rows = agents.map((a) => [String(a.channel), a.target, a.mode.toString(8).padStart(4, '0'), String(a.uid), String(a.gid)]);
  for (const r of rows) if (r.some((f) => /[\0\n]/.test(f))) throw new UserError('an ssh mount target holds a NUL or line break: give another target');
  return {
    nul: Buffer.from(rows.flat().map((f) => `${f}\0`).join('')),
    sh: rows.map((r) => `fb_ssh_agent ${r.map(shellQuote).join(' ')}\n`).join(''),
  };
}

/**
 * One RUN mount for the guest init: `ext4` mounts the extra drive `/dev/<dev>` (the order the host
 * attached them: vdc, vdd, ...) on a private staging directory and binds its `source` subpath at
 * `target`; `tmpfs` mounts a tmpfs of `size` bytes (0: the kernel's default) at `target`. `ro` seals it
 * read-only. A missing target is made as a last resort (the host made the mount points in the image).
 */
export interface GuestMount {
  kind: 'ext4' | 'tmpfs';
  dev?: string;
  source?: string;
  target: string;
  ro: boolean;
  /** `file`: the target is a file (a bind of one file); else a directory. */
  file?: boolean;
  size?: number;
}

/**
 * How the inits find the mounts: `mounts.nul` (compiled init) holds six fields per mount (kind, device,
 * source, target, ro|rw, size or `file`) and `mounts.sh` (shell init) one `fb_mount` call per mount with
 * the same fields.
 */
export function renderMounts(mounts: readonly GuestMount[]): { nul: Buffer; sh: string } {
  const rows = mounts.map((m) => [m.kind, m.dev ?? '', m.source ?? '/', m.target, m.ro ? 'ro' : 'rw', m.file ? 'file' : String(m.size ?? 0)]);
  for (const r of rows) if (r.some((f) => /[\0\n]/.test(f))) throw new UserError('a mount target or source holds a NUL or line break: give another path');
  for (const m of mounts) if (m.dev !== undefined && !/^vd[c-z]$/.test(m.dev)) throw new UserError(`too many RUN mounts: the build VM takes at most 24 drives (device ${m.dev})`);
  return {
    nul: Buffer.from(rows.flat().map((f) => `${f}\0`).join('')),
    sh: rows.map((r) => `fb_mount ${r.map(shellQuote).join(' ')}\n`).join(''),
  };
}

/**
 * One secret for the guest init: its value is bound read-only at `target` (a tmpfs file with `mode`, `uid`
 * and `gid`) and/or set as the command's environment variable `env`.
 */
export interface GuestSecret {
  value: SecretValue;
  target?: string;
  env?: string;
  mode: number;
  uid: number;
  gid: number;
}

/**
 * How the inits find the secrets: the value of secret i is the config disk's `secrets/<i>`; `secrets.nul`
 * (compiled init) holds six fields per secret (i, target, octal mode, uid, gid, env; target or env
 * empty when not asked) and `secrets.sh` (shell init) one `fb_secret` call per secret with the same fields.
 */
export function renderSecrets(secrets: readonly GuestSecret[]): { nul: Buffer; sh: string } {
  const rows = secrets.map((s, i) => [String(i), s.target ?? '', s.mode.toString(8).padStart(4, '0'), String(s.uid), String(s.gid), s.env ?? '']);
  for (const r of rows) if (r.some((f) => /[\0\n]/.test(f))) throw new UserError('a secret target holds a NUL or line break: give another target');
  return {
    nul: Buffer.from(rows.flat().map((f) => `${f}\0`).join('')),
    sh: rows.map((r) => `fb_secret ${r.map(shellQuote).join(' ')}\n`).join(''),
  };
}

/** The image's STOPSIGNAL as the init takes it: a number, or the upper-case name without SIG (`kill`, `SIGKILL` -> KILL); TERM when unset. */
export function stopSignalName(s: string): string {
  return s.trim().toUpperCase().replace(/^SIG/, '') || 'TERM';
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function renderRunSh(c: RunConfig): string {
  const v = (k: string, val: string): string => `${k}=${shellQuote(val)}\n`;
  return [
    '# firebuild run configuration (generated)\n',
    v('FB_HOSTNAME', c.hostname),
    v('FB_NET', c.net.mode),
    v('FB_IP', c.net.mode === 'static' || c.net.mode === 'kernel' ? c.net.ip : ''),
    v('FB_GW', c.net.mode === 'static' || c.net.mode === 'kernel' ? (c.net.gateway ?? '') : ''),
    v('FB_DNS', (c.dns ?? []).join(' ')),
    v('FB_USER', c.user),
    v('FB_WORKDIR', c.workdir),
    v('FB_STOPSIGNAL', stopSignalName(c.stopSignal)),
    v('FB_SSH_USER', c.sshUser ?? ''),
    v('FB_INIT', c.init ?? 'firebuild'),
    v('FB_HALT', c.halt ?? 'poweroff'),
    v('FB_BUILD', c.build ? '1' : ''),
    `set -- ${c.command.map(shellQuote).join(' ')}\n`,
  ].join('');
}

/**
 * The kernel's own static IP configuration (`ip=<client>::<gateway>:<netmask>::eth0:off`, CONFIG_IP_PNP):
 * the interface is up with its address and route before the init runs, which saves the init three `ip`
 * commands. Used for kernels booted without an initrd (an initrd would interpret `ip=` itself).
 */
export function kernelIpArg(cidr: string, gateway?: string): string {
  const [ip, bits] = cidr.split('/') as [string, string | undefined];
  const n = Number(bits ?? 32);
  const mask = [0, 1, 2, 3].map((i) => Math.max(0, Math.min(8, n - 8 * i))).map((b) => (0xff << (8 - b)) & 0xff).join('.');
  return `ip=${ip}::${gateway ?? ''}:${mask}::eth0:off`;
}

/** The same run configuration for the compiled init: NUL-separated, so no value needs quoting. */
export function renderRunNul(c: RunConfig): { run: Buffer; argv: Buffer; env: Buffer } {
  const pairs: [string, string][] = [
    ['FB_HOSTNAME', c.hostname],
    ['FB_NET', c.net.mode],
    ['FB_IP', c.net.mode === 'static' || c.net.mode === 'kernel' ? c.net.ip : ''],
    ['FB_GW', c.net.mode === 'static' || c.net.mode === 'kernel' ? (c.net.gateway ?? '') : ''],
    ['FB_DNS', (c.dns ?? []).join(' ')],
    ['FB_USER', c.user],
    ['FB_WORKDIR', c.workdir],
    ['FB_STOPSIGNAL', stopSignalName(c.stopSignal)],
    ['FB_SSH_USER', c.sshUser ?? ''],
    ['FB_INIT', c.init ?? 'firebuild'],
    ['FB_HALT', c.halt ?? 'poweroff'],
    ['FB_BUILD', c.build ? '1' : ''],
  ];
  const nul = (xs: string[]): Buffer => Buffer.from(xs.map((x) => `${x.replace(/\0/g, '')}\0`).join(''));
  return {
    run: nul(pairs.flat()),
    argv: nul(c.command),
    env: nul(c.env.filter((kv) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(kv))),
  };
}

/** Merge environments: later `KEY=value` entries replace earlier ones, order of first appearance kept. */
export function mergeEnv(...lists: string[][]): string[] {
  const m = new Map<string, string>();
  for (const list of lists) {
    for (const kv of list) {
      const i = kv.indexOf('=');
      if (i > 0) m.set(kv.slice(0, i), kv.slice(i + 1));
    }
  }
  return [...m].map(([k, v]) => `${k}=${v}`);
}

export function renderEnvSh(env: string[]): string {
  return env
    .filter((kv) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(kv))
    .map((kv) => {
      const i = kv.indexOf('=');
      return `export ${kv.slice(0, i)}=${shellQuote(kv.slice(i + 1))}\n`;
    })
    .join('');
}

/** ENTRYPOINT + CMD, or the command given after `--` (which replaces CMD, as docker run does). */
export function effectiveCommand(config: ImageConfig, override?: string[]): string[] {
  const entry = config.entrypoint ?? [];
  const cmd = override && override.length > 0 ? override : (config.cmd ?? []);
  return [...entry, ...cmd];
}
