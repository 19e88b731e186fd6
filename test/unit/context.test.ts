import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalContext, contextRelative, parseDockerignore } from '../../src/source/context.js';
import { UserError } from '../../src/util/errors.js';

function ctx(patterns: string): LocalContext {
  return new LocalContext('/nonexistent', parseDockerignore(patterns));
}

describe(".dockerignore: Docker's documented examples", () => {
  test('*/temp*, */*/temp*, temp?', () => {
    const c = ctx('# comment\n*/temp*\n*/*/temp*\ntemp?\n');
    expect(c.ignored('somedir/temporary.txt')).toBe(true);
    expect(c.ignored('somedir/temp')).toBe(true);
    expect(c.ignored('somedir/subdir/temporary.txt')).toBe(true);
    expect(c.ignored('tempa')).toBe(true);
    expect(c.ignored('tempb')).toBe(true);
    expect(c.ignored('temp')).toBe(false);
    expect(c.ignored('tempab')).toBe(false);
    expect(c.ignored('a/b/c/temp')).toBe(false);
    expect(c.ignored('# comment')).toBe(false);
  });

  test('**/*.go matches at every depth, the root included', () => {
    const c = ctx('**/*.go\n');
    for (const p of ['main.go', 'a/b.go', 'a/b/c/d.go']) expect(c.ignored(p)).toBe(true);
    expect(c.ignored('main.gox')).toBe(false);
  });

  test('*.md with !README.md: only the root level, README.md kept', () => {
    const c = ctx('*.md\n!README.md\n');
    expect(c.ignored('CHANGES.md')).toBe(true);
    expect(c.ignored('README.md')).toBe(false);
    expect(c.ignored('docs/x.md')).toBe(false); // * does not cross /
  });

  test('the last matching line wins', () => {
    const a = ctx('*.md\n!README*.md\nREADME-secret.md\n');
    expect(a.ignored('README-secret.md')).toBe(true);
    expect(a.ignored('README-public.md')).toBe(false);
    expect(a.ignored('other.md')).toBe(true);
    const b = ctx('*.md\nREADME-secret.md\n!README*.md\n');
    expect(b.ignored('README-secret.md')).toBe(false);
  });

  test('patterns are cleaned like filepath.Clean, a leading / is dropped', () => {
    const c = ctx('/secret\n./a/../b\n');
    expect(c.ignored('secret')).toBe(true);
    expect(c.ignored('b')).toBe(true);
  });

  test('an excluded directory excludes what is inside it', () => {
    const c = ctx('node_modules\n');
    expect(c.ignored('node_modules/x/y.js')).toBe(true);
  });
});

describe('context paths', () => {
  const w = { file: 'Dockerfile', line: 3, keyword: 'COPY' };
  test.each([
    ['a.txt', 'a.txt'],
    ['./a/../b', 'b'],
    ['/etc/x', 'etc/x'], // absolute paths are relative to the context root
    ['/../../x', 'x'], // and cannot climb above it
    ['.', '.'],
    ['dir/', 'dir'],
  ])('%s -> %s', (src, want) => expect(contextRelative(src, w)).toBe(want));

  test.each(['../x', '..', 'a/../../x'])('%s leaves the context: error at the line', (src) => {
    expect(() => contextRelative(src, w)).toThrow(UserError);
    expect(() => contextRelative(src, w)).toThrow(/outside the build context/);
  });
});

describe('LocalContext.resolve on a real directory', () => {
  let root: string;
  let outside: string;
  const w = { file: 'Dockerfile', line: 7, keyword: 'COPY' };
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ctx-'));
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-out-'));
    fs.writeFileSync(path.join(outside, 'secret'), 'secret');
    fs.mkdirSync(path.join(root, 'src/sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'src/a.go'), 'package a');
    fs.writeFileSync(path.join(root, 'src/b.go'), 'package b');
    fs.writeFileSync(path.join(root, 'src/sub/c.txt'), 'c');
    fs.writeFileSync(path.join(root, 'src/notes.md'), 'n');
    fs.writeFileSync(path.join(root, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    fs.symlinkSync('run.sh', path.join(root, 'link-inside'));
    fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'link-outside'));
    fs.symlinkSync(outside, path.join(root, 'dir-outside'));
    fs.writeFileSync(path.join(root, '.dockerignore'), 'src/*.md\n');
  });
  afterAll(() => {
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  test('a file: sha256, size and mode', async () => {
    const c = await LocalContext.open(root, undefined);
    const [r] = await c.resolve('run.sh', w);
    expect(r).toEqual({ source: 'run.sh', kind: 'file', path: 'run.sh', sha256: createHash('sha256').update('#!/bin/sh\n').digest('hex'), size: 10, mode: 0o755 });
  });

  test('wildcards match one path segment, sorted', async () => {
    const c = await LocalContext.open(root, undefined);
    expect((await c.resolve('src/*.go', w)).map((r) => r.path)).toEqual(['src/a.go', 'src/b.go']);
    expect((await c.resolve('src/?.go', w)).map((r) => r.path)).toEqual(['src/a.go', 'src/b.go']);
  });

  test('a directory digest covers content and follows .dockerignore', async () => {
    const c = await LocalContext.open(root, undefined);
    const [d1] = await c.resolve('src', w);
    expect(d1).toMatchObject({ kind: 'dir', files: 3 }); // notes.md ignored
    fs.writeFileSync(path.join(root, 'src/notes.md'), 'changed: ignored, so same digest');
    expect((await c.resolve('src', w))[0]?.sha256).toBe(d1?.sha256);
    fs.writeFileSync(path.join(root, 'src/sub/c.txt'), 'C');
    expect((await c.resolve('src', w))[0]?.sha256).not.toBe(d1?.sha256);
    fs.writeFileSync(path.join(root, 'src/sub/c.txt'), 'c');
  });

  test('a symlink inside the context is followed; one that escapes is an error with the line', async () => {
    const c = await LocalContext.open(root, undefined);
    expect((await c.resolve('link-inside', w))[0]?.kind).toBe('file');
    for (const src of ['link-outside', 'dir-outside/secret', 'dir-outside']) {
      const e = await c.resolve(src, w).then(() => undefined, (err: unknown) => err);
      expect(e).toBeInstanceOf(UserError);
      expect((e as UserError).message).toMatch(/outside the build context/);
      expect((e as UserError).line).toBe(7);
    }
  });

  test('an excluded or missing source is not found, naming the ignore file', async () => {
    const c = await LocalContext.open(root, undefined);
    await expect(c.resolve('src/notes.md', w)).rejects.toThrow(/not found in the build context .* \(after \.dockerignore\)/);
    await expect(c.resolve('nope', w)).rejects.toThrow(/not found/);
    await expect(c.resolve('*.nope', w)).rejects.toThrow(/matches no file/);
  });

  test('<Dockerfile>.dockerignore beside the Dockerfile overrides the root .dockerignore', async () => {
    const df = path.join(root, 'app.Dockerfile');
    fs.writeFileSync(df, 'FROM scratch\n');
    fs.writeFileSync(`${df}.dockerignore`, 'run.sh\n');
    const c = await LocalContext.open(root, df);
    expect(c.ignoreFile).toBe(`${df}.dockerignore`);
    expect(c.ignored('run.sh')).toBe(true);
    expect(c.ignored('src/notes.md')).toBe(false);
    fs.rmSync(`${df}.dockerignore`);
    expect((await LocalContext.open(root, df)).ignoreFile).toBe(path.join(root, '.dockerignore'));
  });
});
