import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildkitOnly } from '../../src/commands/build.js';
import { buildPlan } from '../../src/dockerfile/plan.js';
import type { Plan } from '../../src/dockerfile/plan-schema.js';
import { applyCopy, keepWithParents } from '../../src/engine/vm-fs.js';
import type { ImageResolver } from '../../src/engine/vm/bases.js';
import { keyPlan, vmUnsupported } from '../../src/engine/vm/plan.js';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';
import { LocalContext, parentsPivot, pathMatcher } from '../../src/source/context.js';
import { Downloads } from '../../src/source/downloads.js';
import { UserError } from '../../src/util/errors.js';
import { mkfsFromDir } from '../helpers/ext4-craft.js';
import { serveDir, type Served } from '../helpers/servers.js';

// COPY --parents, COPY/ADD --exclude, COPY --link and ADD --checksum in the vm engine, planned by the
// front end and applied to real ext4 images (mkfs.ext4 -d, written by debugfs, read back in-process),
// checked against BuildKit's reference (frontend/dockerfile/docs/reference.md) and its own tests of these
// flags (frontend/dockerfile/dockerfile_parents_test.go, exclude_patterns_test.go).

let work: string;
let served: Served;
let n = 0;

function tree(dir: string, files: Record<string, string>): string {
  for (const [f, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    if (f.endsWith('/')) fs.mkdirSync(path.join(dir, f), { recursive: true });
    else if (data.startsWith('->')) fs.symlinkSync(data.slice(2), path.join(dir, f));
    else fs.writeFileSync(path.join(dir, f), data);
  }
  return dir;
}

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-copy-flags-'));
  fs.mkdirSync(path.join(work, 'www'));
  fs.writeFileSync(path.join(work, 'www', 'tool.sh'), 'echo tool\n');
  served = await serveDir(path.join(work, 'www'));
});

afterAll(async () => {
  await served.close();
  fs.rmSync(work, { recursive: true, force: true });
});

const src = { kind: 'literal' as const, ref: '<literal>', dockerfile: 'Dockerfile' };

async function plan(ctx: string, text: string, downloads?: Downloads): Promise<Plan> {
  return buildPlan(text, { context: await LocalContext.open(ctx, path.join(ctx, 'Dockerfile')), source: src, ...(downloads ? { downloads } : {}), allowHostUrls: true });
}

/**
 * Build the last stage's COPY/ADD steps into a fresh image (the stage named `base`, when there is one,
 * is made first from `baseDir` for --from) and list what it holds: path -> content, `dir` or `-> target`.
 */
async function build(ctx: string, text: string, o: { baseDir?: string; downloads?: Downloads } = {}): Promise<Record<string, string>> {
  const p = await plan(ctx, text, o.downloads);
  const id = n++;
  let fromImage: string | undefined;
  if (o.baseDir) {
    fromImage = path.join(work, `base${id}.ext4`);
    mkfsFromDir(o.baseDir, fromImage, { sizeMiB: 8 });
  }
  const empty = fs.mkdtempSync(path.join(work, 'empty-'));
  const img = path.join(work, `img${id}.ext4`);
  mkfsFromDir(empty, img, { sizeMiB: 8 });
  const stage = p.stages[p.stages.length - 1]!;
  for (const step of stage.steps.filter((s) => s.keyword === 'COPY' || s.keyword === 'ADD')) {
    const scratch = fs.mkdtempSync(path.join(work, 'scratch-'));
    await applyCopy(img, { step, dest: step.dest!, context: new LocalContext(ctx, []), ...(step.from ? { fromImage: fromImage! } : {}), owner: { uid: 0, gid: 0 }, chowned: false, scratch, ...(o.downloads ? { downloads: o.downloads } : {}) });
  }
  const image = await Ext4Image.open(img);
  try {
    const out: Record<string, string> = {};
    for await (const e of image.walk('/')) {
      if (e.path === '/lost+found' || e.path.startsWith('/lost+found/')) continue;
      out[e.path] = e.type === 'dir' ? 'dir' : e.type === 'symlink' ? `-> ${e.linkTarget}` : ((await image.readSmall(e.path))?.toString('utf8') ?? '');
    }
    return out;
  } finally {
    await image.close();
  }
}

