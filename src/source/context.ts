import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import dockerignoreModule from '@balena/dockerignore';
import { UserError } from '../util/errors.js';
import { fileDigest } from '../util/fs.js';
import type { Downloads } from './downloads.js';
import { httpDigest, httpFetch, httpTextOptional } from './http.js';
import { dockerfileUrlGuard, HostUrlRefused } from '../net/host-only.js';
import { downloadLimits } from '../util/download.js';
import type { Resource } from './resource.js';

/**
 * The build context: where COPY/ADD sources come from. Local directories and http(s) URLs; a literal
 * Dockerfile without --context has none. Every source is checked to stay inside the context.
 */
export interface Where {
  file: string;
  line: number;
  keyword: string;
}

export interface BuildContext {
  readonly kind: 'local' | 'http' | 'none';
  readonly root: string;
  /** The .dockerignore file that applies, if any. */
  readonly ignoreFile?: string;
  /** The resources `source` names; `downloads` keeps what an http context fetched for the build's steps. */
  resolve(source: string, where: Where, downloads?: Downloads, allowHostUrls?: boolean): Promise<Resource[]>;
  /**
   * `COPY --parents`: the entries `source` names, as BuildKit finds them (a pattern matched as
   * .dockerignore patterns are, `**` included, below the context root or below the `/./` pivot in it).
   */
  resolveParents?(source: string, where: Where, downloads?: Downloads, allowHostUrls?: boolean): Promise<Resource[]>;
  /** Is this context-relative path excluded by .dockerignore? */
  ignored(rel: string): boolean;
  /** .dockerignore has an exception (`!`): an ignored directory may hold something that is sent. */
  readonly ignoreExceptions?: boolean;
}

type Matcher = { ignores(p: string): boolean };

