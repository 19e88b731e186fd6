import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as path from 'node:path';
import { expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { DOCKER, ext4Tree, type Tree } from '../helpers/trees.js';
import { importTestKernel } from '../helpers/vm.js';

/**
 * COPY --parents, COPY/ADD --exclude, COPY --link and ADD --checksum through the CLI with the vm engine,
 * into real ext4 images (FROM scratch: nothing boots), checked against what BuildKit's Dockerfile
 * reference states for its examples; a checksum mismatch and a checksum on a local file fail in one line
 * with nothing stored or left behind; the Docker engine without BuildKit refuses these flags in one line
 * naming the vm engine instead of building something else.
 */
let work: string;
let env: NodeJS.ProcessEnv;
let srv: http.Server;
let url: string;
const TOOL = 'echo tool\n';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

function ctx(name: string, files: Record<string, string>, dockerfile: string): string {
  const dir = path.join(work, name);
  for (const [f, data] of Object.entries({ ...files, Dockerfile: dockerfile })) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), data);
  }
  return dir;
}

const build = (dir: string, tag: string, engine: 'vm' | 'docker' = 'vm'): ReturnType<typeof runCli> =>
  runCli(['rootfs', '--engine', engine, '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', tag, '--allow-host-urls', '--free-space', '1M'], { env });

async function built(dir: string, tag: string): Promise<Tree> {
  const r = await build(dir, tag);
  expectJsonResult(r);
  const t = await ext4Tree((JSON.parse(r.stdout) as { rootfs: string }).rootfs);
  delete t['/lost+found'];
  return t;
}

/** The paths under `under`, relative, sorted. */
const below = (t: Tree, under: string): string[] => Object.keys(t).filter((p) => p.startsWith(`${under}/`)).map((p) => p.slice(under.length + 1)).sort();

const leftovers = (): string[] => fs.readdirSync(path.join(work, 'tmp'));