const ctxDir = (name: string, files: Record<string, string>): string => {
  const d = path.join(work, 'ctx', `${name}-${n++}`);
  fs.mkdirSync(d, { recursive: true });
  tree(d, files);
  fs.writeFileSync(path.join(d, 'Dockerfile'), '');
  return d;
};
const withoutDockerfile = (t: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(t).filter(([p]) => !p.endsWith('/Dockerfile')));

describe('the --parents pivot', () => {
  test.each([
    ['./x/a.txt', '/', 'x/a.txt'],
    ['./x/./y/*.txt', './x', 'y/*.txt'],
    ['/test/a/b/./c/d', '/test/a/b', 'c/d'],
    ['/test/a/./b/./c', '/test/a', 'b/./c'.replace('/./', '/')],
    ['/test/a/b/c/d/.', '/', 'test/a/b/c/d'],
    ['src/**/*.txt', '/', 'src/**/*.txt'],
    ['/test/a/b*/./c/**/e', '/test/a/b*', 'c/**/e'],
    ['x/./../../etc', 'x', 'etc'],
  ])('%s: root %s, pattern %s', (source, root, pattern) => {
    expect(parentsPivot(source)).toEqual({ root, pattern });
  });
});

describe('--exclude patterns match as .dockerignore patterns do (moby/patternmatcher)', () => {
  test('wildcards, ** across directories, a directory taking its contents, ! exceptions', () => {
    const m = pathMatcher(['*.txt', 'docs', '**/*.tmp', '!docs/keep.md']);
    expect(['a.txt', 'sub/a.txt', 'docs', 'docs/x.md', 'docs/keep.md', 'x/y/z.tmp', 'a.md'].map((p) => [p, m.matches(p)])).toEqual([
      ['a.txt', true], ['sub/a.txt', false], ['docs', true], ['docs/x.md', true], ['docs/keep.md', false], ['x/y/z.tmp', true], ['a.md', false],
    ]);
    expect(m.exceptions).toBe(true);
    expect(pathMatcher(['*.txt']).exceptions).toBe(false);
  });

  test('what an exception keeps inside an excluded directory keeps the directories on the way to it', () => {
    const entries = ['docs', 'docs/x.md', 'docs/sub', 'docs/sub/keep.md', 'a.txt', 'b.md'].map((rel) => ({ rel }));
    const m = pathMatcher(['docs', '*.txt', '!docs/sub/keep.md']);
    expect(keepWithParents(entries, (r) => m.matches(r)).map((e) => e.rel)).toEqual(['docs', 'docs/sub', 'docs/sub/keep.md', 'b.md']);
  });
});