export function parseDockerignore(text: string): string[] {
  return text
    .split(/\r?\n/)
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

// The package is CommonJS with an ES-module-style default export.
const createIgnore = ((dockerignoreModule as unknown as { default?: unknown }).default ?? dockerignoreModule) as () => Matcher & { add(p: string[]): Matcher };

function matcher(patterns: string[]): Matcher {
  return createIgnore().add(patterns);
}

/**
 * Patterns matched as Docker matches .dockerignore (moby/patternmatcher: `*`, `?`, `[...]`, `**`, `!`
 * exceptions, a path matching when it or one of its parents does): what BuildKit's COPY/ADD --exclude and
 * COPY --parents use too. `matches` takes a path relative to where the patterns apply.
 */
export interface PathMatcher {
  matches(rel: string): boolean;
  /** Some pattern is an exception (`!`): an excluded directory may still hold something that is not. */
  readonly exceptions: boolean;
}

export function pathMatcher(patterns: string[]): PathMatcher {
  const m = matcher(patterns.map((p) => p.trim()).filter((p) => p !== ''));
  return { matches: (rel) => rel !== '' && rel !== '.' && m.ignores(rel), exceptions: patterns.some((p) => p.trim().startsWith('!')) };
}

/**
 * `COPY --parents` splits a source at its first `/./` (rsync's pivot): the part before is the root
 * the kept path starts from (the context root or `/` without one), the part after the pattern below it.
 * The pattern comes back cleaned and relative (`..` stops at the root), as BuildKit normalizes it.
 */
export function parentsPivot(source: string): { root: string; pattern: string } {
  const s = source.replace(/\\/g, '/');
  const i = s.indexOf('/./');
  const root = i < 0 ? '/' : s.slice(0, i) || '/';
  const pattern = path.posix.normalize(`/${i < 0 ? s : s.slice(i + 3)}`).replace(/^\/+/, '').replace(/\/+$/, '');
  return { root, pattern: pattern === '.' ? '' : pattern };
}

/** The leading segments of a pattern without wildcards (the directory a search for it can start from). */
export function fixedPrefix(pattern: string): string[] {
  const segs = pattern.split('/').filter((x) => x !== '');
  const out: string[] = [];
  for (const seg of segs.slice(0, -1)) {
    if (hasWildcard(seg)) break;
    out.push(seg);
  }
  return out;
}

/** A pattern's segments as anchored regular expressions, as Go's filepath.Match reads one (BuildKit's wildcard sources). */
export function globSegments(pattern: string): RegExp[] {
  return pattern.split('/').filter((x) => x !== '').map(globSegment);
}

/** Clean a source path to a context-relative one; `..` that leaves the context is an error. */
export function contextRelative(source: string, where: Where): string {
  const norm = path.posix.normalize(source.replace(/\\/g, '/'));
  // Absolute paths are taken relative to the context root (and cannot climb above it).
  if (!norm.startsWith('/') && (norm === '..' || norm.startsWith('../'))) {
    throw new UserError(`${where.keyword} source ${source} is outside the build context: sources must be inside the context directory`, { file: where.file, line: where.line });
  }
  const rel = norm.replace(/^\/+/, '').replace(/\/+$/, '');
  return rel === '' || rel === '.' ? '.' : rel;
}

export const hasWildcard = (s: string): boolean => /[*?[]/.test(s);

function globSegment(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i] as string;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = seg.indexOf(']', i + 2);
      if (end < 0) throw new Error(`syntax error in pattern ${seg}`);
      let cls = seg.slice(i + 1, end);
      if (cls.startsWith('^') || cls.startsWith('!')) cls = '^' + cls.slice(1);
      re += `[${cls}]`;
      i = end;
    } else if (c === '\\' && i + 1 < seg.length) re += '\\' + seg[++i];
    else re += c.replace(/[.+^${}()|\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class LocalContext implements BuildContext {
  readonly kind = 'local';
  private readonly ig: Matcher;
  private realRoot?: string;

  readonly ignoreExceptions: boolean;

  constructor(readonly root: string, patterns: string[], readonly ignoreFile?: string) {
    this.ig = matcher(patterns);
    this.ignoreExceptions = patterns.some((p) => p.startsWith('!'));
  }

  static async open(root: string, dockerfilePath: string | undefined): Promise<LocalContext> {
    const st = await fsp.stat(root).catch(() => undefined);
    if (!st?.isDirectory()) throw new UserError(`build context ${root} is not a directory: pass --context DIR`);
    const { patterns, file } = await loadLocalDockerignore(root, dockerfilePath);
    return new LocalContext(path.resolve(root), patterns, file);
  }

  ignored(rel: string): boolean {
    return rel !== '.' && this.ig.ignores(rel);
  }

  async resolve(source: string, where: Where): Promise<Resource[]> {
    const rel = contextRelative(source, where);
    this.realRoot ??= await fsp.realpath(this.root);
    const rels = hasWildcard(rel) ? await this.glob(rel) : [rel];
    const out: Resource[] = [];
    for (const r of rels) {
      if (this.ignored(r)) continue;
      const abs = path.join(this.root, r);
      const real = await fsp.realpath(abs).catch(() => undefined);
      if (real === undefined) {
        const lst = await fsp.lstat(abs).catch(() => undefined);
        if (lst?.isSymbolicLink()) throw new UserError(`${where.keyword} source ${source} is a dangling symlink: fix the link or remove it from the command`, { file: where.file, line: where.line });
        continue;
      }
      if (real !== this.realRoot && !real.startsWith(this.realRoot + path.sep)) {
        throw new UserError(`${where.keyword} source ${source} resolves through a symlink to ${real}, outside the build context: copy files that live inside the context`, { file: where.file, line: where.line });
      }
      out.push(await this.describe(source, r, real));
    }
    if (out.length === 0) {
      const why = hasWildcard(rel) ? 'matches no file' : 'not found';
      throw new UserError(`${where.keyword} source ${source} ${why} in the build context ${this.root}${this.ignoreFile ? ` (after ${path.basename(this.ignoreFile)})` : ''}: check the path and .dockerignore`, { file: where.file, line: where.line });
    }
    return out;
  }

  /**
   * `COPY --parents`: the topmost entries below the pivot (every directory of the source's root part when
   * it has wildcards) that the pattern matches, as moby/patternmatcher matches an include pattern (what
   * BuildKit's copy does: everything below a matched directory comes with it). Entries are found without
   * following symlinks (a matched link is copied as a link); .dockerignore applies. A path without
   * wildcards that is not there is an error (BuildKit's required path), and so is a wildcard that matches
   * nothing (as firebuild's COPY without --parents).
   */
  async resolveParents(source: string, where: Where): Promise<Resource[]> {
    const { root, pattern } = parentsPivot(source);
    const at = { file: where.file, line: where.line };
    const rootRel = contextRelative(root, where);
    if (pattern === '') throw new UserError(`${where.keyword} --parents ${source}: nothing follows the /./ pivot: name what to copy after it`, at);
    contextRelative(rootRel === '.' ? pattern : `${rootRel}/${pattern}`, where);
    this.realRoot ??= await fsp.realpath(this.root);
    const roots = hasWildcard(rootRel) ? (await this.glob(rootRel)).filter((r) => !this.ignored(r)) : [rootRel];
    const include = pathMatcher([pattern]);
    const out: Resource[] = [];
    for (const r of roots) {
      const realR = await fsp.realpath(path.join(this.root, r)).catch(() => undefined);
      if (realR === undefined || !(await fsp.stat(realR)).isDirectory()) continue;
      if (realR !== this.realRoot && !realR.startsWith(this.realRoot + path.sep)) {
        throw new UserError(`${where.keyword} source ${source} resolves through a symlink to ${realR}, outside the build context: copy files that live inside the context`, at);
      }
      const start = fixedPrefix(pattern);
      const walk = async (relBelow: string): Promise<void> => {
        const dir = path.join(realR, relBelow);
        const names = await fsp.readdir(dir).catch(() => [] as string[]);
        for (const name of names.sort()) {
          const below = relBelow === '' ? name : `${relBelow}/${name}`;
          const ctxRel = path.posix.join(r === '.' ? '' : r, below) || '.';
          const st = await fsp.lstat(path.join(realR, below));
          if (include.matches(below)) {
            if (!this.ignored(ctxRel)) out.push(await this.describeAt(source, ctxRel, path.join(realR, below), st));
            continue;
          }
          if (st.isDirectory()) await walk(below);
        }
      };
      const startRel = start.join('/');
      const startSt = await fsp.lstat(path.join(realR, startRel)).catch(() => undefined);
      if (startSt?.isDirectory()) await walk(startRel);
    }
    if (out.length === 0) {
      const why = hasWildcard(source) ? 'matches no file' : 'not found';
      throw new UserError(`${where.keyword} --parents source ${source} ${why} in the build context ${this.root}${this.ignoreFile ? ` (after ${path.basename(this.ignoreFile)})` : ''}: check the path and .dockerignore`, at);
    }
    return out;
  }

  /** A matched entry as found (a symlink stays a link). */
  private async describeAt(source: string, rel: string, abs: string, st: import('node:fs').Stats): Promise<Resource> {
    if (st.isSymbolicLink()) {
      const target = await fsp.readlink(abs);
      return { source, kind: 'symlink', path: rel, linkTarget: target, sha256: createHash('sha256').update(target).digest('hex'), size: 0 };
    }
    return this.describe(source, rel, abs);
  }

  private async describe(source: string, rel: string, real: string): Promise<Resource> {
    const st = await fsp.stat(real);
    if (st.isDirectory()) {
      const { sha256, files, size } = await this.treeDigest(rel);
      return { source, kind: 'dir', path: rel, sha256, size, files, mode: st.mode & 0o7777 };
    }
    const { sha256, size } = await fileDigest(real);
    return { source, kind: 'file', path: rel, sha256, size, mode: st.mode & 0o7777 };
  }

  /** A digest of a directory: every non-ignored entry's path, type, mode, size and content or link target. */
  private async treeDigest(rel: string): Promise<{ sha256: string; files: number; size: number }> {
    const h = createHash('sha256');
    let files = 0;
    let size = 0;
    const walk = async (dirRel: string): Promise<void> => {
      const entries = (await fsp.readdir(path.join(this.root, dirRel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        const r = dirRel === '.' ? e.name : `${dirRel}/${e.name}`;
        const abs = path.join(this.root, r);
        const st = await fsp.lstat(abs);
        const ignored = this.ignored(r);
        if (st.isDirectory()) {
          // Docker still walks an excluded directory: an exception (!) may re-include something inside.
          if (!ignored) h.update(`${r}\0dir\0${(st.mode & 0o7777).toString(8)}\n`);
          await walk(r);
          continue;
        }
        if (ignored) continue;
        if (st.isSymbolicLink()) {
          h.update(`${r}\0symlink\0${await fsp.readlink(abs)}\n`);
        } else if (st.isFile()) {
          const d = await fileDigest(abs);
          h.update(`${r}\0file\0${(st.mode & 0o7777).toString(8)}\0${d.size}\0${d.sha256}\n`);
          size += d.size;
        } else {
          h.update(`${r}\0special\0${(st.mode & 0o170000).toString(8)}\n`);
        }
        files++;
      }
    };
    await walk(rel);
    return { sha256: h.digest('hex'), files, size };
  }

  private async glob(pattern: string): Promise<string[]> {
    const segs = pattern.split('/');
    let current = ['.'];
    for (const seg of segs) {
      const next: string[] = [];
      for (const dir of current) {
        if (!hasWildcard(seg)) {
          const r = dir === '.' ? seg : `${dir}/${seg}`;
          if (await fsp.lstat(path.join(this.root, r)).then(() => true, () => false)) next.push(r);
          continue;
        }
        const re = globSegment(seg);
        const entries = await fsp.readdir(path.join(this.root, dir)).catch(() => [] as string[]);
        for (const name of entries.sort()) if (re.test(name)) next.push(dir === '.' ? name : `${dir}/${name}`);
      }
      current = next;
    }
    return current;
  }
}

/** `<Dockerfile>.dockerignore` beside the Dockerfile overrides the context root's `.dockerignore`. */
export async function loadLocalDockerignore(root: string, dockerfilePath: string | undefined): Promise<{ patterns: string[]; file?: string }> {
  const candidates = [...(dockerfilePath ? [`${dockerfilePath}.dockerignore`] : []), path.join(root, '.dockerignore')];
  for (const f of candidates) {
    const text = await fsp.readFile(f, 'utf8').catch(() => undefined);
    if (text !== undefined) return { patterns: parseDockerignore(text), file: f };
  }
  return { patterns: [] };
}

/**
 * An http(s) context: the Dockerfile's URL with the file name removed. Sources are fetched with HEAD
 * and GET; directories and wildcards cannot be listed over HTTP, and file modes are not carried.
 */
export class HttpContext implements BuildContext {
  readonly kind = 'http';
  private readonly ig: Matcher;

  constructor(readonly root: string, patterns: string[], readonly ignoreFile?: string) {
    this.ig = matcher(patterns);
  }

  static async open(dockerfileUrl: string): Promise<HttpContext> {
    const base = new URL('.', dockerfileUrl).toString();
    for (const f of [`${dockerfileUrl}.dockerignore`, new URL('.dockerignore', base).toString()]) {
      const text = await httpTextOptional(f);
      if (text !== undefined) return new HttpContext(base, parseDockerignore(text), f);
    }
    return new HttpContext(base, []);
  }

  ignored(rel: string): boolean {
    return rel !== '.' && this.ig.ignores(rel);
  }

  /** `COPY --parents` from an http(s) context: one file by its path (no listing, so no wildcards), kept below the pivot. */
  resolveParents(source: string, where: Where, downloads?: Downloads, allowHostUrls?: boolean): Promise<Resource[]> {
    const { root, pattern } = parentsPivot(source);
    return this.resolve(root === '/' ? pattern : `${root}/${pattern}`, where, downloads, allowHostUrls).then((rs) => rs.map((r) => ({ ...r, source })));
  }

  async resolve(source: string, where: Where, downloads?: Downloads, allowHostUrls?: boolean): Promise<Resource[]> {
    const rel = contextRelative(source, where);
    if (hasWildcard(rel) || source.endsWith('/') || rel === '.') {
      throw new UserError(`${where.keyword} source ${source} is a directory or a wildcard, which an http(s) context cannot list: use a local or git source`, { file: where.file, line: where.line });
    }
    if (this.ignored(rel)) {
      throw new UserError(`${where.keyword} source ${source} is excluded by ${this.ignoreFile ?? '.dockerignore'}`, { file: where.file, line: where.line });
    }
    const url = new URL(rel, this.root).toString();
    const at = (err: unknown): never => {
      if (err instanceof UserError) throw new UserError(`${err instanceof HostUrlRefused ? `${where.keyword} ${url}: ` : ''}${err.message}`, { file: where.file, line: where.line, cause: err });
      throw err;
    };
    // The operator named the context's origin; a redirect elsewhere is checked like an ADD URL.
    const origin = new URL(this.root).origin;
    const guard = dockerfileUrlGuard(downloads ? downloads.allowHostUrls : allowHostUrls, origin);
    const head = await httpFetch(url, 'HEAD', 60_000, guard).catch(at);
    // Servers answer a directory with an HTML listing; an http context can only copy files.
    if ((head.headers.get('content-type') ?? '').startsWith('text/html') && !/\.html?$/i.test(rel)) {
      throw new UserError(`${where.keyword} source ${source} is a directory or a wildcard, which an http(s) context cannot list (the server sent an HTML page): use a local or git source`, { file: where.file, line: where.line });
    }
    const { sha256, size } = await (downloads ? downloads.get(url, origin) : httpDigest(url, downloadLimits(), guard)).catch(at);
    return [{ source, kind: 'file', path: rel, url, sha256, size }];
  }
}

/** A literal Dockerfile without --context: no local sources. */
export class NoContext implements BuildContext {
  readonly kind = 'none';
  readonly root = '';
  ignored(): boolean {
    return false;
  }
  async resolve(source: string, where: Where): Promise<Resource[]> {
    throw new UserError(`${where.keyword} ${source} needs a build context, and a literal Dockerfile has none: pass --context DIR`, { file: where.file, line: where.line });
  }
  resolveParents(source: string, where: Where): Promise<Resource[]> {
    return this.resolve(source, where);
  }
}
