import * as path from 'node:path';
import type { Step } from '../../dockerfile/plan-schema.js';
import type { GuestSecret } from '../../guest/run-config.js';
import { Debugfs, quote, type WriteCommand } from '../../rootfs/debugfs.js';
import { Ext4Image } from '../../rootfs/ext4-read.js';
import { UserError } from '../../util/errors.js';
import { FALSE, mountIntOption, TRUE } from './mount-options.js';
import type { Logger } from '../../util/logger.js';
import { checkEnvName, checkSecretId, readSecret, type SecretSource } from '../../util/secrets.js';

/**
 * `RUN --mount=type=secret` in the vm engine, as BuildKit does it: the secret's value reaches the build VM
 * on that RUN's config disk only (never through the image); the guest init puts it on a read-only tmpfs
 * file bound at the target (mode, uid and gid as asked) and/or in the command's environment. The mount
 * points the image lacked (the target file and its missing parent directories) are made before the
 * step and removed after it when they are still empty, as BuildKit's mount stub cleaner does, so the
 * image is what the RUN alone made of it. Only the mount's spec is part of the step's key.
 */

export interface SecretMount {
  id: string;
  /** Absolute once resolved against the WORKDIR (secretTargets); undefined: environment only. */
  target?: string;
  env?: string;
  required: boolean;
  mode: number;
  uid: number;
  gid: number;
}

const KEYS = new Set(['type', 'id', 'target', 'dst', 'destination', 'required', 'mode', 'uid', 'gid', 'env']);
/** Where the guest's own file systems are mounted, or firebuild's init lives: no secret goes there. */
const RESERVED = ['/proc', '/sys', '/.firebuild'];

/**
 * One `--mount=type=secret,...` as BuildKit reads it: `id` (default: the target's base name), `target`
 * (`dst`, `destination`; default `/run/secrets/<id>` unless only `env` is asked), `env`, `required`
 * (default false), `mode` (octal, default 0400), `uid` and `gid` (default 0). A relative target is under
 * the WORKDIR (resolved by secretTargets). Anything else is one line at the RUN's line.
 */
export function parseSecretMount(m: Record<string, string>, where: { file: string; line: number }): SecretMount {
  const what = 'RUN --mount=type=secret';
  for (const k of Object.keys(m)) {
    if (!KEYS.has(k)) throw new UserError(`${what} does not take '${k}': use id, target, env, required, mode, uid or gid`, where);
  }
  const target = m.target ?? m.dst ?? m.destination;
  if (target === '') throw new UserError(`${what}: target is empty: give a path, e.g. target=/run/secrets/token`, where);
  const at = <T>(f: () => T): T => {
    try {
      return f();
    } catch (err) {
      throw new UserError((err as Error).message, where);
    }
  };
  const env = m.env === undefined ? undefined : at(() => checkEnvName(m.env!, `${what}: env`));
  const id = m.id ?? (target !== undefined ? path.posix.basename(target) : undefined);
  if (!id) throw new UserError(`${what} needs id=NAME (or a target whose base name is the id)`, where);
  at(() => checkSecretId(id, what));
  const int = (key: 'mode' | 'uid' | 'gid', def: number): number => mountIntOption(m, key, def, what, where, '0440');
  let required = false;
  if (m.required !== undefined) {
    if (TRUE.has(m.required)) required = true;
    else if (!FALSE.has(m.required)) throw new UserError(`${what}: required=${m.required.slice(0, 20)} is not true or false`, where);
  }
  return {
    id,
    ...(target !== undefined ? { target } : env === undefined ? { target: `/run/secrets/${id}` } : {}),
    ...(env !== undefined ? { env } : {}),
    required,
    mode: int('mode', 0o400),
    uid: int('uid', 0),
    gid: int('gid', 0),
  };
}

/** The step's secret mounts (checked), targets made absolute against the WORKDIR. */
export function secretMounts(step: Step, workdir: string): SecretMount[] {
  const where = { file: step.file, line: step.line };
  return (step.mounts ?? []).filter((m) => m.type === 'secret').map((m) => {
    const s = parseSecretMount(m, where);
    if (s.target === undefined) return s;
    const target = path.posix.resolve(workdir || '/', s.target);
    if (target === '/') throw new UserError(`RUN --mount=type=secret,id=${s.id}: the target is the root directory: give a file path`, where);
    const reserved = RESERVED.find((r) => target === r || target.startsWith(`${r}/`));
    if (reserved) throw new UserError(`RUN --mount=type=secret,id=${s.id}: the target ${target} is under ${reserved}, which the build VM mounts itself: give another path`, where);
    return { ...s, target };
  });
}

/**
 * The values of a RUN's secret mounts, as the guest gets them; a missing secret is skipped (as BuildKit
 * does) unless the mount says required=true, which is one line naming the id and how to pass it.
 */
