import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { UserError, errnoCode } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { openDirChecked } from '../util/safe-open.js';
import { BACKENDS } from '../vmm/backends.js';
import { VMM_ID_LENGTH } from '../vmm/jail-paths.js';
import { vmmAlive, type VmmIdentity } from './vmm-process.js';

/**
 * The run cache: `<run-cache>/<vmm-id>/` per VM, holding state.json (0600; never environment values),
 * the serial log, the per-VM rootfs copy and config disk, and the pid file.
 */
export const VmStateSchema = z.object({
  schemaVersion: z.literal(1),
  id: z.string(),
  name: z.string(),
  image: z.string(),
  kernel: z.string(),
  backend: z.enum(BACKENDS),
  accel: z.string(),
  /** The VMM's host pid (QEMU, or Firecracker); 0 while the VM is being created. */
  pid: z.number().int(),
  /** The VMM's start time (/proc/<pid>/stat field 22) and the host's boot id: with the pid, its identity (absent in states of older releases). */
  pidStartTime: z.string().optional(),
  bootId: z.string().optional(),
  /** The firebuild process creating the VM (while `pid` is 0): a creator that died leaves a VM `purge` removes. */
  creator: z.object({ pid: z.number().int(), startTime: z.string(), bootId: z.string() }).optional(),
  /**
   * A build VM lives only as long as its build: the building process. Once that process is gone (a SIGKILL,
   * which no handler sees) the VM is an orphan running an untrusted RUN for nobody, and `purge` stops it.
   */
  boundTo: z.object({ pid: z.number().int(), startTime: z.string(), bootId: z.string() }).optional(),
  started: z.string(),
  hostname: z.string(),
  network: z.object({
    mode: z.enum(['none', 'user', 'user-host', 'cni']),
    /** Isolated user-mode networking: state.pid leads a process group (sh, QEMU in its namespace, slirp4netns). */
    isolated: z.boolean().optional(),
    ip: z.string().optional(),
    ports: z.array(z.object({ proto: z.string(), hostAddr: z.string(), hostPort: z.number(), guestPort: z.number() })),
    /** CNI: everything DEL and the teardown need. */
    cni: z.object({ network: z.string(), confDir: z.string(), binDir: z.string(), netns: z.string(), ifname: z.string(), mac: z.string().optional() }).optional(),
  }),
  serialLog: z.string(),
  cacheDir: z.string(),
  /**
   * When the VMM was launched and when the host saw the init's start line (epoch ms): the boot time. The
   * console is polled every 50 ms, so the init's time is at most that late.
   */
  bootTimes: z.object({ vmmStartedAt: z.number(), initStartedAt: z.number() }).optional(),
  /** The VM's cgroup v2 (reaped with cgroup.kill). */
  cgroup: z.string().optional(),
  /** QEMU: the console input socket for the graceful stop. */
  consoleSock: z.string().optional(),
  /** Firecracker: the jail directory and API socket. */
  jailDir: z.string().optional(),
  apiSock: z.string().optional(),
});
export type VmState = z.infer<typeof VmStateSchema>;

/** The VMM's identity as recorded in the state (see vmm-process.ts). */
export function vmmOf(s: VmState): VmmIdentity {
  return { pid: s.pid, startTime: s.pidStartTime, bootId: s.bootId, id: s.id };
}

/** A build VM whose build process is gone (see `boundTo`). */
export function vmOrphaned(s: VmState): boolean {
  return !!s.boundTo && !vmmAlive(s.boundTo);
}

/** The VM counts as running while its VMM is, or, before the VMM exists, while the process creating it is. */
export function vmRunning(s: VmState): boolean {
  if (s.pid) return vmmAlive(vmmOf(s));
  return s.creator ? vmmAlive(s.creator) : false;
}

const NAME_RE = /^[a-zA-Z0-9]{1,20}$/;
const ID_RE = /^[a-z0-9]{1,64}$/;
/** Whether `id` is a VM id a run cache can hold (RunCache.dir refuses any other). */
export function isVmId(id: string): boolean {
  return ID_RE.test(id);
}
/** The temporary name of a VM directory being created (RunCache.create). */
const NEW_PREFIX = '.new-';

export function newVmmId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(VMM_ID_LENGTH);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

export function validateName(name: string): string {
  if (!NAME_RE.test(name)) throw new UserError(`invalid --name '${name}': use 1-20 letters and digits`);
  return name;
}

export class RunCache {
  private checked?: Promise<void>;

  /**
   * `actingUid`: root works for that user (firebuild-priv, FIREBUILD_ACTING_UID). The run cache must then
   * be root's own tree (every directory from / root's, writable by nobody else, no symlink), so that what
   * root reads back from it (states, serial logs, the VMs' disks) is what root wrote there.
   * `cgroupParent`: the cgroup subtree of this run cache's VMs (a runner instance's own; default firebuild).
   */
  constructor(readonly root: string, private readonly opts: { actingUid?: number | undefined; cgroupParent?: string | undefined } = {}) {}