describe('COPY --parents from the context (BuildKit reference and tests)', () => {
  test('the reference: without --parents both a.txt land on one name; with it each keeps its directory', async () => {
    const ctx = ctxDir('ref1', { 'x/a.txt': 'xa\n', 'y/a.txt': 'ya\n' });
    const t = await build(ctx, 'FROM scratch\nCOPY ./x/a.txt ./y/a.txt /no_parents/\nCOPY --parents ./x/a.txt ./y/a.txt /parents/\n');
    expect(t).toEqual({ '/no_parents': 'dir', '/no_parents/a.txt': 'ya\n', '/parents': 'dir', '/parents/x': 'dir', '/parents/x/a.txt': 'xa\n', '/parents/y': 'dir', '/parents/y/a.txt': 'ya\n' });
  });

  test('the reference: a /./ pivot keeps only what follows it', async () => {
    const ctx = ctxDir('ref2', { 'x/y/a.txt': 'a\n', 'x/y/b.txt': 'b\n', 'x/y/c.md': 'c\n' });
    const t = await build(ctx, 'FROM scratch\nCOPY --parents ./x/./y/*.txt /parents/\n');
    expect(t).toEqual({ '/parents': 'dir', '/parents/y': 'dir', '/parents/y/a.txt': 'a\n', '/parents/y/b.txt': 'b\n' });
  });

  test('the reference: ** matches any number of directories, none included', async () => {
    const ctx = ctxDir('ref3', { 'src/a.txt': 'a\n', 'src/x/b.txt': 'b\n', 'src/x/y/c.txt': 'c\n', 'src/x/y/d.md': 'd\n', 'other/e.txt': 'e\n' });
    const t = await build(ctx, 'FROM scratch\nCOPY --parents ./src/**/*.txt /parents/\n');
    expect(t).toEqual({ '/parents': 'dir', '/parents/src': 'dir', '/parents/src/a.txt': 'a\n', '/parents/src/x': 'dir', '/parents/src/x/b.txt': 'b\n', '/parents/src/x/y': 'dir', '/parents/src/x/y/c.txt': 'c\n' });
  });

  test('testCopyParents: a file to /, a wildcard to a WORKDIR; a matched directory comes whole; the directories on the way keep their modes', async () => {
    const ctx = ctxDir('bk1', { 'foo1/foo2/bar': 'testing', 'foo1/foo2/baz': 'testing2', 'd/sub/inner/f': 'f\n' });
    fs.chmodSync(path.join(ctx, 'foo1'), 0o700);
    const t = await build(ctx, 'FROM scratch\nCOPY --parents foo1/foo2/bar /\nWORKDIR /test\nCOPY --parents foo1/foo2/ba* .\nCOPY --parents d/sub /whole\n');
    expect(withoutDockerfile(t)).toEqual({
      '/foo1': 'dir', '/foo1/foo2': 'dir', '/foo1/foo2/bar': 'testing',
      '/test': 'dir', '/test/foo1': 'dir', '/test/foo1/foo2': 'dir', '/test/foo1/foo2/bar': 'testing', '/test/foo1/foo2/baz': 'testing2',
      '/whole': 'dir', '/whole/d': 'dir', '/whole/d/sub': 'dir', '/whole/d/sub/inner': 'dir', '/whole/d/sub/inner/f': 'f\n',
    });
    const img = await Ext4Image.open(path.join(work, `img${n - 1}.ext4`));
    try {
      expect(((await img.stat('/foo1'))!.mode & 0o777).toString(8)).toBe('700');
    } finally {
      await img.close();
    }
  });

  test('a matched symlink stays a link; a path that is not there is an error, as BuildKit requires it', async () => {
    const ctx = ctxDir('bk2', { 'l/target.txt': 't\n', 'l/link': '->target.txt' });
    expect(await build(ctx, 'FROM scratch\nCOPY --parents l/link /out/\n')).toEqual({ '/out': 'dir', '/out/l': 'dir', '/out/l/link': '-> target.txt' });
    await expect(plan(ctx, 'FROM scratch\nCOPY --parents l/missing /out/\n')).rejects.toThrow(/^COPY --parents source l\/missing not found in the build context/);
  });

  test('ADD has no --parents (BuildKit: unknown flag)', async () => {
    const ctx = ctxDir('bk3', { 'a.txt': 'a\n' });
    await expect(plan(ctx, 'FROM scratch\nADD --parents a.txt /out/\n')).rejects.toThrow(/unknown flag --parents on ADD/);
  });
});

