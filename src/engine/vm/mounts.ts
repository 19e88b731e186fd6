import * as path from 'node:path';
import type { Stage, Step } from '../../dockerfile/plan-schema.js';
import { UserError } from '../../util/errors.js';
import { FALSE, mountIntOption, TRUE } from './mount-options.js';

/**
 * `RUN --mount=type=cache|bind|tmpfs` and `RUN --network` in the vm engine, as BuildKit reads them
 * (https://docs.docker.com/reference/dockerfile/#run---mount): parsed and checked before anything runs
 * (one line at the RUN's line for an unknown key, a bad value, a reserved target, a `from` naming no stage).
 * Executed by vm/run-mounts.ts; secrets are vm/secrets.ts.
 */

/** Where a bind reads, or a cache is seeded from: the build context, an earlier stage, or an image. */
export type MountFrom = { kind: 'context' } | { kind: 'stage'; stage: number } | { kind: 'image'; ref: string };

export type Sharing = 'shared' | 'private' | 'locked';

export interface CacheMount {
  type: 'cache';
  /** The cache's id (default: the target as written). */
  id: string;
  /** Absolute once resolved against the WORKDIR (runMounts). */
  target: string;
  readonly: boolean;
  sharing: Sharing;
  /** Seeds an empty cache (BuildKit's `from` + `source`). */
  from?: MountFrom;
  source: string;
  mode: number;
  uid: number;
  gid: number;
}

export interface BindMount {
  type: 'bind';
  target: string;
  from: MountFrom;
  /** The path inside `from` (default its root). */
  source: string;
  /** rw: the RUN may write there; its writes are discarded after the step. */
  readwrite: boolean;
}

export interface TmpfsMount {
  type: 'tmpfs';
  target: string;
  /** Bytes; undefined: the kernel's default (half the VM's memory). */
  size?: number;
}

export type RunMount = CacheMount | BindMount | TmpfsMount;

/** Where the guest's own file systems are mounted, or firebuild's init lives: no mount goes there. */
export const RESERVED_TARGETS = ['/proc', '/sys', '/.firebuild'];
const KEYS: Record<RunMount['type'], Set<string>> = {
  cache: new Set(['type', 'id', 'target', 'dst', 'destination', 'ro', 'readonly', 'rw', 'readwrite', 'sharing', 'from', 'source', 'src', 'mode', 'uid', 'gid']),
  bind: new Set(['type', 'target', 'dst', 'destination', 'from', 'source', 'src', 'rw', 'readwrite', 'ro', 'readonly']),
  tmpfs: new Set(['type', 'target', 'dst', 'destination', 'size']),
};
const MOUNT_TYPES = new Set(Object.keys(KEYS));

type Where = { file: string; line: number };
type StageRef = Pick<Stage, 'index' | 'name'>;

function bool(m: Record<string, string>, keys: string[], what: string, where: Where): boolean | undefined {
  let out: boolean | undefined;
  for (const k of keys) {
    const v = m[k];
    if (v === undefined) continue;
    if (TRUE.has(v)) out = true;
    else if (FALSE.has(v)) out = false;
    else throw new UserError(`${what}: ${k}=${v.slice(0, 20)} is not true or false`, where);
  }
  return out;
}

/** `size=` of a tmpfs: bytes, or a number with k, m, g (as the kernel's tmpfs and BuildKit take it). */
export function parseTmpfsSize(v: string, where: Where): number {
  const m = /^(\d{1,15})([kmg])?(i?b)?$/i.exec(v.trim());
  const n = m ? Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g']) : NaN;
  if (!m || !Number.isSafeInteger(n) || n <= 0) throw new UserError(`RUN --mount=type=tmpfs: size=${v.slice(0, 20)} is not a size: give bytes or a number with k, m or g (e.g. size=64m)`, where);
  return n;
}

/** A `from=` value: an earlier stage by name or index, else an image reference. */
export function mountFrom(v: string, stages: readonly StageRef[], current: number, what: string, where: Where): MountFrom {
  if (v === '') throw new UserError(`${what}: from is empty: name an earlier stage or an image`, where);
  if (/^\d+$/.test(v)) {
    const i = Number(v);
    if (i >= current) throw new UserError(`${what}: from=${v} is ${i === current ? 'this stage itself' : 'a later stage'}: name an earlier stage`, where);
    return { kind: 'stage', stage: i };
  }
  const st = stages.find((s) => s.name === v.toLowerCase());
  if (st) {
    if (st.index >= current) throw new UserError(`${what}: from=${v} is ${st.index === current ? 'this stage itself' : 'a later stage'}: name an earlier stage`, where);
    return { kind: 'stage', stage: st.index };
  }
  // A bare word that names no stage is a typo: an image needs a tag, digest or registry path (as COPY --from).
  if (/^[a-z0-9][a-z0-9_-]*$/i.test(v)) {
    const names = stages.filter((s) => s.name && s.index < current).map((s) => s.name);
    throw new UserError(`${what}: from=${v} names no stage${names.length ? ` (stages: ${names.join(', ')})` : ''}: name an earlier stage, or an image as name:tag`, where);
  }
  return { kind: 'image', ref: v };
}


