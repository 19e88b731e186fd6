import { afterEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { derivedTag, discover, discoverReport, gitRangeProblem, imagesUsed, isDockerfileName, slugsOf } from '../../src/commands/discover.js';
import { isValidTag } from '../../src/store/tag.js';
import { main } from '../../src/cli/main.js';
import { parseDockerfile } from '../../src/dockerfile/parse.js';
import { MemoryLogger } from '../../src/util/logger.js';

/** `firebuild discover`: the images of a repository and the ones a change affects (docs/discover.md, P121..P125, P133). */
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A real git repository named `name` holding `files`, committed once. */
function repo(files: Record<string, string>, name = 'Shop_App'): string {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-discover-'));
  dirs.push(parent);
  const dir = path.join(parent, name);
  fs.mkdirSync(dir);
  write(dir, files);
  git(dir, 'init', '-q', '-b', 'main');
  commit(dir, 'first');
  return dir;
}

function write(dir: string, files: Record<string, string>): void {
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
}

function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', '-c', 'commit.gpgsign=false', ...args], { cwd: dir, encoding: 'utf8' });
}

function commit(dir: string, msg: string): void {
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '--allow-empty', '-m', msg);
}

const tags = (r: { include: { tag: string }[] }): string[] => r.include.map((i) => i.tag);

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = { stdout: { write: (s: string) => void (out += s) }, stderr: { write: (s: string) => void (err += s) }, env: {} };
  const code = await main(['discover', ...args], io as never);
  return { code, out, err };
}

describe('without a manifest', () => {
  test('every Dockerfile, Dockerfile.* and *.Dockerfile, outside node_modules, .git and vendor, tagged from its path, sorted by tag', async () => {
    const dir = repo({
      'Dockerfile': 'FROM alpine\n',
      'services/API/Dockerfile': 'FROM alpine\n',
      'tools/Dockerfile.dev': 'FROM alpine\n',
      'worker.Dockerfile': 'FROM alpine\n',
      'worker.Dockerfile.dockerignore': 'x\n',
      'node_modules/pkg/Dockerfile': 'FROM alpine\n',
      'vendor/lib/Dockerfile': 'FROM alpine\n',
      'docs/my-Dockerfile.txt': 'not one\n',
    });
    const r = await discover({ dir }, new MemoryLogger());
    expect(r.include).toEqual([
      { tag: 'shop-app/services-api:latest', slug: 'shop-app-services-api', dockerfile: 'services/API/Dockerfile', context: 'services/API', 'build-args': {}, 'build-args-list': '', smoke: null },
      { tag: 'shop-app/shop-app:latest', slug: 'shop-app-shop-app', dockerfile: 'Dockerfile', context: '.', 'build-args': {}, 'build-args-list': '', smoke: null },
      { tag: 'shop-app/tools-dev:latest', slug: 'shop-app-tools-dev', dockerfile: 'tools/Dockerfile.dev', context: 'tools', 'build-args': {}, 'build-args-list': '', smoke: null },
      { tag: 'shop-app/worker:latest', slug: 'shop-app-worker', dockerfile: 'worker.Dockerfile', context: '.', 'build-args': {}, 'build-args-list': '', smoke: null },
    ]);
  });

  test('names and derived tags', () => {
    expect(['Dockerfile', 'Dockerfile.dev', 'a.Dockerfile'].every(isDockerfileName)).toBe(true);
    expect(['Dockerfile.', '.Dockerfile', 'Dockerfile.dockerignore', 'a.Dockerfile.dockerignore', 'dockerfile', 'Dockerfile-x'].some(isDockerfileName)).toBe(false);
    expect(derivedTag('r', 'a/b.c/Dockerfile')).toBe('r/a-b-c:latest');
    expect(derivedTag('r', 'My Dir/X__Y.Dockerfile')).toBe('r/my-dir-x-y:latest');
  });

  test('two Dockerfiles giving one tag are one line asking for a manifest', async () => {
    const dir = repo({ 'a/b/Dockerfile': 'FROM alpine\n', 'a-b/Dockerfile': 'FROM alpine\n' });
    await expect(discover({ dir }, new MemoryLogger())).rejects.toThrow(/^a\/b\/Dockerfile and a-b\/Dockerfile both get the tag shop-app\/a-b:latest: write a firebuild.yml giving their tags$/);
  });
});