describe('COPY --from --parents (testCopyRelativeParents)', () => {
  let base: string;
  beforeAll(() => {
    base = tree(path.join(work, 'stage'), { 'test/a/b/c/d/e/bay': '', 'test/a/b/c/d/foo': '', 'test/a/b2/c/d/e/bar': '', 'test/a/b/c2/d/e/baz': '', 'test/a/b/c2/d/e2/baz': '' });
  });
  const ctx = (): string => ctxDir('rel', {});
  const files = (t: Record<string, string>): string[] => Object.keys(t).filter((p) => !p.endsWith('/Dockerfile')).sort();
  const from = async (line: string): Promise<string[]> => files(await build(ctx(), `FROM scratch AS base\nFROM scratch\n${line}\n`, { baseDir: base }));

  test.each([
    ['middle', 'COPY --from=base --parents /test/a/b/./c/d /out/', ['/out', '/out/c', '/out/c/d', '/out/c/d/e', '/out/c/d/e/bay', '/out/c/d/foo']],
    ['end', 'COPY --from=base --parents /test/a/b/c/d/. /out/', ['/out', '/out/test', '/out/test/a', '/out/test/a/b', '/out/test/a/b/c', '/out/test/a/b/c/d', '/out/test/a/b/c/d/e', '/out/test/a/b/c/d/e/bay', '/out/test/a/b/c/d/foo']],
    ['double', 'COPY --from=base --parents /test/a/./b/./c /out/', ['/out', '/out/b', '/out/b/c', '/out/b/c/d', '/out/b/c/d/e', '/out/b/c/d/e/bay', '/out/b/c/d/foo']],
    ['wildcard', 'COPY --from=base --parents /test/a/./*/c /out/', ['/out', '/out/b', '/out/b/c', '/out/b/c/d', '/out/b/c/d/e', '/out/b/c/d/e/bay', '/out/b/c/d/foo', '/out/b2', '/out/b2/c', '/out/b2/c/d', '/out/b2/c/d/e', '/out/b2/c/d/e/bar']],
    ['doublewildcard', 'COPY --from=base --parents /test/a/b*/./c/**/e /out/', ['/out', '/out/c', '/out/c/d', '/out/c/d/e', '/out/c/d/e/bar', '/out/c/d/e/bay']],
    ['doubleinputs', 'COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/', ['/out', '/out/c', '/out/c/d', '/out/c/d/e', '/out/c/d/e/bar', '/out/d', '/out/d/e', '/out/d/e/baz', '/out/d/e2', '/out/d/e2/baz']],
    ['wildcard-nonexistent', 'COPY --from=base --parents /test/a/b2*/c/nothing* /out/', ['/out']],
  ])('%s', async (_name, line, want) => {
    expect(await from(line)).toEqual(want);
  });

  test('a path without wildcards that the stage lacks is one line naming it', async () => {
    await expect(from('COPY --from=base --parents /test/nonexistent-file /out/')).rejects.toThrow(/^COPY --from --parents: \/test\/nonexistent-file does not exist in the source stage$/);
  });
});

describe('COPY/ADD --exclude (the reference and testExcludedFilesOnCopy)', () => {
  const files = {
    'dir1/file-101.png': '2', 'dir1/file-102.txt': '3', 'dir1/file-103.jpeg': '4',
    'dir2/file-201.pdf': '6', 'dir2/file-202.jpeg': '7', 'dir2/file-203.png': '8',
    'dir3/file-301.mp3': '9', 'dir3/file-302.mpeg': '10',
    'dir4/file-401.txt': '11', 'dir4/file-402.txt': '->file-401.txt', 'dir4/file-403.txt': '->file-404.txt',
  };
  const kept = (t: Record<string, string>, under: string): string[] => Object.keys(t).filter((p) => p.startsWith(`${under}/`)).map((p) => p.slice(under.length + 1)).sort();

  test.each([
    ['builder1', 'COPY --exclude=*/*.png --exclude=*/*.jpeg . /1', '/1', ['Dockerfile', 'dir1', 'dir1/file-102.txt', 'dir2', 'dir2/file-201.pdf', 'dir3', 'dir3/file-301.mp3', 'dir3/file-302.mpeg', 'dir4', 'dir4/file-401.txt', 'dir4/file-402.txt', 'dir4/file-403.txt']],
    ['builder2', 'COPY --exclude=*/*.pdf --exclude=*/*.txt . /2', '/2', ['Dockerfile', 'dir1', 'dir1/file-101.png', 'dir1/file-103.jpeg', 'dir2', 'dir2/file-202.jpeg', 'dir2/file-203.png', 'dir3', 'dir3/file-301.mp3', 'dir3/file-302.mpeg', 'dir4']],
    ['builder3', 'ADD --exclude=*.mp3 dir3/ /3/', '/3', ['file-302.mpeg']],
    ['builder4', 'COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/', '/4', ['file-302.mpeg']],
    ['builder5', 'ADD --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5/', '/5', ['file-102.txt', 'file-401.txt', 'file-402.txt', 'file-403.txt']],
    ['builder6', 'ADD --exclude=* dir* /6/', '/6', []],
  ])('%s', async (_name, line, under, want) => {
    const ctx = ctxDir('exclude', files);
    const t = await build(ctx, `FROM scratch\n${line}\n`);
    expect(kept(t, under)).toEqual(want);
    expect(t[under]).toBe('dir');
  });

  test('the reference: files the source wildcard matches are excluded by name too', async () => {
    const ctx = ctxDir('hom', { 'home.txt': 't', 'homer.md': 'm', 'homes.c': 'c', 'other.c': 'o' });
    expect(kept(await build(ctx, 'FROM scratch\nCOPY --exclude=*.txt hom* /mydir/\n'), '/mydir')).toEqual(['homer.md', 'homes.c']);
    expect(kept(await build(ctx, 'FROM scratch\nCOPY --exclude=*.txt --exclude=*.md hom* /mydir/\n'), '/mydir')).toEqual(['homes.c']);
  });

  test('an exception (!) keeps a file inside an excluded directory, with the directory made on the way', async () => {
    const ctx = ctxDir('exc', { 'app/docs/a.md': 'a', 'app/docs/keep.md': 'k', 'app/main.py': 'p' });
    expect(kept(await build(ctx, 'FROM scratch\nCOPY --exclude=docs --exclude=!docs/keep.md app/ /app/\n'), '/app')).toEqual(['docs', 'docs/keep.md', 'main.py']);
  });

  test('COPY --from a stage with --exclude, and --exclude with --parents (matched below the root)', async () => {
    const base = tree(path.join(work, 'exstage'), { 'out/bin/tool': 't', 'out/bin/tool.debug': 'd', 'out/share/doc/README': 'r' });
    const ctx = ctxDir('exfrom', {});
    const t = await build(ctx, 'FROM scratch AS base\nFROM scratch\nCOPY --from=base --exclude=*.debug --exclude=share/doc /out /opt/\n', { baseDir: base });
    // `*` stops at a slash: *.debug names only what is directly in /out.
    expect(kept(t, '/opt')).toEqual(['bin', 'bin/tool', 'bin/tool.debug', 'share']);
    const deep = await build(ctx, 'FROM scratch AS base\nFROM scratch\nCOPY --from=base --exclude=**/*.debug /out /opt/\n', { baseDir: base });
    expect(kept(deep, '/opt')).toEqual(['bin', 'bin/tool', 'share', 'share/doc', 'share/doc/README']);
    const p = await build(ctx, 'FROM scratch AS base\nFROM scratch\nCOPY --from=base --parents --exclude=out/bin/*.debug /out/bin /p/\n', { baseDir: base });
    expect(kept(p, '/p')).toEqual(['out', 'out/bin', 'out/bin/tool']);
    const c = ctxDir('exparents', { 'src/a.txt': 'a', 'src/b.md': 'b', 'src/x/c.txt': 'c' });
    expect(kept(await build(c, 'FROM scratch\nCOPY --parents --exclude=src/x src/* /p/\n'), '/p')).toEqual(['src', 'src/a.txt', 'src/b.md']);
  });
});