/** The subpath a bind or a cache seed reads: relative to its source's root, never above it. */
function sourcePath(v: string | undefined, what: string, where: Where): string {
  if (v === undefined || v === '') return '/';
  if (v.includes('\0')) throw new UserError(`${what}: source holds a NUL`, where);
  const p = path.posix.resolve('/', v);
  return p;
}

/**
 * One `--mount=...` of a type this module does (cache, bind, tmpfs), checked; targets stay as written
 * (relative ones are under the WORKDIR: runMounts). Secrets and ssh are not this module's.
 */
export function parseRunMount(m: Record<string, string>, stages: readonly StageRef[], current: number, where: Where): RunMount {
  const type = m.type ?? 'bind';
  if (!MOUNT_TYPES.has(type)) throw new UserError(`RUN --mount=type=${type} is not supported by the vm engine: use bind, cache, tmpfs, secret or ssh`, where);
  const what = `RUN --mount=type=${type}`;
  const keys = KEYS[type as RunMount['type']];
  for (const k of Object.keys(m)) {
    if (!keys.has(k)) throw new UserError(`${what} does not take '${k}': use ${[...keys].filter((x) => x !== 'type').join(', ')}`, where);
  }
  const target = m.target ?? m.dst ?? m.destination;
  if (target === undefined || target === '') throw new UserError(`${what} needs target=PATH (where the mount appears in the RUN)`, where);
  if (/[\0\n]/.test(target)) throw new UserError(`${what}: the target holds a NUL or a line break`, where);
  if (type === 'tmpfs') return { type: 'tmpfs', target, ...(m.size !== undefined ? { size: parseTmpfsSize(m.size, where) } : {}) };
  const from = m.from === undefined ? undefined : mountFrom(m.from, stages, current, what, where);
  const source = sourcePath(m.source ?? m.src, what, where);
  if (type === 'bind') {
    const rw = bool(m, ['rw', 'readwrite'], what, where);
    const ro = bool(m, ['ro', 'readonly'], what, where);
    if (rw !== undefined && ro !== undefined && rw === ro) throw new UserError(`${what}: rw and ro contradict each other: give one`, where);
    return { type: 'bind', target, from: from ?? { kind: 'context' }, source, readwrite: rw ?? (ro === undefined ? false : !ro) };
  }
  const sharing = m.sharing ?? 'shared';
  if (sharing !== 'shared' && sharing !== 'private' && sharing !== 'locked') throw new UserError(`${what}: sharing=${sharing.slice(0, 20)} is not shared, private or locked`, where);
  const ro = bool(m, ['ro', 'readonly'], what, where);
  const rw = bool(m, ['rw', 'readwrite'], what, where);
  if (rw !== undefined && ro !== undefined && rw === ro) throw new UserError(`${what}: rw and ro contradict each other: give one`, where);
  const id = m.id ?? target;
  if (id === '' || id.length > 512 || /[\0\n]/.test(id)) throw new UserError(`${what}: id must be 1 to 512 characters without NUL or line breaks`, where);
  if ((m.source ?? m.src) !== undefined && !from) throw new UserError(`${what}: source needs from= (the stage or image that seeds the cache)`, where);
  if (from?.kind === 'context') throw new UserError(`${what}: from must name a stage or an image`, where);
  return {
    type: 'cache', id, target, readonly: ro ?? (rw === undefined ? false : !rw), sharing, ...(from ? { from } : {}), source,
    mode: mountIntOption(m, 'mode', 0o755, what, where, '0755'), uid: mountIntOption(m, 'uid', 0, what, where, '0755'), gid: mountIntOption(m, 'gid', 0, what, where, '0755'),
  };
}

/** The step's cache, bind and tmpfs mounts, checked, targets made absolute against the WORKDIR (as BuildKit). */
export function runMounts(step: Step, stages: readonly StageRef[], current: number, workdir: string): RunMount[] {
  const where = { file: step.file, line: step.line };
  const out: RunMount[] = [];
  for (const m of step.mounts ?? []) {
    if (m.type === 'secret' || m.type === 'ssh') continue;
    const r = parseRunMount(m, stages, current, where);
    const target = path.posix.resolve(workdir || '/', r.target);
    const what = `RUN --mount=type=${r.type},target=${r.target}`;
    if (target === '/') throw new UserError(`${what}: the target is the root directory: give a directory below it`, where);
    const reserved = RESERVED_TARGETS.find((x) => target === x || target.startsWith(`${x}/`));
    if (reserved) throw new UserError(`${what}: the target ${target} is under ${reserved}, which the build VM mounts itself: give another path`, where);
    if (out.some((o) => o.target === target)) throw new UserError(`${what}: two mounts have the target ${target}: give each its own`, where);
    out.push({ ...r, target });
  }
  return out;
}

/** `RUN --network`: default (the build's network) or none; host is refused (why: one line). */
export function stepNetwork(step: Step): 'default' | 'none' {
  const where = { file: step.file, line: step.line };
  const n = step.network;
  if (n === undefined || n === 'default') return 'default';
  if (n === 'none') return 'none';
  if (n === 'host') throw new UserError("RUN --network=host is refused by the vm engine: a build VM never shares the host's network (it would reach the host's own services); use --network=default or none", where);
  throw new UserError(`RUN --network=${n.slice(0, 20)} is not a network mode: use default or none`, where);
}
