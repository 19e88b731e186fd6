import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { exists } from '../util/fs.js';
import { withLock } from '../util/lock.js';
import type { Logger } from '../util/logger.js';

/**
 * Git Dockerfile sources, as the seed documents them:
 * `git+http(s)://host[:port]/path/repo.git:/path/to/Dockerfile[#commit|branch|tag]`, and the same shape
 * with `git://`, `ssh://` and `git+ssh://`.
 */
export interface GitSpec {
  /** The URL git is given (without the `git+` prefix). */
  url: string;
  /** Path of the Dockerfile inside the repository (leading `/` removed). */
  path: string;
  ref?: string;
}

const GIT_PREFIXES = ['git+http://', 'git+https://', 'git://', 'ssh://', 'git+ssh://'];

export function isGitSource(s: string): boolean {
  return GIT_PREFIXES.some((p) => s.startsWith(p));
}

export function parseGitSource(s: string): GitSpec {
  const hash = s.lastIndexOf('#');
  const main = hash >= 0 ? s.slice(0, hash) : s;
  const ref = hash >= 0 ? s.slice(hash + 1) : undefined;
  const schemeEnd = main.indexOf('://') + 3;
  const sep = main.lastIndexOf(':/');
  if (sep < schemeEnd || main[sep + 2] === '/') {
    throw new UserError(`git source ${s} has no :/path part: write ${main}:/path/to/Dockerfile${ref ? `#${ref}` : ''}`);
  }
  const url = main.slice(0, sep).replace(/^git\+/, '');
  const p = path.posix.normalize(main.slice(sep + 1)).replace(/^\/+/, '');
  if (p === '' || p === '.' || p.startsWith('..')) throw new UserError(`git source ${s}: the path after : must name a file inside the repository`);
  if (ref !== undefined && (ref === '' || !/^[A-Za-z0-9._/-]+$/.test(ref) || ref.includes('..'))) {
    throw new UserError(`git source ${s}: '${ref}' is not a valid commit, branch or tag`);
  }
  return ref === undefined ? { url, path: p } : { url, path: p, ref };
}

const GIT_ENV_ALLOWED = ['GIT_TERMINAL_PROMPT', 'GIT_SSH_COMMAND', 'GIT_SSL_NO_VERIFY', 'GIT_SSL_CAINFO'];

/** The environment git runs with: no prompts; only what git needs (simple-git refuses editor/pager overrides). */
function gitEnv(): Record<string, string> {
  const keep = ['PATH', 'HOME', 'USER', 'LANG', 'LC_ALL', 'TMPDIR', 'SSH_AUTH_SOCK', 'GIT_SSH_COMMAND', 'GIT_SSL_NO_VERIFY', 'GIT_SSL_CAINFO', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'];
  const env: Record<string, string> = { GIT_TERMINAL_PROMPT: '0' };
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k] as string;
  return env;
}

export interface GitCheckout {
  dir: string;
  commit: string;
  /** The Dockerfile inside the checkout. */
  dockerfile: string;
}

/** Shell-safe display of a URL (no credentials). */
function displayUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/**
 * Resolve the ref with `git ls-remote`, then check out that commit into `<cacheRoot>/<url hash>/<commit>`
 * (shallow where the ref allows), reusing an earlier checkout. A failure leaves no partial clone.
 */
export async function checkoutGit(spec: GitSpec, cacheRoot: string, log: Logger): Promise<GitCheckout> {
  // simple-git (and debug, which it brings) loads for git sources only: every `rootfs --plan` and build
  // imports this module (bench/cli-start.mjs).
  const { simpleGit } = await import('simple-git');
  const git = simpleGit({ timeout: { block: 120_000 }, allowEnvironment: GIT_ENV_ALLOWED }).env(gitEnv());
  let remote: string;
  try {
    remote = await git.listRemote([spec.url]);
  } catch (err) {
    throw new UserError(`cannot read git repository ${displayUrl(spec.url)} (${firstLine(err)}): check the URL and your access`, { cause: err });
  }
  const refs = parseLsRemote(remote);
  let commit: string;
  let fetchRef: string;
  if (spec.ref === undefined) {
    const head = refs.get('HEAD');
    if (!head) throw new UserError(`git repository ${displayUrl(spec.url)} has no default branch (HEAD): add #branch to the source`);
    commit = head;
    fetchRef = 'HEAD';
  } else if (/^[0-9a-f]{40}$/.test(spec.ref)) {
    commit = spec.ref;
    fetchRef = spec.ref;
  } else {
    const tagPeeled = refs.get(`refs/tags/${spec.ref}^{}`);
    const found = refs.get(spec.ref) ?? refs.get(`refs/heads/${spec.ref}`) ?? tagPeeled ?? refs.get(`refs/tags/${spec.ref}`);
    if (!found) {
      const names = [...refs.keys()].filter((k) => k.startsWith('refs/heads/') || (k.startsWith('refs/tags/') && !k.endsWith('^{}'))).map((k) => k.replace(/^refs\/(heads|tags)\//, ''));
      throw new UserError(`git ref '${spec.ref}' does not exist in ${displayUrl(spec.url)}${names.length ? ` (branches and tags: ${names.slice(0, 10).join(', ')})` : ''}: use an existing branch, tag or full commit id`);
    }
    commit = found;
    fetchRef = refs.has(`refs/heads/${spec.ref}`) ? `refs/heads/${spec.ref}` : refs.has(`refs/tags/${spec.ref}`) ? `refs/tags/${spec.ref}` : spec.ref;
  }

  const urlKey = createHash('sha256').update(spec.url).digest('hex').slice(0, 16);
  const dir = path.join(cacheRoot, urlKey, commit);
  await fsp.mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
  await withLock(dir, async () => {
    if (await exists(path.join(dir, '.git'))) {
      log.debug('git checkout cached', { commit, dir });
      return;
    }
    const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await fsp.mkdir(tmp, { recursive: true });
      const g = simpleGit(tmp, { timeout: { block: 300_000 }, allowEnvironment: GIT_ENV_ALLOWED }).env(gitEnv());
      await g.init();
      await g.addRemote('origin', spec.url);
      log.info('fetching git source', { url: displayUrl(spec.url), ref: spec.ref ?? 'HEAD', commit });
      try {
        await g.fetch(['--depth', '1', 'origin', fetchRef]);
      } catch (err) {
        // Servers that refuse a shallow fetch of this ref (a commit id they do not advertise): fetch all.
        log.debug('shallow fetch refused, fetching the whole repository', { reason: firstLine(err) });
        await g.fetch(['origin', '+refs/heads/*:refs/remotes/origin/*', '+refs/tags/*:refs/tags/*']);
      }
      try {
        await g.checkout(['--detach', '--quiet', commit]);
      } catch (err) {
        throw new UserError(`git commit ${commit} cannot be checked out from ${displayUrl(spec.url)} (${firstLine(err)}): check the commit id`, { cause: err });
      }
      await fsp.rename(tmp, dir);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  });
  const dockerfile = path.join(dir, spec.path);
  const st = await fsp.stat(dockerfile).catch(() => undefined);
  if (!st?.isFile()) {
    throw new UserError(`Dockerfile /${spec.path} not found in ${displayUrl(spec.url)} at ${commit.slice(0, 12)}${spec.ref ? ` (${spec.ref})` : ''}: check the path after ':'`);
  }
  return { dir, commit, dockerfile };
}

function parseLsRemote(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [sha, ref] = line.trim().split(/\s+/);
    if (sha && ref) m.set(ref, sha);
  }
  return m;
}

function firstLine(err: unknown): string {
  return ((err as Error)?.message ?? String(err)).trim().split('\n').filter(Boolean).slice(-1)[0] ?? 'error';
}