beforeAll(async () => {
  work = await tempDir('firebuild-copyflags-');
  fs.mkdirSync(path.join(work, 'tmp'));
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  srv = http.createServer((req, res) => {
    res.writeHead(req.url === '/tool.sh' ? 200 : 404);
    res.end(req.url === '/tool.sh' ? TOOL : 'not here\n');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
  // Nothing here boots (no RUN), but a vm build checks its kernel is there.
  expect(await importTestKernel(env)).toBe(0);
}, 5 * 60_000);

afterAll(() => {
  srv?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('the vm engine does what BuildKit\'s reference says of these flags', () => {
  test('COPY --parents: without it and with it, a /./ pivot, ** across directories, from a stage with a pivot', async () => {
    const dir = ctx('parents', { 'x/a.txt': 'xa\n', 'y/a.txt': 'ya\n', 'p/y/a.txt': 'a\n', 'p/y/b.txt': 'b\n', 'src/a.txt': 'a\n', 'src/x/b.txt': 'b\n', 'src/x/y/c.txt': 'c\n', 'src/x/y/d.md': 'd\n' }, [
      'FROM scratch AS base',
      'COPY src /test/a/b/',
      'FROM scratch',
      'COPY ./x/a.txt ./y/a.txt /no_parents/',
      'COPY --parents ./x/a.txt ./y/a.txt /parents/',
      'COPY --parents ./p/./y/*.txt /pivot/',
      'COPY --parents ./src/**/*.txt /deep/',
      'COPY --from=base --parents /test/a/./b/x /staged/',
      '',
    ].join('\n'));
    const t = await built(dir, 'fbtest/copyflags-parents:1');
    // COPY ./x/a.txt ./y/a.txt /no_parents/ -> /no_parents/a.txt; with --parents -> /parents/x/a.txt, /parents/y/a.txt
    expect(below(t, '/no_parents')).toEqual(['a.txt']);
    expect(below(t, '/parents')).toEqual(['x', 'x/a.txt', 'y', 'y/a.txt']);
    // COPY --parents ./x/./y/*.txt /parents/ -> /parents/y/a.txt, /parents/y/b.txt
    expect(below(t, '/pivot')).toEqual(['y', 'y/a.txt', 'y/b.txt']);
    // COPY --parents ./src/**/*.txt /parents/ -> src/a.txt, src/x/b.txt, src/x/y/c.txt
    expect(below(t, '/deep')).toEqual(['src', 'src/a.txt', 'src/x', 'src/x/b.txt', 'src/x/y', 'src/x/y/c.txt']);
    expect(below(t, '/staged')).toEqual(['b', 'b/x', 'b/x/b.txt', 'b/x/y', 'b/x/y/c.txt', 'b/x/y/d.md']);
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('COPY --exclude: the reference\'s hom* examples, repeated patterns, a directory source, a stage\'s tree, ADD --exclude', async () => {
    const dir = ctx('exclude', { 'home.txt': 't', 'homer.md': 'm', 'homes.c': 'c', 'app/main.py': 'p', 'app/test_main.py': 't', 'app/docs/a.md': 'a' }, [
      'FROM scratch AS base',
      'COPY app /srv/app/',
      'FROM scratch',
      'COPY --exclude=*.txt hom* /mydir/',
      'COPY --exclude=*.txt --exclude=*.md hom* /mydir2/',
      'COPY --exclude=test_* --exclude=docs app/ /app/',
      'COPY --from=base --exclude=**/*.md /srv /staged/',
      'ADD --exclude=*.py app /added/',
      '',
    ].join('\n'));
    const t = await built(dir, 'fbtest/copyflags-exclude:1');
    expect(below(t, '/mydir')).toEqual(['homer.md', 'homes.c']);
    expect(below(t, '/mydir2')).toEqual(['homes.c']);
    expect(below(t, '/app')).toEqual(['main.py']);
    expect(below(t, '/staged')).toEqual(['app', 'app/docs', 'app/main.py', 'app/test_main.py']);
    expect(below(t, '/added')).toEqual(['docs', 'docs/a.md']);
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);

  test('COPY --link: accepted, the same tree as without it', async () => {
    const files = { 'a/b.txt': 'b\n', 'c.txt': 'c\n' };
    const linked = await built(ctx('link', files, 'FROM scratch\nCOPY --link a c.txt /x/\nCOPY --link=true c.txt /y\n'), 'fbtest/copyflags-link:1');
    const plain = await built(ctx('nolink', files, 'FROM scratch\nCOPY a c.txt /x/\nCOPY c.txt /y\n'), 'fbtest/copyflags-link:2');
    expect(linked).toEqual(plain);
    expect(below(linked, '/x')).toEqual(['b.txt', 'c.txt']);
  }, 10 * 60_000);

  test('ADD --checksum: a matching download is added; a mismatch is one line naming both digests, nothing stored', async () => {
    const ok = await built(ctx('sum', {}, `FROM scratch\nADD --checksum=sha256:${sha(TOOL)} ${url}/tool.sh /opt/\n`), 'fbtest/copyflags-sum:1');
    expect(ok['/opt/tool.sh']).toMatchObject({ type: 'file', sha256: sha(TOOL) });
    const wrong = sha('not the tool');
    const r = await build(ctx('sum-bad', {}, `FROM scratch\nADD --checksum=sha256:${wrong} ${url}/tool.sh /opt/\n`), 'fbtest/copyflags-sum:2');
    expect({ code: r.code, last: r.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(new RegExp(`Dockerfile:2: ADD ${url}/tool.sh: checksum mismatch: expected sha256:${wrong} \\(--checksum\\), got sha256:${sha(TOOL)}; nothing was added$`)),
    });
    const local = await build(ctx('sum-local', { 'a.txt': 'a' }, `FROM scratch\nADD --checksum=sha256:${sha('a')} a.txt /opt/\n`), 'fbtest/copyflags-sum:3');
    expect({ code: local.code, last: local.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(/Dockerfile:2: ADD --checksum needs an http\(s\) URL source, and a\.txt is not one \(BuildKit: checksum requires HTTP\(S\) or Git sources\): remove --checksum, or ADD the file by its URL$/),
    });
    const ls = (await runCli(['image', 'ls'], { env })).stdout;
    expect(ls).toContain('fbtest/copyflags-sum:1');
    expect(ls).not.toContain('fbtest/copyflags-sum:2');
    expect(ls).not.toContain('fbtest/copyflags-sum:3');
    expect(leftovers()).toEqual([]);
  }, 10 * 60_000);
});

describe('the Docker engine without BuildKit', () => {
  test.each([
    ['COPY --parents', 'COPY --parents a.txt /x/'],
    ['COPY --exclude', 'COPY --exclude=*.md . /x/'],
    ['ADD --checksum', `ADD --checksum=sha256:${sha(TOOL)} {url}/tool.sh /x/`],
  ])('%s is refused in one line naming the vm engine; nothing built or stored', async (feature, line) => {
    const dir = ctx(`docker-${feature.replace(/\W+/g, '-')}`, { 'a.txt': 'a' }, `FROM scratch\n${line.replace('{url}', url)}\n`);
    const tag = `fbtest/copyflags-docker:${feature.replace(/\W+/g, '-').replace(/^-/, '')}`;
    const r = await build(dir, tag, 'docker');
    expect({ code: r.code, last: r.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringContaining(`Dockerfile:2: ${feature} needs BuildKit (docker buildx), which this host's Docker lacks: install docker-buildx, build with --engine vm, or build without ${feature}`),
    });
    expect((await runCli(['image', 'ls'], { env })).stdout).not.toContain(tag);
    const images = execFileSync(DOCKER, ['images', '--format', '{{.Repository}}:{{.Tag}}'], { encoding: 'utf8' });
    expect(images).not.toContain('firebuild-build/copyflags-docker');
  }, 5 * 60_000);
});
