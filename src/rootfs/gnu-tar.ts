import { UserError } from '../util/errors.js';
import { exec, tailLines } from '../util/exec.js';

/**
 * The one way firebuild runs GNU tar (archives firebuild makes and reads itself: the step cache carried
 * by the Actions cache, Debian's kernel source tarball; untrusted archives are read in-process by
 * tar-read.ts instead). Its error policy: any exit but 0 (1: a file changed while read, 2: fatal) is one
 * UserError naming the archive, what tar was asked to do and the end of tar's stderr; no tar is the
 * one-line not-found UserError.
 */
export type Compression = 'zstd' | 'xz' | 'gzip';

const COMPRESS_FLAG: Record<Compression, string> = { zstd: '--zstd', xz: '--xz', gzip: '--gzip' };

export interface TarMember {
  /** The type letter of `tar -tv`: `-` regular file, `d` directory, `l` symlink, `h` hard link, `c`/`b`/`p` devices and FIFOs. */
  type: string;
  name: string;
  /** The size `tar -tv` prints (a sparse file's apparent size); undefined when the line has none. */
  size?: number;
}

async function tar(verb: string, archive: string, args: string[]): Promise<string> {
  const r = await exec('tar', args, { allowFailure: true, notFound: 'install GNU tar (package tar)' });
  if (r.code !== 0) throw new UserError(`GNU tar could not ${verb} ${archive}: ${tailLines(r.stderr || r.stdout, 2) || `exit ${r.signal ?? r.code}`}`);
  return r.stdout;
}

/** Create `archive` from `names` under `dir`; `sparse` keeps holes (ext4 images). */
export async function tarCreate(archive: string, o: { dir: string; names: string[]; compression?: Compression; sparse?: boolean }): Promise<void> {
  await tar('create', archive, [...(o.sparse ? ['--sparse'] : []), ...(o.compression ? [COMPRESS_FLAG[o.compression]] : []), '-cf', archive, '-C', o.dir, '--', ...o.names]);
}

/** The members of `archive` with their types, as GNU tar lists them (names as tar prints them, escapes kept). */
export async function tarList(archive: string, o: { compression?: Compression } = {}): Promise<TarMember[]> {
  const out = await tar('list', archive, [...(o.compression ? [COMPRESS_FLAG[o.compression]] : []), '--numeric-owner', '--full-time', '-tvf', archive]);
  return out.split('\n').filter(Boolean).map(parseListLine);
}

/** One `tar -tv --numeric-owner --full-time` line: `-rw-r--r-- 0/0 123 2024-01-02 03:04:05 name`. Pure, for tests. */
export function parseListLine(line: string): TarMember {
  const m = /^(\S)\S*\s+\d+\/\d+\s+([\d,\s]+?)\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.*)$/.exec(line);
  const size = m && /^\d+$/.test(m[2]!) ? Number(m[2]) : undefined;
  return { type: line[0] ?? '?', name: m ? m[3]! : (line.split(/\s+/).pop() ?? ''), ...(size !== undefined ? { size } : {}) };
}

/** Extract `archive` into `dir` (which must exist); never the archive's owners or permissions. */
export async function tarExtract(archive: string, o: { dir: string; compression?: Compression; sparse?: boolean; stripComponents?: number }): Promise<void> {
  await tar('extract', archive, [
    ...(o.sparse ? ['--sparse'] : []),
    ...(o.compression ? [COMPRESS_FLAG[o.compression]] : []),
    '-xf', archive, '-C', o.dir,
    ...(o.stripComponents ? [`--strip-components=${o.stripComponents}`] : []),
    '--no-same-owner', '--no-same-permissions',
  ]);
}
