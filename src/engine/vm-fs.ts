import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { BuildContext } from '../source/context.js';
import type { Step } from '../dockerfile/plan-schema.js';
import { Debugfs, DebugfsError, quote, type WriteCommand } from '../rootfs/debugfs.js';
import { Ext4Image, type Ext4Time, type ImageEntry } from '../rootfs/ext4-read.js';
import { InvalidArchive } from '../rootfs/tar-read.js';
import { plannedDownload, type Downloads } from '../source/downloads.js';
import { contextRelative, fixedPrefix, globSegments, hasWildcard, parentsPivot, pathMatcher, type PathMatcher } from '../source/context.js';
import { UserError } from '../util/errors.js';
import { mtimeOf } from '../util/fs.js';
import { placeArchive } from './add-archive.js';
import { isArchive } from '../dockerfile/archive.js';

/**
 * The file-system steps of the VM build engine, applied to the stage's ext4 image offline through
 * debugfs (nothing is mounted, nothing of the image runs on the host; what is read out of an image is
 * read in-process by Ext4Image, never dumped by name onto the host): COPY and ADD (local files and
 * directories with .dockerignore, URLs, heredocs, local tar archives read in-process, files of another stage's
 * image), and WORKDIR. Owners follow Docker: 0:0 unless --chown, whose names are resolved against the
 * image's own /etc/passwd and /etc/group; WORKDIR creates what is missing owned by the current USER.
 *
 * As BuildKit's copy (tonistiigi/fsutil, continuity's RootPath): the destination is resolved through the
 * image's symlinks (its last component's too: `COPY tz /etc/localtime` writes the link's target), inside
 * the image's root; what is copied keeps its source's mtime (a context file's, a stage's, an archive
 * entry's, an ADD URL's Last-Modified or the epoch); `ADD` of a local file unpacks it when it reads as a
 * (compressed) tar archive and copies it as it is otherwise.
 */
export interface Owner { uid: number; gid: number }
export interface Accounts { passwd: string; group: string }

/** The image's /etc/passwd and /etc/group, read in-process (empty when absent). */
export async function imageAccounts(image: string): Promise<Accounts> {
  const img = await Ext4Image.open(image);
  try {
    const read = async (p: string): Promise<string> => (await img.readSmall(p))?.toString('utf8') ?? '';
    return { passwd: await read('/etc/passwd'), group: await read('/etc/group') };
  } finally {
    await img.close();
  }
}

function lookup(db: string, name: string): string[] | undefined {
  for (const line of db.split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return f;
  }
  return undefined;
}

interface Where { file: string; line: number }

/** `--chown user[:group]`: a number stands for itself (and for the group when none is given); names come from the image. */
export function chownOwner(spec: string | undefined, acc: Accounts, where: Where): Owner {
  if (!spec) return { uid: 0, gid: 0 };
  const [u = '', g] = spec.split(':');
  let uid: number;
  let gid: number;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gid = uid;
  } else {
    const pw = lookup(acc.passwd, u);
    if (!pw) throw new UserError(`--chown user ${u} is not in the image's /etc/passwd: create the user in an earlier RUN or give a number`, where);
    uid = Number(pw[2]);
    gid = Number(pw[3]);
  }
  if (g !== undefined && g !== '') gid = groupId(g, acc, where);
  return { uid, gid };
}

function groupId(g: string, acc: Accounts, where: Where): number {
  if (/^\d+$/.test(g)) return Number(g);
  const gr = lookup(acc.group, g);
  if (!gr) throw new UserError(`group ${g} is not in the image's /etc/group: create it in an earlier RUN or give a number`, where);
  return Number(gr[2]);
}

/** The current USER as an owner (WORKDIR): a name from /etc/passwd, or a number (group 0 when it has no entry). */
export function userOwner(user: string, acc: Accounts, where: Where): Owner {
  if (!user) return { uid: 0, gid: 0 };
  const [u = '', g] = user.split(':');
  const pw = lookup(acc.passwd, u) ?? (/^\d+$/.test(u) ? acc.passwd.split('\n').map((l) => l.split(':')).find((f) => f[2] === u) : undefined);
  if (!pw && !/^\d+$/.test(u)) throw new UserError(`USER ${u} is not in the image's /etc/passwd`, where);
  const owner = { uid: pw ? Number(pw[2]) : Number(u), gid: pw ? Number(pw[3]) : 0 };
  if (g) owner.gid = groupId(g, acc, where);
  return owner;
}

type Kind = 'file' | 'dir' | 'symlink' | 'other' | 'missing';

const kindOf = (e: ImageEntry | undefined): Kind => (!e ? 'missing' : e.type === 'file' || e.type === 'dir' || e.type === 'symlink' ? e.type : 'other');

/**
 * The type of each path exactly as named, read in-process: no symlink followed anywhere, so a path under
 * a symlink or a file (which the step replaces by a directory first) is missing.
 */