  /** The cgroup subtree (under the cgroup2 mount) the VMs of this run cache live in. */
  get cgroupParent(): string | undefined {
    return this.opts.cgroupParent;
  }

  private async rootOk(): Promise<void> {
    const uid = this.opts.actingUid;
    if (uid === undefined) return;
    this.checked ??= openDirChecked(path.resolve(this.root), 'run-cache', { uid, rootOnly: true }).then((h) => h.close());
    await this.checked;
  }

  dir(id: string): string {
    if (!ID_RE.test(id)) throw new UserError(`invalid --vmm-id '${id}': list VMs with 'firebuild ls'`);
    return path.join(this.root, id);
  }

  /**
   * Create the VM's directory holding its first state, atomically: the state is written into a temporary
   * `.new-<id>` directory that is then renamed into place, so a process killed at any moment never leaves
   * a VM directory without a state (which nothing would list or purge). A `.new-*` left by a kill is purged
   * as unreadable (unreadable()).
   */
  async create(s: VmState): Promise<string> {
    await this.rootOk();
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    const d = this.dir(s.id);
    const tmp = path.join(this.root, `${NEW_PREFIX}${s.id}`);
    await fsp.mkdir(tmp, { mode: 0o700 });
    await writeFileAtomic(path.join(tmp, 'state.json'), JSON.stringify(s, null, 2) + '\n', 0o600);
    await fsp.rename(tmp, d);
    return d;
  }

  async write(s: VmState): Promise<void> {
    await writeFileAtomic(path.join(this.dir(s.id), 'state.json'), JSON.stringify(s, null, 2) + '\n', 0o600);
  }

  async read(id: string): Promise<VmState> {
    await this.rootOk();
    let text: string;
    try {
      text = await fsp.readFile(path.join(this.dir(id), 'state.json'), 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') throw new UserError(`no VM with id ${id}: list VMs with 'firebuild ls'`);
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = VmStateSchema.safeParse(json);
    if (!parsed.success) throw new UserError(`corrupt VM state ${path.join(this.dir(id), 'state.json')}: remove it with 'firebuild purge'`);
    return parsed.data;
  }

  async list(): Promise<(VmState & { running: boolean })[]> {
    await this.rootOk();
    const ids = await fsp.readdir(this.root).catch(() => [] as string[]);
    const out: (VmState & { running: boolean })[] = [];
    for (const id of ids.sort()) {
      try {
        const s = await this.read(id);
        out.push({ ...s, running: vmRunning(s) });
      } catch {
        // a VM being created or a stray directory: not listed
      }
    }
    return out;
  }

  /**
   * The run cache's directories that hold no readable VM state: a corrupt or unparsable state.json, or (older
   * than `graceMs`, so a VM being created right now is left alone) no state.json at all, or a name that is
   * no VM id (a `.new-<id>` a killed `run` left). `purge` removes them; `id` is the VM id the name carries.
   */
  async unreadable(graceMs = 60_000, now = Date.now()): Promise<{ name: string; dir: string; id?: string; reason: string }[]> {
    await this.rootOk();
    const entries = await fsp.readdir(this.root, { withFileTypes: true }).catch(() => []);
    const out: { name: string; dir: string; id?: string; reason: string }[] = [];
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!e.isDirectory()) continue;
      const dir = path.join(this.root, e.name);
      const id = ID_RE.test(e.name) ? e.name : e.name.startsWith(NEW_PREFIX) && ID_RE.test(e.name.slice(NEW_PREFIX.length)) ? e.name.slice(NEW_PREFIX.length) : undefined;
      const old = async (): Promise<boolean> => now - (await fsp.stat(dir)).mtimeMs > graceMs;
      let reason: string | undefined;
      if (id !== e.name) {
        // A `.new-<id>` whose creating process is gone goes at once (it holds only the first state).
        if (id && !(await this.creatorAlive(path.join(dir, 'state.json')))) reason = 'creation interrupted';
        else if (await old()) reason = 'not a VM directory';
      } else {
        try {
          await this.read(e.name);
        } catch (err) {
          if (errnoCode(err) !== undefined && errnoCode(err) !== 'ENOENT') throw err;
          const missing = !(await fsp.access(path.join(dir, 'state.json')).then(() => true, () => false));
          if (!missing) reason = (err as Error).message;
          else if (await old()) reason = 'no state.json';
        }
      }
      if (reason) out.push({ name: e.name, dir, ...(id ? { id } : {}), reason });
    }
    return out;
  }

  private async creatorAlive(file: string): Promise<boolean> {
    const text = await fsp.readFile(file, 'utf8').catch(() => undefined);
    let parsed: ReturnType<typeof VmStateSchema.safeParse> | undefined;
    try {
      parsed = text === undefined ? undefined : VmStateSchema.safeParse(JSON.parse(text));
    } catch {
      parsed = undefined;
    }
    // Unreadable: the age decides (a state being written right now may not parse yet).
    if (!parsed?.success) return true;
    return vmRunning(parsed.data);
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(this.dir(id), { recursive: true, force: true });
  }
}