describe('.dockerignore exceptions in a copied directory', () => {
  test('what an exception keeps inside an ignored directory is copied, with the directory (as the context Docker is sent)', async () => {
    const ctx = ctxDir('ignore', { 'docs/a.md': 'a', 'docs/keep.md': 'k', 'main.py': 'p', '.dockerignore': 'docs\n!docs/keep.md\n' });
    const p = await plan(ctx, 'FROM scratch\nCOPY . /app/\n');
    const img = path.join(work, `ign${n++}.ext4`);
    const empty = fs.mkdtempSync(path.join(work, 'empty-'));
    mkfsFromDir(empty, img, { sizeMiB: 8 });
    const step = p.stages[0]!.steps[0]!;
    await applyCopy(img, { step, dest: step.dest!, context: await LocalContext.open(ctx, path.join(ctx, 'Dockerfile')), owner: { uid: 0, gid: 0 }, chowned: false, scratch: fs.mkdtempSync(path.join(work, 'scratch-')) });
    const image = await Ext4Image.open(img);
    try {
      const got: string[] = [];
      for await (const e of image.walk('/app')) got.push(e.path);
      expect(got.sort()).toEqual(['/app/.dockerignore', '/app/Dockerfile', '/app/docs', '/app/docs/keep.md', '/app/main.py']);
    } finally {
      await image.close();
    }
  });
});

describe('COPY --link', () => {
  test('accepted by the vm engine: the same tree as without it', async () => {
    const ctx = ctxDir('link', { 'a/b.txt': 'b', 'c.txt': 'c' });
    const p = await plan(ctx, 'FROM scratch\nCOPY --link a /x/\n');
    expect(vmUnsupported(p.stages[0]!.steps[0]!)).toBeUndefined();
    expect(await build(ctx, 'FROM scratch\nCOPY --link a c.txt /x/\nCOPY --link=true c.txt /y\n')).toEqual(await build(ctx, 'FROM scratch\nCOPY a c.txt /x/\nCOPY c.txt /y\n'));
  });
});