async function kindsAt(image: string, paths: string[]): Promise<Map<string, Kind>> {
  const img = await Ext4Image.open(image);
  try {
    const m = new Map<string, Kind>();
    for (const p of new Set(paths)) m.set(p, kindOf(await img.entryAt(p)));
    return m;
  } finally {
    await img.close();
  }
}

const TYPE_NAMES: Record<string, string> = { file: 'a file', symlink: 'a symlink', char: 'a character device', block: 'a block device', fifo: 'a FIFO', socket: 'a socket' };

/**
 * A step's destination in the image, as BuildKit resolves it (continuity's RootPath): through every
 * symlink, the last one too, inside the image (an absolute target from its root, `..` stopping at /).
 * A path through a non-directory or a symlink loop is a one-line UserError naming it.
 */
async function locateDest(image: string, dest: string, what: string, where: Where): Promise<{ path: string; kind: Kind; exists: string }> {
  const img = await Ext4Image.open(image);
  try {
    const loc = await img.locate(dest).catch((err: unknown) => {
      if (err instanceof UserError) throw new UserError(`${what} ${dest}: the destination cannot be resolved in the image (${err.message}): fix the symlinks in an earlier RUN or choose another destination`, { ...where, cause: err });
      throw err;
    });
    const via = (p: string): string => (p === dest || dest.startsWith(`${p}/`) ? '' : ' (through symlinks)');
    if (loc.notDir) {
      throw new UserError(`${what} ${dest}: ${loc.notDir.path}${via(loc.notDir.path)} is ${TYPE_NAMES[loc.notDir.type] ?? loc.notDir.type} in the image, not a directory: choose another destination or remove it in an earlier RUN`, where);
    }
    return { path: loc.path, kind: kindOf(loc.entry), exists: loc.exists };
  } finally {
    await img.close();
  }
}

function ancestors(p: string): string[] {
  const out: string[] = [];
  let d = path.posix.dirname(p);
  while (d !== '/') {
    out.unshift(d);
    d = path.posix.dirname(d);
  }
  return out;
}

/**
 * Write into the image through Debugfs (one error policy: the first command that fails fails the step); a
 * full file system is a UserError saying to grow it, any other failure a UserError naming the step.
 * Groups (a `cd` and the `mknod` after it) never straddle two debugfs runs.
 */
async function write(image: string, commands: (WriteCommand | WriteCommand[])[], where: Where, what: string): Promise<void> {
  try {
    await new Debugfs(image).write(commands);
  } catch (err) {
    if (!(err instanceof DebugfsError)) throw err;
    if (err.kind === 'full') throw new UserError(`${what} at ${where.file}:${where.line}: the build disk is full: grow it with --size`, { ...where, cause: err });
    throw new UserError(`${what} at ${where.file}:${where.line} failed in debugfs: ${err.command}: ${err.reason}`, { ...where, cause: err });
  }
}

/** WORKDIR: create each missing directory of `dir` (found through the image's symlinks, as BuildKit's), owned by the current USER, mode 0755. */
export async function applyWorkdir(image: string, dir: string, owner: Owner, where: Where): Promise<void> {
  const loc = await locateDest(image, dir, 'WORKDIR', where);
  if (loc.kind === 'dir') return;
  if (loc.kind !== 'missing') throw new UserError(`WORKDIR ${dir}: ${loc.path} is ${loc.kind === 'file' ? 'a file' : 'a special file'} in the image, not a directory: choose another WORKDIR or remove it in an earlier RUN`, where);
  const missing = [...ancestors(loc.path), loc.path].filter((d) => d !== '/' && d.length > (loc.exists === '/' ? 0 : loc.exists.length));
  const cmds: string[] = [];
  for (const d of missing) cmds.push(`mkdir ${quote(d)}`, `sif ${quote(d)} mode 040755`, `sif ${quote(d)} uid ${owner.uid}`, `sif ${quote(d)} gid ${owner.gid}`);
  if (cmds.length) await write(image, cmds, where, 'WORKDIR');
}

type PlacedType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** One entry to write into the image. `owner` is the entry's own (kept from a stage, an image or a tar archive); without it, the step's. */
export interface Placement {
  dest: string;
  type: PlacedType;
  host?: string;
  mode: number;
  linkTarget?: string;
  /** For hard links: the destination path of the first name of the inode. */
  linkTo?: string;
  rdev?: [number, number];
  owner?: Owner;
  /** Extended attributes: name and a host file holding the raw value. */
  xattrs?: [string, string][];
  /** The source's modification time, kept (BuildKit's copy keeps it); without it, the time of the write. */
  mtime?: Ext4Time;
}


/** Walk a host directory: every entry under it, parents first, honouring an ignore predicate on context-relative paths. */
async function walk(root: string, rel: string, ignored: (rel: string) => boolean, out: { rel: string; abs: string }[], base = root): Promise<void> {
  const dir = path.join(root, rel);
  for (const name of (await fsp.readdir(dir)).sort()) {
    const r = path.join(rel, name);
    if (ignored(path.relative(base, path.join(root, r)))) continue;
    out.push({ rel: r, abs: path.join(root, r) });
    const st = await fsp.lstat(path.join(root, r));
    if (st.isDirectory()) await walk(root, r, ignored, out, base);
  }
}

