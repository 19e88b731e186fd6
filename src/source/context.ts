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
  /** Is this context-relative path excluded by .dockerignore? */
  ignored(rel: string): boolean;
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

const hasWildcard = (s: string): boolean => /[*?[]/.test(s);

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

  constructor(readonly root: string, patterns: string[], readonly ignoreFile?: string) {
    this.ig = matcher(patterns);
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
}