export async function stepSecrets(mounts: SecretMount[], secrets: ReadonlyMap<string, SecretSource>, label: string, where: { file: string; line: number }, log: Logger): Promise<GuestSecret[]> {
  const out: GuestSecret[] = [];
  for (const m of mounts) {
    const src = secrets.get(m.id);
    const value = src ? await readSecret(src) : undefined;
    if (!value) {
      if (m.required) {
        throw new UserError(`${label}: the secret '${m.id}' is required (required=true) and was not given: pass --secret id=${m.id},src=FILE (or env=VARIABLE), or in build-rootfs the input secrets (${m.id}=value), secret-files or secret-envs`, where);
      }
      log.info(`${label}: secret '${m.id}' not given: its mount is skipped`);
      continue;
    }
    out.push({ value, ...(m.target ? { target: m.target } : {}), ...(m.env ? { env: m.env } : {}), mode: m.mode, uid: m.uid, gid: m.gid });
  }
  return out;
}

/** A mount point firebuild made in the image for a RUN (a directory, or the target file), by its real path. */
export interface MountStub { path: string; type: 'dir' | 'file' }

/**
 * Make the mount points the image lacks for these targets: the missing parent directories (0755, root)
 * and the target (an empty 0644 file), found with the image's own symlinks followed (chroot semantics).
 * The parents' times are not touched (debugfs leaves them). A target that is a directory, or a parent
 * that is not one, is one line.
 */
export async function makeMountStubs(image: string, targets: (string | { path: string; type: 'dir' | 'file' })[], label: string, where: { file: string; line: number }, fileTarget = "the secret's target"): Promise<MountStub[]> {
  const stubs: MountStub[] = [];
  const img = await Ext4Image.open(image);
  try {
    for (const t of targets) {
      // A secret's target is a file; a cache, tmpfs or bind mount's is a directory (or a file for a bind of one).
      const target = typeof t === 'string' ? t : t.path;
      const want = typeof t === 'string' ? 'file' : t.type;
      const what = typeof t === 'string' ? fileTarget : "the mount's target";
      const hit = await img.stat(target, { follow: true });
      if (hit) {
        if (want === 'file' && hit.type === 'dir') throw new UserError(`${label}: ${what} ${target} is a directory in the image: give a file path`, where);
        if (want === 'dir' && hit.type !== 'dir') throw new UserError(`${label}: ${what} ${target} is not a directory in the image: give a directory path`, where);
        continue;
      }
      const parts = target.split('/').filter(Boolean);
      let real = '/';
      for (const [i, name] of parts.entries()) {
        const p = path.posix.join(real, name);
        const e = await img.stat(p, { follow: true });
        if (e?.type === 'dir' && i < parts.length - 1) {
          real = e.path;
          continue;
        }
        if (e) throw new UserError(`${label}: ${what} ${target} goes through ${p}, which is not a directory in the image`, where);
        if (await img.stat(p)) throw new UserError(`${label}: ${what} ${target} goes through the dangling symlink ${p} in the image: give another target`, where);
        // `real` is a real directory of the image: everything from here on is made.
        let at = real;
        for (const [k, rest] of parts.slice(i).entries()) {
          at = path.posix.join(at, rest);
          const type = k === parts.length - i - 1 ? want : 'dir';
          if (!stubs.some((s) => s.path === at)) stubs.push({ path: at, type });
        }
        break;
      }
    }
  } finally {
    await img.close();
  }
  if (!stubs.length) return stubs;
  const cmds: WriteCommand[] = [];
  for (const s of stubs) {
    if (s.type === 'dir') cmds.push(`mkdir ${quote(s.path)}`);
    else cmds.push(`write /dev/null ${quote(s.path)}`, `sif ${quote(s.path)} mode 0100644`, `sif ${quote(s.path)} uid 0`, `sif ${quote(s.path)} gid 0`);
  }
  await new Debugfs(image).write(cmds);
  return stubs;
}

/**
 * Remove the stubs the RUN left as they were made (an empty file, a directory holding only stubs), deepest
 * first; one the RUN filled or replaced stays, as BuildKit leaves it.
 */
export async function removeMountStubs(image: string, stubs: MountStub[], log: Logger): Promise<void> {
  if (!stubs.length) return;
  const removable = new Set<string>();
  const cmds: string[] = [];
  const img = await Ext4Image.open(image);
  try {
    for (const s of [...stubs].sort((a, b) => b.path.split('/').length - a.path.split('/').length)) {
      const e = await img.stat(s.path);
      let ok = false;
      if (s.type === 'file') ok = e?.type === 'file' && e.size === 0;
      else if (e?.type === 'dir') {
        ok = true;
        for await (const child of img.walk(s.path)) {
          if (!removable.has(child.path)) {
            ok = false;
            break;
          }
        }
      }
      if (!ok) {
        log.debug('a mount stub stays in the image: the RUN changed it', { path: s.path });
        continue;
      }
      removable.add(s.path);
      cmds.push(s.type === 'file' ? `rm ${quote(s.path)}` : `rmdir ${quote(s.path)}`);
    }
  } finally {
    await img.close();
  }
  if (cmds.length) await new Debugfs(image).write(cmds);
}