/**
 * `--exclude` as BuildKit's copy (tonistiigi/fsutil) applies it: an entry whose path matches is not
 * copied, nor is anything below an excluded directory, unless an exception (`!`) keeps it, and then
 * the directories on the way to it are made (as the source has them). Entries come parents first.
 */
export function keepWithParents<T extends { rel: string }>(entries: T[], excluded: (rel: string) => boolean): T[] {
  const keep = new Set<string>();
  for (const e of entries) {
    if (excluded(e.rel)) continue;
    keep.add(e.rel);
    for (let d = path.posix.dirname(e.rel); d !== '.' && d !== '/' && d !== ''; d = path.posix.dirname(d)) keep.add(d);
  }
  return entries.filter((e) => keep.has(e.rel));
}

interface TreeOptions {
  ignored?: (rel: string) => boolean;
  /** .dockerignore has exceptions: ignored directories are walked, and what an exception keeps comes with the directories on the way. */
  ignoreExceptions?: boolean;
  forcedMode?: number;
  /** --exclude, given each entry's path relative to the tree copied (plus `under/` for --parents). */
  exclude?: PathMatcher;
  under?: string;
}

/** A build context directory's entries as placements under `dest`: the step's owner; no devices or FIFOs (Docker sends none). */
async function placeHostTree(hostDir: string, dest: string, o: TreeOptions, out: Placement[]): Promise<void> {
  let entries: { rel: string; abs: string }[] = [];
  const ex = o.exclude;
  const exRel = (rel: string): string => (o.under ? `${o.under}/${rel}` : rel);
  // Without exceptions nothing below an excluded (or ignored) directory is kept: it is not even read.
  const skip = (rel: string): boolean => (!o.ignoreExceptions && (o.ignored?.(rel) ?? false)) || (ex !== undefined && !ex.exceptions && ex.matches(exRel(rel)));
  await walk(hostDir, '', skip, entries, hostDir);
  if (ex || o.ignoreExceptions) {
    const drop = (rel: string): boolean => (o.ignored?.(rel) ?? false) || (ex?.matches(exRel(rel)) ?? false);
    entries = keepWithParents(entries.map((e) => ({ ...e, rel: e.rel.split(path.sep).join('/') })), drop);
  }
  for (const e of entries) {
    const st = await fsp.lstat(e.abs, { bigint: true });
    const d = path.posix.join(dest, e.rel.split(path.sep).join('/'));
    const perm = o.forcedMode ?? Number(st.mode & 0o7777n);
    const mtime = mtimeOf(st);
    if (st.isDirectory()) out.push({ dest: d, type: 'dir', mode: perm, mtime });
    else if (st.isSymbolicLink()) out.push({ dest: d, type: 'symlink', mode: 0o777, linkTarget: await fsp.readlink(e.abs), mtime });
    else if (st.isFile()) out.push({ dest: d, type: 'file', host: e.abs, mode: perm, mtime });
  }
}

/** A file's content into a new private scratch file (mode 0600, a name firebuild chose): never the image's name or mode. */
async function toScratch(chunks: AsyncIterable<Buffer> | Iterable<Buffer>, file: string): Promise<void> {
  const fh = await fsp.open(file, 'wx', 0o600);
  try {
    for await (const c of chunks) await fh.write(c);
  } finally {
    await fh.close();
  }
}

/**
 * What `COPY --from` takes out of another image (a stage's, or an external image's), read in-process
 * (Ext4Image): contents, owners, modes, hard links, device nodes, FIFOs, symlinks and extended attributes,
 * as Docker keeps them. Contents and xattr values go to scratch files named `<n>` under a private
 * directory: no name, link or mode of the image ever becomes a host file. A directory source gives its
 * contents under `dest` (less what `exclude` matches, relative to it); a file source gives one entry.
 */
async function placeImageTree(img: Ext4Image, src: string, dest: string, single: boolean, scratch: string, forcedMode: number | undefined, out: Placement[], exclude?: PathMatcher): Promise<void> {
  const entries: { e: ImageEntry; dest: string; rel: string }[] = [];
  if (single) {
    const e = await img.stat(src);
    if (!e) throw new UserError(`COPY --from: ${src} could not be read from the source image`);
    entries.push({ e, dest, rel: path.posix.basename(src) });
  } else for await (const e of img.walk(src)) entries.push({ e, dest: path.posix.join(dest, path.posix.relative(src, e.path)), rel: path.posix.relative(src, e.path) });
  await placeImageEntries(img, exclude && !single ? keepWithParents(entries, (rel) => exclude.matches(rel)) : entries, scratch, forcedMode, out);
}