describe('ADD --checksum', () => {
  const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

  test('an http(s) download that matches is added; the checksum is part of the step key', async () => {
    const ctx = ctxDir('sum', {});
    const downloads = new Downloads(undefined, true);
    try {
      const t = await build(ctx, `FROM scratch\nADD --checksum=sha256:${sha('echo tool\n')} ${served.url}/tool.sh /opt/\n`, { downloads });
      expect(t['/opt/tool.sh']).toBe('echo tool\n');
    } finally {
      await downloads.dispose();
    }
    const keyed = async (flag: string): Promise<string> => {
      const d = new Downloads(undefined, true);
      try {
        const p = await plan(ctx, `FROM scratch\nADD ${flag} ${served.url}/tool.sh /opt/\n`, d);
        expect(vmUnsupported(p.stages[0]!.steps[0]!)).toBeUndefined();
        return (await keyPlan(p, {} as ImageResolver, {})).stepKeys[0]!;
      } finally {
        await d.dispose();
      }
    };
    expect(await keyed(`--checksum=sha256:${sha('echo tool\n')}`)).not.toBe(await keyed(''));
  });

  test('a mismatch is one line naming what was expected and what came, before any step runs', async () => {
    const ctx = ctxDir('sum2', {});
    const downloads = new Downloads(undefined, true);
    const wrong = sha('something else');
    try {
      const err = await plan(ctx, `FROM scratch\nADD --checksum=sha256:${wrong} ${served.url}/tool.sh /opt/\n`, downloads).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toBe(`ADD ${served.url}/tool.sh: checksum mismatch: expected sha256:${wrong} (--checksum), got sha256:${sha('echo tool\n')}; nothing was added`);
      expect((err as Error).message).not.toContain('\n');
    } finally {
      await downloads.dispose();
    }
  });

  test.each([
    ['a local file', 'ADD --checksum=sha256:{sum} a.txt /opt/', /^ADD --checksum needs an http\(s\) URL source, and a\.txt is not one \(BuildKit: checksum requires HTTP\(S\) or Git sources\): remove --checksum, or ADD the file by its URL$/],
    ['a heredoc', 'ADD --checksum=sha256:{sum} <<EOF /opt/x\nhi\nEOF', /^ADD --checksum needs an http\(s\) URL source, and a heredoc is not one/],
    ['two sources', 'ADD --checksum=sha256:{sum} {url} a.txt /opt/', /^ADD --checksum takes one source, not 2: give each URL its own ADD \(BuildKit: checksum can't be specified for multiple sources\)$/],
    ['not a sha256 digest', 'ADD --checksum=md5:abc {url} /opt/', /^ADD --checksum=md5:abc is not a sha256 digest: write --checksum=sha256:<64 lower-case hex digits>$/],
    ['on COPY', 'COPY --checksum=sha256:{sum} a.txt /opt/', /unknown flag --checksum on COPY/],
  ])('refused for %s, as BuildKit refuses it', async (_what, line, want) => {
    const ctx = ctxDir('sum3', { 'a.txt': 'a' });
    await expect(plan(ctx, `FROM scratch\n${line.replace('{sum}', sha('a')).replace('{url}', `${served.url}/tool.sh`)}\n`)).rejects.toThrow(want);
  });
});

describe('the Docker engine without BuildKit refuses these flags, naming the vm engine', () => {
  test.each([
    ['COPY --parents a.txt /x/', 'COPY --parents'],
    ['COPY --exclude=*.md . /x/', 'COPY --exclude'],
    ['ADD --exclude=*.md . /x/', 'ADD --exclude'],
  ])('%s', async (line, feature) => {
    const ctx = ctxDir('docker', { 'a.txt': 'a' });
    const step = (await plan(ctx, `FROM scratch\n${line}\n`)).stages[0]!.steps[0]!;
    expect(buildkitOnly(step)).toBe(feature);
    expect(vmUnsupported(step)).toBeUndefined();
  });
});
