import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HttpContext, LocalContext, NoContext, type BuildContext } from './context.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { checkoutGit, isGitSource, parseGitSource } from './git.js';
import { httpTextWithType } from './http.js';

/** Where a Dockerfile comes from: a local path, literal text, an http(s) URL, or a git repository. */
export interface ResolvedSource {
  kind: 'local' | 'literal' | 'http' | 'git';
  /** The source as the user gave it. */
  ref: string;
  text: string;
  /** What error messages call the Dockerfile: a path or URL. */
  dockerfile: string;
  context: BuildContext;
  /** The Dockerfile on this host (local and git sources). */
  dockerfilePath?: string;
  commit?: string;
}

export interface ResolveOptions {
  /** `--context DIR`: the build context for local and literal sources; inside the repository for git. */
  context?: string;
  /** Where git checkouts are cached. */
  cacheDir: string;
  logger: Logger;
}

const LITERAL_RE = /^\s*(#|(FROM|ARG)\s)/i;

export async function resolveSource(spec: string, o: ResolveOptions): Promise<ResolvedSource> {
  if (spec.trim() === '') throw new UserError('--dockerfile is empty: give a path, a URL, a git source or Dockerfile text');
  if (isGitSource(spec)) return resolveGit(spec, o);
  if (/^https?:\/\//i.test(spec)) return resolveHttp(spec, o);

  const st = spec.includes('\n') ? undefined : await fsp.stat(spec).catch(() => undefined);
  if (st) {
    const file = st.isDirectory() ? path.join(spec, 'Dockerfile') : spec;
    const text = await fsp.readFile(file, 'utf8').catch(() => {
      throw new UserError(`${spec} is a directory without a Dockerfile: give the path of the Dockerfile`);
    });
    const dockerfile = path.resolve(file);
    const context = await LocalContext.open(path.resolve(o.context ?? path.dirname(dockerfile)), dockerfile);
    return { kind: 'local', ref: spec, text, dockerfile, dockerfilePath: dockerfile, context };
  }
  if (spec.includes('\n') || LITERAL_RE.test(spec)) {
    const context = o.context ? await LocalContext.open(path.resolve(o.context), undefined) : new NoContext();
    return { kind: 'literal', ref: '<literal>', text: spec, dockerfile: 'Dockerfile', context };
  }
  throw new UserError(`Dockerfile ${spec} not found: give an existing path, an http(s) URL, a git+https://host/repo.git:/path/Dockerfile#ref source, or Dockerfile text`);
}

async function resolveHttp(url: string, o: ResolveOptions): Promise<ResolvedSource> {
  if (new URL(url).pathname.endsWith('/')) {
    throw new UserError(`${url} is a directory, not a Dockerfile: give the URL of the Dockerfile itself`);
  }
  const { text, type } = await httpTextWithType(url);
  if (type.startsWith('text/html') && /<html|<a\s+href/i.test(text)) {
    throw new UserError(`${url} returned an HTML page (a directory listing?), not a Dockerfile: give the URL of the Dockerfile itself`);
  }
  const context = o.context ? await LocalContext.open(path.resolve(o.context), undefined) : await HttpContext.open(url);
  return { kind: 'http', ref: url, text, dockerfile: url, context };
}

async function resolveGit(spec: string, o: ResolveOptions): Promise<ResolvedSource> {
  const g = parseGitSource(spec);
  const co = await checkoutGit(g, path.join(o.cacheDir, 'git'), o.logger);
  let contextDir = path.dirname(co.dockerfile);
  if (o.context) {
    contextDir = path.resolve(co.dir, o.context.replace(/^\/+/, ''));
    if (contextDir !== co.dir && !contextDir.startsWith(co.dir + path.sep)) throw new UserError(`--context ${o.context} leaves the repository: give a path inside it`);
  }
  const context = await LocalContext.open(contextDir, co.dockerfile);
  const text = await fsp.readFile(co.dockerfile, 'utf8');
  return { kind: 'git', ref: spec, text, dockerfile: `${g.url}:/${g.path}`, dockerfilePath: co.dockerfile, context, commit: co.commit };
}