/** Image entries as placements, each at its destination (see placeImageTree). */
async function placeImageEntries(img: Ext4Image, entries: { e: ImageEntry; dest: string }[], scratch: string, forcedMode: number | undefined, out: Placement[]): Promise<void> {
  const content = await fsp.mkdtemp(path.join(scratch, 'from-'));
  let n = 0;
  const scratchFile = (): string => path.join(content, String(n++));
  const firstName = new Map<number, string>();
  for (const { e, dest: d } of entries) {
    const owner = { uid: e.uid, gid: e.gid };
    const perm = forcedMode ?? e.mode;
    const mtime = e.mtime;
    const pairs: [string, string][] = [];
    for (const [name, value] of e.xattrs) {
      const file = scratchFile();
      await toScratch([value], file);
      pairs.push([name, file]);
    }
    const xa = pairs.length ? { xattrs: pairs } : {};
    if (e.type === 'dir') out.push({ dest: d, type: 'dir', mode: perm, owner, mtime, ...xa });
    else if (e.type === 'symlink') out.push({ dest: d, type: 'symlink', mode: 0o777, linkTarget: e.linkTarget ?? '', owner, mtime });
    else if (e.type === 'file') {
      const first = e.nlink > 1 ? firstName.get(e.ino) : undefined;
      if (first) out.push({ dest: d, type: 'hardlink', mode: perm, linkTo: first });
      else {
        firstName.set(e.ino, d);
        const host = scratchFile();
        await toScratch(img.readFile(e.ino, e.path), host);
        out.push({ dest: d, type: 'file', host, mode: perm, owner, mtime, ...xa });
      }
    } else if (e.type === 'char' || e.type === 'block') out.push({ dest: d, type: e.type, mode: perm, rdev: [e.rdev?.major ?? 0, e.rdev?.minor ?? 0], owner, mtime });
    else if (e.type === 'fifo') out.push({ dest: d, type: 'fifo', mode: perm, owner, mtime });
  }
}

/** The directories of an image a pattern names (Go's filepath.Match per segment, as BuildKit resolves a wildcard source), resolved. */
async function imageGlobDirs(img: Ext4Image, pattern: string): Promise<string[]> {
  const segs = globSegments(pattern);
  const fixed = fixedPrefix(`${pattern.replace(/^\/+/, '')}/x`);
  const start = `/${fixed.join('/')}`;
  const startEntry = await img.entryAt(start);
  if (startEntry?.type !== 'dir') return [];
  const out: string[] = [];
  for await (const e of img.walk(start)) {
    if (e.type !== 'dir') continue;
    const parts = e.path.split('/').filter((x) => x !== '');
    if (parts.length === segs.length && parts.every((p, i) => segs[i]!.test(p))) out.push(e.path);
  }
  return out;
}

/**
 * `COPY --from --parents`: what the pattern after the pivot matches below each root (the part before
 * `/./`, `/` without one; a root with wildcards names every directory it matches), found without
 * following links, placed at its path below the root under `dest`; the directories on the way are made
 * as the image has them (fsutil's copy with an include pattern). Returns the number of entries matched.
 */
async function placeImageParents(img: Ext4Image, source: string, dest: string, exclude: PathMatcher | undefined, scratch: string, forcedMode: number | undefined, out: Placement[], what: string, where: Where): Promise<number> {
  const { root, pattern } = parentsPivot(source);
  if (pattern === '') throw new UserError(`${what} --parents ${source}: nothing follows the /./ pivot: name what to copy after it`, where);
  const rootAbs = path.posix.resolve('/', root);
  const roots = hasWildcard(rootAbs) ? await imageGlobDirs(img, rootAbs) : [rootAbs];
  const include = pathMatcher([pattern]);
  let matched = 0;
  const list: { e: ImageEntry; dest: string }[] = [];
  const made = new Set<string>();
  for (const r of roots) {
    const loc = await img.locate(r).catch((err: unknown) => {
      throw err instanceof UserError ? new UserError(`${what} --from --parents: ${r}: ${err.message}`, { ...where, cause: err }) : err;
    });
    if (loc.entry?.type !== 'dir') continue;
    const R = loc.path;
    const startRel = fixedPrefix(pattern).join('/');
    const start = startRel ? path.posix.join(R, startRel) : R;
    if ((await img.entryAt(start))?.type !== 'dir') continue;
    const chosen: { e: ImageEntry; rel: string }[] = [];
    for await (const e of img.walk(start)) {
      const rel = path.posix.relative(R, e.path);
      if (include.matches(rel)) chosen.push({ e, rel });
    }
    matched += chosen.length;
    const kept = exclude ? keepWithParents(chosen, (rel) => exclude.matches(rel)) : chosen;
    for (const k of kept) {
      // The directories between the root and what matched: as the image has them, made once.
      const parts = k.rel.split('/');
      for (let i = 1; i < parts.length; i++) {
        const a = parts.slice(0, i).join('/');
        const at = path.posix.join(dest, a);
        if (made.has(at)) continue;
        const de = await img.entryAt(path.posix.join(R, a));
        if (de?.type === 'dir') list.push({ e: de, dest: at });
        made.add(at);
      }
      const at = path.posix.join(dest, k.rel);
      if (made.has(at)) continue;
      made.add(at);
      list.push({ e: k.e, dest: at });
    }
  }
  await placeImageEntries(img, list, scratch, forcedMode, out);
  return matched;
}