describe('slugs', () => {
  test('org-name, the version appended where two images share one, _ dropped; each makes a valid tag; a collision is one line', () => {
    const m = slugsOf(['acme/api:1', 'acme/web:1.2', 'acme/web:RC-2', '_/alpine:3']);
    expect(Object.fromEntries(m)).toEqual({ 'acme/api:1': 'acme-api', 'acme/web:1.2': 'acme-web-1-2', 'acme/web:RC-2': 'acme-web-rc-2', '_/alpine:3': 'alpine' });
    for (const slug of m.values()) expect(isValidTag(`pr/${slug}:12-1`)).toBe(true);
    expect(() => slugsOf(['a-b/c:1', 'a/b-c:1'])).toThrow(/^images a-b\/c:1 and a\/b-c:1 get one slug, a-b-c-1 \(org-name, the version appended where two share one\): give one of them another org or name$/);
    expect(() => slugsOf(['acme/web:1.0', 'acme/web:1-0'])).toThrow(/get one slug, acme-web-1-0/);
  });
});

describe('with a manifest', () => {
  const MANIFEST = [
    'images:',
    '  - tag: acme/web:1',
    '    context: web',
    '    build-args: { VERSION: 1.2, DEBUG: false, NAME: web }',
    '    smoke:',
    '      probes: ["http :8080/health"]',
    '      timeout: 30s',
    '  - tag: acme/base:1',
    '    dockerfile: images/base.Dockerfile',
  ].join('\n');

  test('its images, defaults filled in, build args as strings, smoke kept as written; Dockerfiles elsewhere are not listed', async () => {
    const dir = repo({ 'firebuild.yml': MANIFEST, 'web/Dockerfile': 'FROM acme/base:1\n', 'images/base.Dockerfile': 'FROM alpine\n', 'other/Dockerfile': 'FROM alpine\n' });
    const r = await discover({ dir }, new MemoryLogger());
    expect(r.include).toEqual([
      { tag: 'acme/base:1', slug: 'acme-base', dockerfile: 'images/base.Dockerfile', context: '.', 'build-args': {}, 'build-args-list': '', smoke: null },
      { tag: 'acme/web:1', slug: 'acme-web', dockerfile: 'web/Dockerfile', context: 'web', 'build-args': { VERSION: '1.2', DEBUG: 'false', NAME: 'web' }, 'build-args-list': 'VERSION=1.2\nDEBUG=false\nNAME=web', smoke: { probes: ['http :8080/health'], timeout: '30s' } },
    ]);
    // --manifest names another file; the default one is then not read.
    write(dir, { 'ci/images.yml': 'images:\n  - tag: acme/other:2\n    context: other\n', 'firebuild.yml': 'not: [valid' });
    expect(tags(await discover({ dir, manifest: 'ci/images.yml' }, new MemoryLogger()))).toEqual(['acme/other:2']);
  });

  test.each([
    ['an unknown key', 'images:\n  - tag: acme/web:1\n    contxt: web\n', "firebuild.yml: image acme/web:1: unknown key 'contxt': an image takes tag, dockerfile, context, build-args, smoke"],
    ['a missing tag', 'images:\n  - tag: acme/a:1\n  - context: web\n', "firebuild.yml: image #2: key 'tag' is missing: every image needs a tag (org/name:version)"],
    ['a missing Dockerfile', 'images:\n  - tag: acme/web:1\n    dockerfile: web/Nope\n', 'firebuild.yml: image acme/web:1: dockerfile web/Nope does not exist: fix the dockerfile key or add the file'],
    ['a missing default Dockerfile', 'images:\n  - tag: acme/x:1\n', 'firebuild.yml: image acme/x:1: dockerfile Dockerfile does not exist (the default: <context>/Dockerfile): fix the dockerfile key or add the file'],
    ['a bad tag', 'images:\n  - tag: Acme/Web\n', "firebuild.yml: image Acme/Web: tag 'Acme/Web' is not org/name:version"],
    ['a twice-given tag', 'images:\n  - tag: acme/web:1\n    context: web\n  - tag: acme/web:1\n    context: web\n', 'firebuild.yml: image acme/web:1: tag is given twice (images #1 and #2)'],
    ['a path outside the repository', 'images:\n  - tag: acme/web:1\n    context: ../x\n', 'firebuild.yml: image acme/web:1: context ../x is outside the repository'],
    ['a build arg of a list', 'images:\n  - tag: acme/web:1\n    context: web\n    build-args: { A: [1] }\n', "firebuild.yml: image acme/web:1: key 'build-args.A':"],
    ['an unknown top-level key', 'image:\n  - tag: acme/web:1\n', "firebuild.yml: unknown key 'image'"],
    ['bad YAML', 'images:\n  - tag: [acme\n', 'firebuild.yml:'],
    ['a smoke key of a list', 'images:\n  - tag: acme/web:1\n    context: web\n    smoke: { ports: [a, b] }\n', "firebuild.yml: image acme/web:1: key 'smoke.ports' is not a string, number or boolean: smoke's keys other than probes are scalars"],
  ])('%s is one line naming the manifest, the image and the key; exit 2, nothing printed', async (_what, manifest, message) => {
    const dir = repo({ 'firebuild.yml': manifest, 'web/Dockerfile': 'FROM alpine\n' });
    await expect(discover({ dir }, new MemoryLogger())).rejects.toThrow(message);
    const out = path.join(dir, 'matrix.json');
    const r = await cli([dir, '--output', out]);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toContain(message);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('affected images', () => {
  const FILES = {
    'firebuild.yml': [
      'images:',
      '  - { tag: acme/base:1, context: base }',
      '  - { tag: acme/web:1, context: web }',
      '  - { tag: acme/tool:1, context: tool }',
      '  - { tag: acme/alone:1, context: alone }',
    ].join('\n'),
    'base/Dockerfile': 'FROM alpine\nCOPY a /a\n',
    'base/a': 'a',
    // A global ARG naming the base, and `org/name` as `org/name:latest` is not this base.
    'web/Dockerfile': 'ARG BASE=acme/base:1\nFROM ${BASE} AS build\nFROM build\nCOPY . /srv\n',
    'web/.dockerignore': '*.md\n!KEEP.md\n',
    'web/index.html': 'hi',
    'tool/Dockerfile': 'FROM alpine\nCOPY --from=acme/web:1 /srv /srv\n',
    'alone/Dockerfile': 'FROM acme/base\n',
  };

  test('from git: BASE...HEAD; a context file, its .dockerignore exclusions and exceptions, bases followed transitively', async () => {
    const dir = repo(FILES);
    const changeOn = async (branch: string, files: Record<string, string>): Promise<string[]> => {
      git(dir, 'checkout', '-q', '-b', branch, 'main');
      write(dir, files);
      commit(dir, branch);
      const r = tags(await discover({ dir, base: 'main', head: branch }, new MemoryLogger()));
      git(dir, 'checkout', '-q', 'main');
      return r;
    };
    // Excluded by web/.dockerignore: nothing.
    expect(await changeOn('readme', { 'web/README.md': 'x' })).toEqual([]);
    // An exception of the .dockerignore is sent: web, and tool (COPY --from web).
    expect(await changeOn('keep', { 'web/KEEP.md': 'x' })).toEqual(['acme/tool:1', 'acme/web:1']);
    // The .dockerignore itself changes what is sent.
    expect(await changeOn('ignore', { 'web/.dockerignore': '*.md\n' })).toEqual(['acme/tool:1', 'acme/web:1']);
    // The base: web FROM it (through the ARG), tool through web; alone's FROM acme/base is acme/base:latest.
    expect(await changeOn('base', { 'base/a': 'b' })).toEqual(['acme/base:1', 'acme/tool:1', 'acme/web:1']);
    // The manifest: every image.
    expect(await changeOn('manifest', { 'firebuild.yml': `${FILES['firebuild.yml']}\n` })).toEqual(['acme/alone:1', 'acme/base:1', 'acme/tool:1', 'acme/web:1']);
    // Outside every context: nothing.
    expect(await changeOn('other', { 'docs/x.txt': 'x' })).toEqual([]);
    // A deleted file counts (git diff lists it).
    git(dir, 'checkout', '-q', '-b', 'rm', 'main');
    git(dir, 'rm', '-q', 'alone/Dockerfile');
    write(dir, { 'alone/Dockerfile': 'FROM alpine\n' });
    commit(dir, 'rm');
    expect(tags(await discover({ dir, base: 'main', head: 'rm' }, new MemoryLogger()))).toEqual(['acme/alone:1']);
    // No change given, or --all: every image.
    expect(tags(await discover({ dir }, new MemoryLogger()))).toHaveLength(4);
    expect(tags(await discover({ dir, base: 'main', head: 'main', all: true }, new MemoryLogger()))).toHaveLength(4);
  });

  test('from --changed-files, through the CLI, written to --output too', async () => {
    const dir = repo(FILES);
    const list = path.join(dir, '..', 'changed.txt');
    fs.writeFileSync(list, './web/index.html\n\nweb/README.md\n');
    const out = path.join(dir, '..', 'matrix.json');
    const r = await cli([dir, '--changed-files', list, '--output', out]);
    expect(r.code).toBe(0);
    expect(tags(JSON.parse(r.out))).toEqual(['acme/tool:1', 'acme/web:1']);
    expect(fs.readFileSync(out, 'utf8')).toBe(r.out);
    expect((await cli([dir, '--changed-files', list, '--base', 'main'])).err).toMatch(/--changed-files and --base\/--head both name the changes/);
    const bad = await cli([dir, '--base', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/git diff nope\.\.\.HEAD failed .*: fetch both refs/);
    expect((await cli([dir, '--base', '--upload-pack=x'])).code).toBe(2);
  });

  test('why each image is affected: its Dockerfile, its .dockerignore, the manifest, a file of its context, a base; the others have no why', async () => {
    const dir = repo(FILES);
    const whys = async (changed: string[]): Promise<Record<string, string | undefined>> => {
      const list = path.join(dir, '..', 'changed.txt');
      fs.writeFileSync(list, changed.join('\n'));
      const r = await discoverReport({ dir, changedFiles: list }, new MemoryLogger());
      expect(r.changed).toEqual(changed);
      expect(r.manifest).toBe('firebuild.yml');
      // The include list is exactly the images with a why.
      expect(tags(r.result)).toEqual(r.images.filter((i) => i.why !== undefined).map((i) => i.tag));
      return Object.fromEntries(r.images.map((i) => [i.tag, i.why]));
    };
    expect(await whys(['web/KEEP.md', 'web/index.html'])).toEqual({
      'acme/alone:1': undefined,
      'acme/base:1': undefined,
      'acme/tool:1': 'its base acme/web:1 is affected',
      'acme/web:1': 'web/KEEP.md and 1 more file(s) of its context changed',
    });
    expect(await whys(['base/Dockerfile', 'web/.dockerignore'])).toEqual({
      'acme/alone:1': undefined,
      'acme/base:1': 'its Dockerfile base/Dockerfile changed',
      'acme/tool:1': 'its base acme/web:1 is affected',
      'acme/web:1': 'its .dockerignore web/.dockerignore changed',
    });
    expect((await whys(['firebuild.yml']))['acme/alone:1']).toBe('the manifest firebuild.yml changed');
    // Every image: no change read, and the reason given.
    const all = await discoverReport({ dir, all: true, allReason: 'input all: every image' }, new MemoryLogger());
    expect(all.changed).toBeUndefined();
    expect(new Set(all.images.map((i) => i.why))).toEqual(new Set(['input all: every image']));
  });

  test('gitRangeProblem: a commit missing from a shallow clone, no merge base, or nothing wrong', () => {
    const dir = repo(FILES);
    const base = git(dir, 'rev-parse', 'HEAD').trim();
    git(dir, 'checkout', '-q', '-b', 'pr');
    write(dir, { 'web/index.html': 'changed' });
    commit(dir, 'pr');
    const head = git(dir, 'rev-parse', 'HEAD').trim();
    return (async () => {
      expect(await gitRangeProblem(dir, base, head)).toBeUndefined();
      expect(await gitRangeProblem(dir, 'main', 'pr')).toBeUndefined();
      // A clone of depth 1 has the head, not the base.
      const shallow = path.join(dir, '..', 'shallow');
      execFileSync('git', ['clone', '-q', '--depth', '1', '--branch', 'pr', `file://${dir}`, shallow]);
      expect(await gitRangeProblem(shallow, base, head)).toEqual({ missing: ['base'], noMergeBase: false, shallow: true });
      expect(await gitRangeProblem(shallow, '0'.repeat(40), '1'.repeat(40))).toEqual({ missing: ['base', 'head'], noMergeBase: false, shallow: true });
      // Unrelated histories: both commits here, no merge base.
      git(dir, 'checkout', '-q', '--orphan', 'other');
      commit(dir, 'other');
      expect(await gitRangeProblem(dir, 'main', 'other')).toEqual({ missing: [], noMergeBase: true, shallow: false });
      await expect(gitRangeProblem(dir, '--upload-pack=x', 'HEAD')).rejects.toThrow(/is not a git ref/);
      await expect(gitRangeProblem(path.join(dir, '..'), 'main', 'HEAD')).rejects.toThrow(/is not a git repository .*actions\/checkout/);
    })();
  });

  test('FROM and COPY --from images, stages and scratch left out', () => {
    const df = parseDockerfile('ARG V=2\nARG R\nFROM a/b:${V} AS one\nFROM one\nFROM scratch\nFROM $R\nCOPY --from=one /x /x\nCOPY --from=0 /x /x\nCOPY --from=c/d /y /y\nFROM e@sha256:00\n');
    expect(imagesUsed(df.instructions, {})).toEqual(['a/b:2', 'c/d:latest', 'e@sha256:00']);
    expect(imagesUsed(df.instructions, { V: '3', R: 'f/g:1' })).toEqual(['a/b:3', 'c/d:latest', 'e@sha256:00', 'f/g:1']);
  });
});
