import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Plan } from '../../src/dockerfile/plan-schema.js';
import { contextTar } from '../../src/engine/context-tar.js';
import { readTar, type TarEntry } from '../../src/rootfs/tar-read.js';
import { LocalContext } from '../../src/source/context.js';
import type { ResolvedSource } from '../../src/source/resolve.js';

// The build context the docker engine sends: modes exactly as on disk (what the engine's COPY keeps),
// owners 0:0, mtimes to the second, hard links as links; with the Dockerfile inside the context (sent
// as it is) and outside it (the context copied first).

let work: string;
let ctx: string;
const MTIME = new Date('2003-04-05T06:07:08.9Z');

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-ctxtar-'));
  ctx = path.join(work, 'ctx');
  const f = (p: string, mode: number, data = `${p}\n`): void => {
    fs.mkdirSync(path.dirname(path.join(ctx, p)), { recursive: true });
    fs.writeFileSync(path.join(ctx, p), data);
    fs.chmodSync(path.join(ctx, p), mode);
  };
  f('Dockerfile', 0o644, 'FROM scratch\nCOPY . /\n');
  f('group-writable', 0o775);
  f('read-only', 0o444);
  f('owner-only', 0o400);
  f('setuid', 0o4755);
  f('private/inside', 0o600);
  fs.chmodSync(path.join(ctx, 'private'), 0o700);
  fs.mkdirSync(path.join(ctx, 'sticky'));
  fs.chmodSync(path.join(ctx, 'sticky'), 0o1777);
  fs.mkdirSync(path.join(ctx, 'shared'));
  fs.chmodSync(path.join(ctx, 'shared'), 0o2775);
  fs.linkSync(path.join(ctx, 'group-writable'), path.join(ctx, 'hard'));
  fs.symlinkSync('read-only', path.join(ctx, 'link'));
  fs.utimesSync(path.join(ctx, 'read-only'), MTIME, MTIME);
  fs.writeFileSync(path.join(work, 'Dockerfile.outside'), 'FROM scratch\nCOPY . /\n');
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

async function sent(dockerfile: string): Promise<Map<string, TarEntry & { data?: string }>> {
  const context = await LocalContext.open(ctx, dockerfile);
  const src: ResolvedSource = { kind: 'local', ref: dockerfile, text: fs.readFileSync(dockerfile, 'utf8'), dockerfile, dockerfilePath: dockerfile, context };
  const scratch = fs.mkdtempSync(path.join(work, 'scratch-'));
  const tar = await contextTar(src, {} as Plan, scratch);
  const out = new Map<string, TarEntry & { data?: string }>();
  for await (const e of readTar(tar.stream, 'the context')) {
    const chunks: Buffer[] = [];
    for await (const c of e.body) chunks.push(c);
    out.set(e.path, { ...e, ...(e.type === 'file' ? { data: Buffer.concat(chunks).toString() } : {}) });
  }
  return out;
}

describe('the docker engine\'s build context tar', () => {
  test.each([
    ['inside the context (sent as it is)', (): string => path.join(ctx, 'Dockerfile')],
    ['outside the context (the context copied first)', (): string => path.join(work, 'Dockerfile.outside')],
  ])('with the Dockerfile %s: modes exactly as on disk, owners 0:0, mtimes to the second, hard links and symlinks kept', async (_n, dockerfile) => {
    const t = await sent(dockerfile());
    const mode = (p: string): string | undefined => t.get(p)?.mode.toString(8);
    expect(mode('group-writable')).toBe('775');
    expect(mode('read-only')).toBe('444');
    expect(mode('owner-only')).toBe('400');
    expect(mode('setuid')).toBe('4755');
    expect(mode('private')).toBe('700');
    expect(mode('private/inside')).toBe('600');
    expect(mode('sticky')).toBe('1777');
    expect(mode('shared')).toBe('2775');
    for (const e of t.values()) expect({ path: e.path, uid: e.uid, gid: e.gid }).toEqual({ path: e.path, uid: 0, gid: 0 });
    expect(t.get('read-only')).toMatchObject({ type: 'file', data: 'read-only\n', mtime: { sec: Math.floor(MTIME.getTime() / 1000), nsec: 0 } });
    expect(t.get('link')).toMatchObject({ type: 'symlink', linkTarget: 'read-only' });
    const [first, second] = ['group-writable', 'hard'].map((p) => t.get(p)!);
    expect([first!.type, second!.type].sort()).toEqual(['file', 'hardlink']);
    expect((first!.type === 'hardlink' ? first : second)!.linkTarget).toBe(first!.type === 'hardlink' ? 'hard' : 'group-writable');
  });
});