export interface CopyInputs {
  step: Step;
  /** Absolute destination (relative ones already joined to WORKDIR). */
  dest: string;
  context: BuildContext;
  /** For COPY --from: the source stage's or image's ext4 file. */
  fromImage?: string;
  /** The owner of what the step creates: `--chown`, else 0:0. */
  owner: Owner;
  /** `--chown` was given: it also replaces the owners kept from a stage, an image or a tar archive (BuildKit >= 0.23). */
  chowned: boolean;
  scratch: string;
  /** What this build fetched while planning (ADD URLs, http context files). */
  downloads?: Downloads;
}

/** A UserError from a download, placed at the step's line. */
const at = (where: Where) => (err: unknown): never => {
  throw err instanceof UserError && err.file === undefined ? new UserError(err.message, { ...where, cause: err }) : err;
};

/** A --parents resource's path below its root (the part of its source before `/./`, wildcards matched by the path itself). */
function parentsRel(r: { source: string; path?: string }, where: Where): string {
  const rootRel = contextRelative(parentsPivot(r.source).root, { ...where, keyword: 'COPY' });
  const k = rootRel === '.' ? 0 : rootRel.split('/').length;
  return (r.path ?? '').split('/').slice(k).join('/');
}

/**
 * `COPY --parents` of one entry the plan matched in the local context: placed at its path below its root
 * under `dest`, the directories on the way made as the context has them (mode, mtime; the step's owner),
 * once; a matched directory comes with its contents, a matched symlink stays a link.
 */
async function placeParents(ctx: BuildContext, r: { source: string; path?: string; kind: string }, dest: string, exclude: PathMatcher | undefined, mode: number | undefined, out: Placement[], made: Set<string>, what: string, where: Where): Promise<void> {
  const rel = parentsRel(r, where);
  const ctxRel = r.path ?? '.';
  const rootRel = ctxRel.split('/').slice(0, ctxRel.split('/').length - rel.split('/').length).join('/');
  const abs = path.join(ctx.root, ctxRel);
  const root = await fsp.realpath(ctx.root);
  // The plan checked this; checked again as the files are read now: never a host file outside the context.
  const realParent = await fsp.realpath(path.dirname(abs));
  if (realParent !== root && !realParent.startsWith(root + path.sep)) throw new UserError(`${what} source ${r.source} resolves to ${realParent}, outside the build context`, where);
  const st = await fsp.lstat(abs, { bigint: true });
  if (exclude?.matches(rel) && !(st.isDirectory() && exclude.exceptions)) return;
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    const a = parts.slice(0, i).join('/');
    const at = path.posix.join(dest, a);
    if (made.has(at)) continue;
    made.add(at);
    const ds = await fsp.lstat(path.join(ctx.root, rootRel, a), { bigint: true });
    out.push({ dest: at, type: 'dir', mode: mode ?? Number(ds.mode & 0o7777n), mtime: mtimeOf(ds) });
  }
  const at = path.posix.join(dest, rel);
  if (made.has(at)) return;
  made.add(at);
  const mtime = mtimeOf(st);
  if (st.isSymbolicLink()) out.push({ dest: at, type: 'symlink', mode: 0o777, linkTarget: await fsp.readlink(abs), mtime });
  else if (st.isFile()) out.push({ dest: at, type: 'file', host: abs, mode: mode ?? Number(st.mode & 0o7777n), mtime });
  else if (st.isDirectory()) {
    const excludedDir = exclude?.matches(rel) === true;
    const inner: Placement[] = [];
    await placeHostTree(abs, at, { ignored: (x) => ctx.ignored(path.posix.join(ctxRel, x.split(path.sep).join('/'))), ignoreExceptions: ctx.ignoreExceptions === true, ...(mode !== undefined ? { forcedMode: mode } : {}), ...(exclude ? { exclude, under: rel } : {}) }, inner);
    // An excluded directory is made only when an exception keeps something inside it.
    if (!excludedDir || inner.length > 0) out.push({ dest: at, type: 'dir', mode: mode ?? Number(st.mode & 0o7777n), mtime });
    out.push(...inner);
  }
}

/**
 * COPY / ADD with Docker's destination rules: a trailing slash, several sources or a directory
 * destination (found through the image's symlinks) make `dest` a directory.
 */
