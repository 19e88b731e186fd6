import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { parseDockerfile, flagValue, type ParsedInstruction } from '../dockerfile/parse.js';
import { lookupFrom, processWord } from '../dockerfile/shell-lex.js';
import { loadLocalDockerignore, pathMatcher, type PathMatcher } from '../source/context.js';
import { isValidTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

/**
 * `firebuild discover`: the images a repository builds (from its firebuild.yml, else every Dockerfile in
 * it) and which of them a change affects, as the `include` list of a GitHub Actions `strategy.matrix`.
 */

export interface DiscoverOptions {
  /** The repository directory. */
  dir: string;
  /** The manifest (relative to `dir` or absolute); default: `dir`/firebuild.yml when it exists. */
  manifest?: string;
  /** Changed files are `git diff --name-only BASE...HEAD` (head defaults to HEAD). */
  base?: string;
  head?: string;
  /** A file of changed paths (relative to `dir`), one a line. */
  changedFiles?: string;
  /** Every image is affected. */
  all?: boolean;
  /** With `all`: why, for the report (default 'all images asked for'). */
  allReason?: string;
}

export interface MatrixEntry {
  tag: string;
  /**
   * The tag's org and name as one tag component (`acme/web:1` -> `acme-web`), unique among the images (the
   * version appended to those that would share one): a workflow's tags (`pr/<slug>:<n>`) and job names.
   */
  slug: string;
  /** Relative to the repository directory, `/`-separated. */
  dockerfile: string;
  context: string;
  'build-args': Record<string, string>;
  /** The build args as NAME=value lines, for the actions' `build-args` input (a matrix value must be a string there). */
  'build-args-list': string;
  smoke: Smoke | null;
}

/** Free-form: `probes` (a list of strings) and scalars; the workflow templates pass its keys to smoke-test's inputs of the same names. */
export interface Smoke {
  probes?: string[];
  [key: string]: string | number | boolean | string[] | undefined;
}

export interface DiscoverResult {
  include: MatrixEntry[];
}

/** One discovered image and why a change affects it (no `why`: not affected). */
export interface ImageReport {
  tag: string;
  dockerfile: string;
  context: string;
  why?: string;
}

/** What `discover` found, for a report (the action's job summary): every image, the changes read. */
export interface DiscoverReport {
  result: DiscoverResult;
  /** Every image, sorted by tag. */
  images: ImageReport[];
  /** The manifest, relative to the repository; undefined: none (every Dockerfile). */
  manifest?: string;
  /** The changed paths read; undefined: none read (every image is affected). */
  changed?: string[];
}

export const MANIFEST_NAME = 'firebuild.yml';
/** Directories a search for Dockerfiles never enters. */
export const SKIPPED_DIRS = new Set(['node_modules', '.git', 'vendor']);

const ImageSchema = z.strictObject({
  tag: z.string(),
  dockerfile: z.string().min(1).optional(),
  context: z.string().min(1).optional(),
  'build-args': z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  // Other keys: scalars (the templates pass them to smoke-test's inputs, which are strings).
  smoke: z.object({ probes: z.array(z.string()).optional() }).catchall(z.union([z.string(), z.number(), z.boolean()])).optional(),
});
const ManifestSchema = z.strictObject({ images: z.array(ImageSchema).min(1) });
const IMAGE_KEYS = Object.keys(ImageSchema.shape);

interface Image extends Omit<MatrixEntry, 'slug' | 'build-args-list'> {
  /** The .dockerignore that applies and its matcher. */
  ignoreFile?: string;
  ignored: PathMatcher;
  /** Images (normalized references) its FROM and COPY --from lines name. */
  uses: string[];
}

export async function discover(o: DiscoverOptions, log: Logger): Promise<DiscoverResult> {
  return (await discoverReport(o, log)).result;
}

/** `discover` with what a report needs: every image found and why each affected one is. */
export async function discoverReport(o: DiscoverOptions, log: Logger): Promise<DiscoverReport> {
  const root = path.resolve(o.dir);
  const st = await fsp.stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw new UserError(`repository directory ${o.dir} does not exist or is not a directory: give the repository's directory`);
  if (o.changedFiles !== undefined && (o.base !== undefined || o.head !== undefined)) {
    throw new UserError('--changed-files and --base/--head both name the changes: give one of them');
  }
  if (o.head !== undefined && o.base === undefined) throw new UserError('--head needs --base: the changes are BASE...HEAD');

  const manifest = await findManifest(root, o.manifest);
  const entries = manifest ? await readManifest(root, manifest) : await findDockerfiles(root, log);
  const images = await Promise.all(entries.map((e) => describe(root, e, log)));
  images.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  const slugs = slugsOf(images.map((i) => i.tag));

  let affected: Map<string, string>;
  let changed: string[] | undefined;
  if (o.all) affected = new Map(images.map((i) => [i.tag, o.allReason ?? 'all images asked for']));
  else {
    changed = o.changedFiles !== undefined ? await readChangedFiles(o.changedFiles) : o.base !== undefined ? await gitChanged(root, o.base, o.head ?? 'HEAD') : undefined;
    // No change given: every image (a push to the default branch, a schedule).
    if (changed === undefined) affected = new Map(images.map((i) => [i.tag, 'no change given: every image']));
    else affected = affectedBy(images, changed, manifest === undefined ? undefined : rel(root, manifest));
  }
  log.info(`discovered ${images.length} image(s), ${affected.size} affected`, { images: images.length, affected: affected.size });
  return {
    result: {
      include: images.filter((i) => affected.has(i.tag)).map((i) => ({
        tag: i.tag,
        slug: slugs.get(i.tag) as string,
        dockerfile: i.dockerfile,
        context: i.context,
        'build-args': i['build-args'],
        'build-args-list': Object.entries(i['build-args']).map(([k, v]) => `${k}=${v}`).join('\n'),
        smoke: i.smoke,
      })),
    },
    images: images.map((i) => ({ tag: i.tag, dockerfile: i.dockerfile, context: i.context, ...(affected.has(i.tag) ? { why: affected.get(i.tag) as string } : {}) })),
    ...(manifest !== undefined ? { manifest: rel(root, manifest) } : {}),
    ...(changed !== undefined ? { changed } : {}),
  };
}

/**
 * Each tag's slug: `org-name`; tags sharing one (`acme/web:1`, `acme/web:2`) get `org-name-<version>`
 * (lower-cased, runs of anything but [a-z0-9] one dash). Slugs that still collide are one line.
 */
export function slugsOf(tags: readonly string[]): Map<string, string> {
  // `_/alpine:3` (no organisation): alpine.
  const base = (t: string): string => t.slice(0, t.lastIndexOf(':')).replace(/^_\//, '').replace('/', '-');
  const count = new Map<string, number>();
  for (const t of tags) count.set(base(t), (count.get(base(t)) ?? 0) + 1);
  const out = new Map<string, string>();
  const owner = new Map<string, string>();
  for (const t of tags) {
    const b = base(t);
    const slug = (count.get(b) ?? 0) > 1 ? [b, component(t.slice(t.lastIndexOf(':') + 1))].filter((x) => x !== '').join('-') : b;
    const other = owner.get(slug);
    if (other !== undefined) throw new UserError(`images ${other} and ${t} get one slug, ${slug} (org-name, the version appended where two share one): give one of them another org or name`);
    owner.set(slug, t);
    out.set(t, slug);
  }
  return out;
}

/**
 * The images a set of changed paths (relative to the repository, `/`-separated) affects, bases
 * propagated, each with why: its Dockerfile, its .dockerignore or the manifest changed, a file its context
 * sends changed, or a base (FROM, COPY --from) built here is affected.
 */
export function affectedBy(images: readonly Pick<Image, 'tag' | 'dockerfile' | 'context' | 'ignoreFile' | 'ignored' | 'uses'>[], changed: readonly string[], manifest?: string): Map<string, string> {
  const affected = new Map<string, string>();
  for (const img of images) {
    const sent: string[] = [];
    let own: string | undefined;
    for (const f of changed) {
      if (f === img.dockerfile) own ??= `its Dockerfile ${f} changed`;
      else if (f === img.ignoreFile) own ??= `its .dockerignore ${f} changed`;
      else if (f === manifest) own ??= `the manifest ${f} changed`;
      else {
        const inside = img.context === '.' ? f : f.startsWith(`${img.context}/`) ? f.slice(img.context.length + 1) : undefined;
        if (inside !== undefined && !img.ignored.matches(inside)) sent.push(f);
      }
    }
    const files = sent.length ? `${sent[0]}${sent.length > 1 ? ` and ${sent.length - 1} more file(s)` : ''} of its context changed` : undefined;
    const why = own !== undefined && files !== undefined ? `${own}; ${files}` : own ?? files;
    if (why !== undefined) affected.set(img.tag, why);
  }
  // An image built FROM (or COPY --from) another image built here is affected when that one is.
  for (let grew = true; grew;) {
    grew = false;
    for (const img of images) {
      const base = affected.has(img.tag) ? undefined : img.uses.find((u) => affected.has(u));
      if (base !== undefined) {
        affected.set(img.tag, `its base ${base} is affected`);
        grew = true;
      }
    }
  }
  return affected;
}

async function findManifest(root: string, given: string | undefined): Promise<string | undefined> {
  if (given === undefined) {
    const def = path.join(root, MANIFEST_NAME);
    return (await fsp.stat(def).catch(() => undefined))?.isFile() ? def : undefined;
  }
  const file = path.resolve(root, given);
  if (!(await fsp.stat(file).catch(() => undefined))?.isFile()) throw new UserError(`manifest ${given} does not exist: give the path of a firebuild.yml (relative to the repository)`);
  return file;
}

interface Entry {
  tag: string;
  dockerfile: string;
  context: string;
  buildArgs: Record<string, string>;
  smoke: Smoke | null;
}

/** The manifest's images, validated: any problem is one line naming the manifest, the image and the key. */
export async function readManifest(root: string, file: string): Promise<Entry[]> {
  const name = rel(root, file);
  const { parseDocument } = await import('yaml');
  const doc = parseDocument(await fsp.readFile(file, 'utf8'), { prettyErrors: false });
  const yamlErr = doc.errors[0];
  if (yamlErr) {
    const line = yamlErr.linePos?.[0].line;
    throw new UserError(`${name}${line ? `:${line}` : ''}: not valid YAML (${yamlErr.message.split('\n')[0] ?? ''}): fix the syntax`);
  }
  const data: unknown = doc.toJS();
  const parsed = ManifestSchema.safeParse(data);
  if (!parsed.success) throw new UserError(manifestIssue(name, data, parsed.error.issues.find((i) => i.code === 'unrecognized_keys' && i.path.length === 0) ?? parsed.error.issues[0]));
  const out: Entry[] = [];
  const seen = new Map<string, number>();
  for (const [i, img] of parsed.data.images.entries()) {
    const where = `${name}: image ${img.tag || `#${i + 1}`}`;
    if (!isValidTag(img.tag)) throw new UserError(`${where}: tag '${img.tag}' is not org/name:version (lower-case org and name of [a-z0-9._-], version of [A-Za-z0-9_.-], e.g. acme/web:1.2)`);
    const prev = seen.get(img.tag);
    if (prev !== undefined) throw new UserError(`${where}: tag is given twice (images #${prev + 1} and #${i + 1}): give each image its own tag`);
    seen.set(img.tag, i);
    const context = inRepo(img.context ?? '.', `${where}: context`);
    if (!(await fsp.stat(path.join(root, context)).catch(() => undefined))?.isDirectory()) throw new UserError(`${where}: context ${context} is not a directory in the repository: fix the context`);
    const dockerfile = inRepo(img.dockerfile ?? (context === '.' ? 'Dockerfile' : `${context}/Dockerfile`), `${where}: dockerfile`);
    if (!(await fsp.stat(path.join(root, dockerfile)).catch(() => undefined))?.isFile()) {
      throw new UserError(`${where}: dockerfile ${dockerfile} does not exist${img.dockerfile === undefined ? ` (the default: <context>/Dockerfile)` : ''}: fix the dockerfile key or add the file`);
    }
    const buildArgs = Object.fromEntries(Object.entries(img['build-args'] ?? {}).map(([k, v]) => [k, String(v)]));
    out.push({ tag: img.tag, dockerfile, context, buildArgs, smoke: img.smoke ?? null });
  }
  return out;
}

function manifestIssue(name: string, data: unknown, issue: z.core.$ZodIssue | undefined): string {
  if (!issue) return `${name}: not a valid manifest: see the firebuild.yml reference in docs/discover.md`;
  const [top, index, ...rest] = issue.path;
  if (top !== 'images' || typeof index !== 'number') {
    if (issue.code === 'unrecognized_keys') return `${name}: unknown key '${issue.keys.join("', '")}': a manifest has only 'images'`;
    if (top === 'images' && issue.code === 'too_small') return `${name}: images is empty: list at least one image`;
    return `${name}: ${top === undefined ? 'the manifest' : String(top)}: ${top === undefined ? 'must be a mapping with an images list' : 'must be a list of images (tag, dockerfile, context, build-args, smoke)'}`;
  }
  const images = (data as { images: unknown[] }).images;
  const tag = (images[index] as { tag?: unknown } | null | undefined)?.tag;
  const label = `${name}: image ${typeof tag === 'string' && tag !== '' ? tag : `#${index + 1}`}`;
  const key = rest.map(String).join('.');
  if (issue.code === 'unrecognized_keys') return `${label}: unknown key '${[...issue.keys].map((k) => (key ? `${key}.${k}` : k)).join("', '")}': an image takes ${IMAGE_KEYS.join(', ')}`;
  if (rest.length === 0) return `${label}: must be a mapping (tag, dockerfile, context, build-args, smoke)`;
  if (key === 'tag' && issue.code === 'invalid_type' && tag === undefined) return `${label}: key 'tag' is missing: every image needs a tag (org/name:version)`;
  if (rest[0] === 'smoke' && rest.length === 2 && rest[1] !== 'probes') return `${label}: key '${key}' is not a string, number or boolean: smoke's keys other than probes are scalars (the templates pass them to smoke-test's inputs; several lines: a YAML block |)`;
  return `${label}: key '${key}': ${issue.message}`;
}

/** A manifest path, kept inside the repository, as a clean relative `/` path. */
function inRepo(p: string, what: string): string {
  const norm = path.posix.normalize(p.replace(/\\/g, '/')).replace(/\/+$/, '');
  if (path.posix.isAbsolute(norm) || norm === '..' || norm.startsWith('../')) throw new UserError(`${what} ${p} is outside the repository: give a path relative to the repository`);
  return norm === '' ? '.' : norm;
}

/** Without a manifest: every Dockerfile, Dockerfile.* and *.Dockerfile, its directory the context. */
async function findDockerfiles(root: string, log: Logger): Promise<Entry[]> {
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await fsp.readdir(path.join(root, dir), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const relPath = dir === '.' ? e.name : `${dir}/${e.name}`;
      if (e.isDirectory()) {
        if (!SKIPPED_DIRS.has(e.name)) await walk(relPath);
      } else if (e.isFile() && isDockerfileName(e.name)) found.push(relPath);
    }
  };
  await walk('.');
  const repo = component(path.basename(root)) || '_';
  const byTag = new Map<string, string>();
  const out: Entry[] = [];
  for (const dockerfile of found) {
    const tag = derivedTag(repo, dockerfile);
    const other = byTag.get(tag);
    if (other !== undefined) throw new UserError(`${other} and ${dockerfile} both get the tag ${tag}: write a ${MANIFEST_NAME} giving their tags`);
    if (!isValidTag(tag)) throw new UserError(`${dockerfile}: the tag derived from its path (${tag}) is not valid: write a ${MANIFEST_NAME} giving its tag`);
    byTag.set(tag, dockerfile);
    const dir = path.posix.dirname(dockerfile);
    out.push({ tag, dockerfile, context: dir, buildArgs: {}, smoke: null });
  }
  log.debug(`found ${out.length} Dockerfile(s)`, { dockerfiles: found });
  return out;
}

export function isDockerfileName(name: string): boolean {
  if (name.endsWith('.dockerignore')) return false;
  return name === 'Dockerfile' || (name.startsWith('Dockerfile.') && name.length > 'Dockerfile.'.length) || (name.endsWith('.Dockerfile') && name.length > '.Dockerfile'.length);
}

/** A path's part of a tag: lower case, runs of anything but [a-z0-9] made one dash. */
function component(s: string): string {
  return s.toLowerCase().split(/[^a-z0-9]+/).filter((x) => x !== '').join('-');
}

/**
 * The tag of a Dockerfile found without a manifest: `<repository dir>/<its dir, / as ->:latest`, the
 * variant of `Dockerfile.<v>` or `<v>.Dockerfile` appended (`-<v>`); at the root the name is the repository's.
 */
export function derivedTag(repo: string, dockerfile: string): string {
  const dir = path.posix.dirname(dockerfile);
  const base = path.posix.basename(dockerfile);
  const variant = base === 'Dockerfile' ? '' : base.startsWith('Dockerfile.') ? base.slice('Dockerfile.'.length) : base.slice(0, -'.Dockerfile'.length);
  const parts = [dir === '.' ? '' : component(dir), component(variant)].filter((x) => x !== '');
  const name = parts.length ? parts.join('-') : repo;
  return `${repo}/${name}:latest`;
}

async function describe(root: string, e: Entry, log: Logger): Promise<Image> {
  const dfPath = path.join(root, e.dockerfile);
  const ignore = await loadLocalDockerignore(path.join(root, e.context), dfPath);
  let uses: string[] = [];
  try {
    uses = imagesUsed(parseDockerfile(await fsp.readFile(dfPath, 'utf8'), e.dockerfile).instructions, e.buildArgs);
  } catch (err) {
    // A Dockerfile that does not parse fails its own build; here it only has no bases.
    log.warn(`${e.dockerfile}: cannot read its FROM lines (${(err as Error).message}): its base images are not followed`);
  }
  return {
    tag: e.tag,
    dockerfile: e.dockerfile,
    context: e.context,
    'build-args': e.buildArgs,
    smoke: e.smoke,
    ...(ignore.file ? { ignoreFile: rel(root, ignore.file) } : {}),
    ignored: pathMatcher(ignore.patterns),
    uses,
  };
}

/** The images (not stages) a Dockerfile's FROM and COPY --from lines name, global ARGs and build args expanded, `:latest` added. */
export function imagesUsed(instructions: readonly ParsedInstruction[], buildArgs: Record<string, string>): string[] {
  const globals = new Map<string, string>();
  const stages = new Set<string>();
  const refs = new Set<string>();
  let seenFrom = false;
  const expand = (w: string): string => {
    try {
      return processWord(w, lookupFrom(globals));
    } catch {
      return w;
    }
  };
  const add = (ref: string): void => {
    const lower = ref.toLowerCase();
    if (ref === '' || lower === 'scratch' || stages.has(lower) || /^\d+$/.test(ref)) return;
    refs.add(normalizeRef(ref));
  };
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && !seenFrom) {
      for (const a of ins.args) {
        const eq = a.indexOf('=');
        const name = eq < 0 ? a : a.slice(0, eq);
        const value = Object.prototype.hasOwnProperty.call(buildArgs, name) ? buildArgs[name] : eq < 0 ? undefined : expand(a.slice(eq + 1).replace(/^(["'])(.*)\1$/, '$2'));
        if (value !== undefined) globals.set(name, value);
      }
    } else if (ins.keyword === 'FROM') {
      seenFrom = true;
      add(expand(ins.args[0] ?? ''));
      if (ins.args[1]?.toLowerCase() === 'as' && ins.args[2]) stages.add(ins.args[2].toLowerCase());
    } else if (ins.keyword === 'COPY') {
      const from = flagValue(ins, 'from');
      if (from !== undefined) add(from);
    }
  }
  return [...refs].sort();
}

/** `org/name` is `org/name:latest`; a digest or a tag is kept. */
export function normalizeRef(ref: string): string {
  if (ref.includes('@')) return ref;
  const last = ref.slice(ref.lastIndexOf('/') + 1);
  return last.includes(':') ? ref : `${ref}:latest`;
}

async function readChangedFiles(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read --changed-files ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give a file of changed paths, one a line`, { cause: err });
  }
  return cleanPaths(text.split(/\r?\n/));
}

function cleanPaths(lines: string[]): string[] {
  return [...new Set(lines.map((l) => l.trim()).filter((l) => l !== '').map((l) => path.posix.normalize(l.replace(/\\/g, '/')).replace(/^(\.\/)+/, '').replace(/\/+$/, '')))];
}

/** A ref given as --base/--head: a branch, tag or commit, never an option. */
function checkRef(flag: string, ref: string): void {
  if (ref === '' || ref.startsWith('-') || !/^[A-Za-z0-9._/@^~{}-]+$/.test(ref)) throw new UserError(`${flag} '${ref}' is not a git ref: give a branch, tag or commit`);
}

/** git in the repository directory, with a bounded run and no prompt. */
async function repoGit(root: string): Promise<import('simple-git').SimpleGit> {
  const { simpleGit } = await import('simple-git');
  return simpleGit({ baseDir: root, timeout: { block: 60_000 }, allowEnvironment: ['GIT_TERMINAL_PROMPT'] }).env({ ...pick(process.env, ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR']), GIT_TERMINAL_PROMPT: '0' });
}

/** `git diff --name-only --no-renames --relative BASE...HEAD`, run in the repository directory (paths relative to it). */
async function gitChanged(root: string, base: string, head: string): Promise<string[]> {
  for (const [flag, ref] of [['--base', base], ['--head', head]] as const) checkRef(flag, ref);
  const git = await repoGit(root);
  try {
    const out = await git.raw(['diff', '--name-only', '--no-renames', '--relative', `${base}...${head}`, '--']);
    return cleanPaths(out.split('\n'));
  } catch (err) {
    const first = ((err as Error).message.split('\n').find((l) => l.trim() !== '') ?? '').trim();
    throw new UserError(`git diff ${base}...${head} failed in ${root} (${first}): fetch both refs (actions/checkout with fetch-depth: 0) or give --changed-files`, { cause: err });
  }
}

/** What keeps BASE...HEAD from being diffed in a clone: commits it lacks, or no merge base of the two. */
export interface RangeProblem {
  /** The refs that name no commit here. */
  missing: ('base' | 'head')[];
  /** Both are here, but their merge base is not (a shallow clone) or does not exist. */
  noMergeBase: boolean;
  /** The clone is shallow (`git rev-parse --is-shallow-repository`). */
  shallow: boolean;
}

/** Whether BASE...HEAD can be diffed in the repository at `root`; undefined when it can. */
export async function gitRangeProblem(root: string, base: string, head: string): Promise<RangeProblem | undefined> {
  checkRef('base', base);
  checkRef('head', head);
  const git = await repoGit(root);
  // Both print a commit when it is there, nothing (exit 1, which simple-git does not count as a failure) when not.
  const found = (args: string[]): Promise<boolean> => git.raw(args).then((out) => out.trim() !== '', () => false);
  let shallow: boolean;
  try {
    shallow = (await git.raw(['rev-parse', '--is-shallow-repository'])).trim() === 'true';
  } catch (err) {
    const first = ((err as Error).message.split('\n').find((l) => l.trim() !== '') ?? '').trim();
    throw new UserError(`${root} is not a git repository (${first}): check the repository out first (actions/checkout)`, { cause: err });
  }
  const missing: ('base' | 'head')[] = [];
  for (const [which, ref] of [['base', base], ['head', head]] as const) if (!(await found(['rev-parse', '--verify', '--quiet', `${ref}^{commit}`]))) missing.push(which);
  const noMergeBase = missing.length === 0 && !(await found(['merge-base', base, head]));
  return missing.length || noMergeBase ? { missing, noMergeBase, shallow } : undefined;
}

function pick(env: NodeJS.ProcessEnv, keys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) if (env[k] !== undefined) out[k] = env[k] as string;
  return out;
}

function rel(root: string, file: string): string {
  return path.relative(root, file).split(path.sep).join('/');
}