export async function applyCopy(image: string, c: CopyInputs): Promise<number> {
  const where = { file: c.step.file, line: c.step.line };
  const what = c.step.keyword;
  const resources = c.step.resources ?? [];
  const mode = c.step.chmod ? parseInt(c.step.chmod, 8) : undefined;
  if (c.step.chmod && (!/^[0-7]{3,4}$/.test(c.step.chmod))) throw new UserError(`${what} --chmod=${c.step.chmod}: give octal permissions such as 0644`, where);
  const asWritten = c.dest === '/' ? '/' : c.dest.replace(/\/+$/, '');
  const loc = await locateDest(image, asWritten, what, where);
  const dest = loc.path;
  // A wildcard makes the destination a directory; a URL's ? and * are part of the URL.
  const wildcard = (c.step.sources ?? []).some((s) => !/^https?:\/\//i.test(s) && /[*?[]/.test(s));
  // --parents copies what it matches below a root directory: the destination is a directory.
  const parents = c.step.parents === true;
  const destIsDir = c.dest.endsWith('/') || resources.length > 1 || wildcard || loc.kind === 'dir' || parents;
  // --exclude: matched against each entry's path below what is copied (a directory source's contents,
  // a file by its name; with --parents, the path kept below the root), as BuildKit's copy matches it.
  const exclude = c.step.exclude?.length ? pathMatcher(c.step.exclude) : undefined;
  const excludedName = (name: string): boolean => exclude?.matches(name) === true;
  if (destIsDir && loc.kind !== 'dir' && loc.kind !== 'missing') {
    throw new UserError(`${what} ${c.dest}: ${dest}${dest === asWritten ? '' : ' (through symlinks)'} is ${loc.kind === 'file' ? 'a file' : 'a special file'} in the image, not a directory: choose another destination or remove it in an earlier RUN`, where);
  }
  const placements: Placement[] = [];
  const madeParents = new Set<string>();
  if (parents && c.context.kind === 'local' && resources.some((r) => r.kind !== 'stage' && r.kind !== 'image')) {
    // The destination, as BuildKit makes it when missing (0755); an existing one keeps its mode.
    const rootSt = await fsp.stat(c.context.root, { bigint: true });
    placements.push({ dest, type: 'dir', mode: 0o755, mtime: mtimeOf(rootSt) });
  }
  let n = 0;
  let from: Ext4Image | undefined;
  try {
    for (const r of resources) {
      const stagingFile = path.join(c.scratch, `r${n++}`);
      // One file: its mtime is the host file's (a context file's own, a download's Last-Modified or the epoch, a heredoc's now).
      const single = async (host: string, name: string, fileMode: number): Promise<void> => {
        if (excludedName(name)) return;
        const mtime = mtimeOf(await fsp.stat(host, { bigint: true }));
        placements.push({ dest: destIsDir ? path.posix.join(dest, name) : dest, type: 'file', host, mode: mode ?? fileMode, mtime });
      };
      if (r.kind === 'url') {
        // The very file the plan hashed (fetched once per build), never a second download.
        const file = await plannedDownload(r.url!, r.sha256, stagingFile, c.downloads, 'ADD').catch(at(where));
        const placed = r.extract && (await isArchive(file))
          ? // ADD --unpack=true of a URL: an archive is unpacked as a local one is.
            await placeArchive(file, dest, path.join(c.scratch, `add${n}-`), `the archive ${r.url}`, mode).catch(at(where))
          : undefined;
        if (placed) placements.push(...placed);
        else await single(file, path.posix.basename(new URL(r.url!).pathname) || 'index.html', 0o600);
      } else if (r.kind === 'heredoc') {
        // The plan gives the document's final content (tabs stripped, expanded) under its name.
        const name = r.path ?? r.source;
        const h = (c.step.heredocs ?? []).find((x) => x.name === name);
        await fsp.writeFile(stagingFile, h?.content ?? '');
        await single(stagingFile, name, 0o644);
      } else if (r.kind === 'stage' || r.kind === 'image') {
        if (!c.fromImage) throw new UserError(`${what} --from: the source image is not available`, where);
        from ??= await Ext4Image.open(c.fromImage, `the ${r.kind === 'stage' ? 'stage' : 'image'} ${r.kind === 'image' ? r.source : ''}`.trim());
        if (parents) {
          const sub = path.join(c.scratch, `from${n}`);
          await fsp.mkdir(sub, { recursive: true, mode: 0o700 });
          const rootEntry = await from.stat(path.posix.resolve('/', parentsPivot(r.source).root), { follow: true });
          placements.push({ dest, type: 'dir', mode: 0o755, ...(rootEntry?.type === 'dir' ? { mtime: rootEntry.mtime } : {}) });
          const matched = await placeImageParents(from, r.source, dest, exclude, sub, mode, placements, what, where);
          // As BuildKit: a path without wildcards must be there; a wildcard may match nothing.
          if (matched === 0 && !hasWildcard(r.source)) throw new UserError(`${what} --from --parents: ${r.source} does not exist in the source ${r.kind === 'stage' ? 'stage' : 'image'}`, where);
          continue;
        }
        // The source path is followed through symlinks inside the source image, as BuildKit follows it
        // (the copy keeps the links below it); a file keeps the name it was asked by.
        const asked = path.posix.resolve('/', r.path ?? r.source);
        const found = await from.locate(asked).catch((err: unknown) => {
          throw err instanceof UserError ? new UserError(`${what} --from: ${asked}: ${err.message}`, { ...where, cause: err }) : err;
        });
        const st = found.entry;
        if (!st) throw new UserError(`${what} --from: ${asked} does not exist in the source ${r.kind === 'stage' ? 'stage' : 'image'}`, where);
        const sub = path.join(c.scratch, `from${n}`);
        await fsp.mkdir(sub, { recursive: true, mode: 0o700 });
        if (st.type === 'dir') {
          placements.push({ dest, type: 'dir', mode: 0o755, mtime: st.mtime });
          await placeImageTree(from, found.path, dest, false, sub, mode, placements, exclude);
        } else if (!excludedName(path.posix.basename(asked))) {
          await placeImageTree(from, found.path, destIsDir ? path.posix.join(dest, path.posix.basename(asked)) : dest, true, sub, mode, placements);
        }
      } else if (c.context.kind === 'local' && r.path !== undefined && parents) {
        await placeParents(c.context, r, dest, exclude, mode, placements, madeParents, what, where);
      } else if (c.context.kind === 'local' && r.path !== undefined) {
        if (excludedName(path.posix.basename(r.path)) && r.kind !== 'dir') continue;
        const abs = path.join(c.context.root, r.path);
        // The plan checked this; checked again here, as the file is read now: never a host file outside the context.
        const [real, root] = await Promise.all([fsp.realpath(abs), fsp.realpath(c.context.root)]);
        if (real !== root && !real.startsWith(root + path.sep)) throw new UserError(`${what} source ${r.source} resolves to ${real}, outside the build context`, where);
        const st = await fsp.stat(real, { bigint: true });
        if (what === 'ADD' && st.isFile() && r.extract !== false) {
          // As BuildKit: a file that reads as a tar archive (plain or compressed) is unpacked into the
          // destination, read in-process (the archive's owners, modes, mtimes, hard links and device
          // nodes kept, only ever data in the image; contents staged in scratch); any other file is
          // copied as it is (a .gz that holds no tar among them).
          const placed = await placeArchive(real, dest, path.join(c.scratch, `add${n}-`), `the archive ${r.source}`, mode).catch((err: unknown) => {
            // Its start read as a tar archive, so ADD unpacks it (as BuildKit): the rest is broken.
            const fix = err instanceof InvalidArchive ? `: ADD unpacks ${r.source} because it starts as a tar archive; re-create it, or COPY it to add the file as it is` : '';
            throw err instanceof UserError && err.file === undefined ? new UserError(`${what}: ${err.message}${fix}`, { ...where, cause: err }) : err;
          });
          if (placed) {
            placements.push(...placed);
            continue;
          }
        }
        if (st.isDirectory()) {
          placements.push({ dest, type: 'dir', mode: 0o755, mtime: mtimeOf(st) });
          await placeHostTree(real, dest, { ignored: (rel) => c.context.ignored(path.relative(root, path.join(real, rel))), ignoreExceptions: c.context.ignoreExceptions === true, ...(mode !== undefined ? { forcedMode: mode } : {}), ...(exclude ? { exclude } : {}) }, placements);
        } else {
          await single(real, path.posix.basename(r.path), Number(st.mode & 0o7777n));
        }
      } else if (r.url) {
        const file = await plannedDownload(r.url, r.sha256, stagingFile, c.downloads, what).catch(at(where));
        if (parents) {
          // An http(s) context file: kept at its path below the pivot.
          const rel = parentsRel(r, where);
          if (excludedName(rel)) continue;
          const mtime = mtimeOf(await fsp.stat(file, { bigint: true }));
          placements.push({ dest: path.posix.join(dest, rel), type: 'file', host: file, mode: mode ?? r.mode ?? 0o644, mtime });
        } else await single(file, path.posix.basename(r.path ?? r.source), r.mode ?? 0o644);
      } else {
        throw new UserError(`${what} source ${r.source} of kind ${r.kind} is not supported by the vm engine yet: use --engine docker`, where);
      }
    }
  } finally {
    await from?.close();
  }
  await writePlacements(image, placements, c, where);
  return placements.length;
}

/** debugfs's commands setting a path's mtime (seconds with the epoch bits, then the nanoseconds; images with 128-byte inodes keep the seconds). */
export function mtimeCommands(p: string, t: Ext4Time): string[] {
  const sec = Math.max(-(2 ** 31), Math.min(2 ** 34 - 2 ** 31 - 1, Math.floor(t.sec)));
  const low = ((sec % 2 ** 32) + 2 ** 32) % 2 ** 32;
  const epoch = (sec - (low >= 2 ** 31 ? low - 2 ** 32 : low)) / 2 ** 32;
  const nsec = Math.max(0, Math.min(999_999_999, Math.floor(t.nsec)));
  return [`sif ${quote(p)} mtime @${sec}`, `sif ${quote(p)} mtime_extra ${nsec * 4 + epoch}`];
}

/**
 * The debugfs commands that make the placements: missing parent directories first (the step's owner),
 * existing directories kept; then the kept mtimes, directories last and deepest first (after everything
 * written into them).
 */
async function writePlacements(image: string, placements: Placement[], c: CopyInputs, where: Where): Promise<void> {
  const what = c.step.keyword;
  // Parents that no placement makes itself (placed directories keep their own owner and mode; placements come parents first).
  const placedDirs = new Set(placements.filter((p) => p.type === 'dir').map((p) => p.dest));
  const need = new Set<string>();
  for (const p of placements) for (const a of ancestors(p.dest)) if (!placedDirs.has(a)) need.add(a);
  const kinds = await kindsAt(image, [...need, ...placements.map((p) => p.dest)]);
  const cmds: (string | string[])[] = [];
  const own = (p: string, o?: Owner): string[] => {
    const w = c.chowned || !o ? c.owner : o;
    return [`sif ${quote(p)} uid ${w.uid}`, `sif ${quote(p)} gid ${w.gid}`];
  };
  const setMode = (p: string, type: number, perm: number): string => `sif ${quote(p)} mode 0${(type | perm).toString(8)}`;
  for (const d of [...need].sort((a, b) => a.split('/').length - b.split('/').length)) {
    const k = kinds.get(d);
    if (k === 'dir') continue;
    // Only the destination itself can be there as another type (its parents were resolved): a directory is needed.
    if (k !== 'missing') throw new UserError(`${what}: ${d} is ${k === 'file' ? 'a file' : k === 'symlink' ? 'a symlink' : 'a special file'} in the image, not a directory: choose another destination or remove it in an earlier RUN`, where);
    cmds.push(`mkdir ${quote(d)}`, `sif ${quote(d)} mode 040755`, ...own(d));
    kinds.set(d, 'dir');
  }
  const linkCount = new Map<string, number>();
  const xattrCmds: string[] = [];
  const times: string[] = [];
  const dirTimes: [string, Ext4Time][] = [];
  for (const p of placements) {
    const k = kinds.get(p.dest);
    for (const [name, file] of p.xattrs ?? []) xattrCmds.push(`ea_set -f ${quote(file)} ${quote(p.dest)} ${quote(name)}`);
    if (p.type === 'dir') {
      if (p.mtime) dirTimes.push([p.dest, p.mtime]);
      if (k === 'dir') continue;
      if (k !== 'missing') cmds.push(`rm ${quote(p.dest)}`);
      cmds.push(`mkdir ${quote(p.dest)}`, setMode(p.dest, 0o40000, p.mode), ...own(p.dest, p.owner));
      kinds.set(p.dest, 'dir');
      continue;
    }
    if (k === 'dir') throw new UserError(`${what}: cannot replace the directory ${p.dest} with a file`, where);
    if (k === 'file' || k === 'symlink' || k === 'other') cmds.push(`rm ${quote(p.dest)}`);
    if (p.type === 'symlink') cmds.push(`symlink ${quote(p.dest)} ${quote(p.linkTarget ?? '')}`, ...own(p.dest, p.owner));
    else if (p.type === 'hardlink') {
      cmds.push(`ln ${quote(p.linkTo!)} ${quote(p.dest)}`);
      linkCount.set(p.linkTo!, (linkCount.get(p.linkTo!) ?? 1) + 1);
    } else if (p.type === 'file') cmds.push(`write ${quote(p.host!)} ${quote(p.dest)}`, setMode(p.dest, 0o100000, p.mode), ...own(p.dest, p.owner));
    else {
      // debugfs's mknod takes a name in the current directory, not a path.
      const spec = p.type === 'fifo' ? 'p' : `${p.type === 'char' ? 'c' : 'b'} ${p.rdev![0]} ${p.rdev![1]}`;
      const type = p.type === 'fifo' ? 0o10000 : p.type === 'char' ? 0o20000 : 0o60000;
      cmds.push([`cd ${quote(path.posix.dirname(p.dest))}`, `mknod ${quote(path.posix.basename(p.dest))} ${spec}`, 'cd /'], setMode(p.dest, type, p.mode), ...own(p.dest, p.owner));
    }
    if (p.mtime && p.type !== 'hardlink') times.push(...mtimeCommands(p.dest, p.mtime));
    kinds.set(p.dest, p.type === 'hardlink' ? 'file' : p.type === 'file' || p.type === 'symlink' ? p.type : 'other');
  }
  // debugfs's ln adds a name, not a link: the inode's count is set once every name exists.
  for (const [first, count] of linkCount) cmds.push(`sif ${quote(first)} links_count ${count}`);
  // A directory's mtime last, deepest first: once nothing more is written into it.
  const depth = (x: string): number => x.split('/').length;
  for (const [d, t] of dirTimes.sort((a, b) => depth(b[0]) - depth(a[0]))) times.push(...mtimeCommands(d, t));
  await write(image, [...cmds, ...xattrCmds, ...times], where, what);
}
