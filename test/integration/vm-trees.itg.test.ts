import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { ext4Tree, type Tree } from '../helpers/trees.js';
import { importTestKernel } from '../helpers/vm.js';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';

/**
 * The vm engine and the Docker engine build the same small Dockerfiles on the Debian 12 base (merged
 * /usr: /bin, /sbin, /lib and /var/run are symlinks; /etc/localtime links to a zone file) and give the
 * same tree, mtimes included where Docker keeps the source's: COPY, ADD and WORKDIR through those links,
 * COPY onto /etc/localtime, ADD of a .gz that holds no tar, mtimes of context files, a stage's files,
 * an archive's entries and ADD URLs (with and without Last-Modified), the context's file modes (what
 * the Docker engine is sent), and links of the image that climb past its root. Crafted links that loop
 * fail with one line.
 */
let work: string;
let env: NodeJS.ProcessEnv;
let srv: http.Server;
let url: string;
const BASE = 'fbtest/vmtrees-base:1';
const T2001 = new Date('2001-02-03T04:05:06.789Z');
const T1999 = new Date('1999-09-09T09:09:09Z');
const T2026 = Date.UTC(2026, 8, 1, 10) / 1000;

function writeCtx(name: string, files: Record<string, string | Buffer>): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), data);
  }
  return dir;
}

const build = (engine: 'vm' | 'docker', dir: string, tag: string): ReturnType<typeof runCli> =>
  runCli(['rootfs', '--engine', engine, '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', tag, '--allow-host-urls', ...(engine === 'vm' ? ['--accel', 'tcg'] : [])], { env });

const leftovers = (): string[] => fs.readdirSync(path.join(work, 'tmp')).filter((n) => n.startsWith('firebuild-vmbuild-'));

beforeAll(async () => {
  work = await tempDir('firebuild-vmtrees-');
  fs.mkdirSync(path.join(work, 'tmp'));
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  srv = http.createServer((req, res) => {
    res.writeHead(200, req.url === '/dated.txt' ? { 'last-modified': 'Tue, 01 Sep 2026 10:00:00 GMT' } : {});
    res.end(`served ${req.url}\n`);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
  expect(await importTestKernel(env)).toBe(0);
  const base = writeCtx('base', { Dockerfile: `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n` });
  expectJsonResult(await runCli(['baseos', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '64M'], { env }));
}, 10 * 60_000);

afterAll(() => {
  srv?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

/** Paths Docker fills per container or build (bind-mounted hosts, hostname, resolv.conf). */
const BUILD_DEPENDENT = ['/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/.dockerenv'];

function comparable(t: Tree): Tree {
  const out: Tree = {};
  for (const [p, n] of Object.entries(t)) if (!BUILD_DEPENDENT.includes(p)) out[p] = n.type === 'dir' ? { ...n, size: undefined } : n;
  return out;
}

function treeDiff(vt: Tree, dt: Tree): { p: string; vm: Tree[string] | undefined; docker: Tree[string] | undefined }[] {
  return [...new Set([...Object.keys(vt), ...Object.keys(dt)])].filter((p) => JSON.stringify(vt[p]) !== JSON.stringify(dt[p])).map((p) => ({ p, vm: vt[p], docker: dt[p] }));
}

/** Each path's mtime in seconds (Docker's export keeps seconds), as the image holds it: no link followed. */
async function mtimes(rootfs: string, paths: string[]): Promise<Record<string, number | undefined>> {
  const img = await Ext4Image.open(rootfs);
  try {
    const out: Record<string, number | undefined> = {};
    for (const p of paths) out[p] = (await img.entryAt(p))?.mtime.sec;
    return out;
  } finally {
    await img.close();
  }
}

describe('the vm engine and the Docker engine give the same tree', () => {
  test('COPY, ADD and WORKDIR through merged-/usr links, COPY onto /etc/localtime, ADD of a .gz that holds no tar, kept mtimes, the context\'s modes, links that climb past the root', async () => {
    const dir = writeCtx('cases', {
      'a.txt': 'a\n',
      'tz': 'CET-1CEST\n',
      'tree/sub/x': 'x\n',
      'notes.txt.gz': zlib.gzipSync('just text, no tar\n'),
      'modes/group-writable': 'gw\n',
      'modes/read-only': 'ro\n',
      'modes/owner-only': 'oo\n',
      'modes/private/inside': 'in\n',
      'modes/sticky/kept': 'k\n',
      Dockerfile: [
        `FROM ${BASE} AS stage`,
        'COPY a.txt /out/staged.txt',
        `FROM ${BASE}`,
        'RUN ln -s ../../../../../../tmp/escaped /escape && ln -s /../../tmp/escaped-abs /escape-abs',
        'COPY a.txt /bin/a-tool',
        'COPY tree/ /lib/app/',
        'ADD pkg.tar.gz /sbin/pkgs/',
        'WORKDIR /var/run/app',
        'COPY tz /etc/localtime',
        'ADD notes.txt.gz /opt/',
        `ADD ${url}/dated.txt /opt/dl/`,
        `ADD ${url}/undated.txt /opt/dl/`,
        'COPY modes/ /opt/modes/',
        'COPY --from=stage /out/staged.txt /opt/staged.txt',
        'COPY a.txt /escape/a.txt',
        'COPY a.txt /escape-abs/',
        // What a later step derives from the mtimes (as Python's .pyc headers do) is the same too.
        'RUN stat -c "%n %Y %a" /usr/bin/a-tool /usr/lib/app/sub/x /usr/sbin/pkgs/pkg/mod.py /opt/notes.txt.gz /opt/dl/dated.txt /opt/dl/undated.txt /opt/staged.txt /usr/share/zoneinfo/Etc/UTC /opt/modes/* > /stamps.txt',
        '',
      ].join('\n'),
    });
    execFileSync('sh', ['-c', 'mkdir -p p/pkg && echo "print(1)" > p/pkg/mod.py && tar -czf "$0/pkg.tar.gz" --owner=0 --group=0 --mtime=@7 -C p pkg && rm -r p', dir], { cwd: work });
    fs.utimesSync(path.join(dir, 'a.txt'), T2001, T2001);
    fs.utimesSync(path.join(dir, 'tz'), T1999, T1999);
    fs.utimesSync(path.join(dir, 'tree/sub/x'), T1999, T1999);
    fs.utimesSync(path.join(dir, 'notes.txt.gz'), T1999, T1999);
    fs.chmodSync(path.join(dir, 'modes/group-writable'), 0o775);
    fs.chmodSync(path.join(dir, 'modes/read-only'), 0o444);
    fs.chmodSync(path.join(dir, 'modes/owner-only'), 0o400);
    fs.chmodSync(path.join(dir, 'modes/private'), 0o700);
    fs.chmodSync(path.join(dir, 'modes/sticky'), 0o1777);
    const vm = await build('vm', dir, 'fbtest/vmtrees-vm:1');
    expectJsonResult(vm);
    const dk = await build('docker', dir, 'fbtest/vmtrees-docker:1');
    expectJsonResult(dk);
    const vroot = (JSON.parse(vm.stdout) as { rootfs: string }).rootfs;
    const droot = (JSON.parse(dk.stdout) as { rootfs: string }).rootfs;
    const vt = comparable(await ext4Tree(vroot));
    const dt = comparable(await ext4Tree(droot));
    expect(treeDiff(vt, dt)).toEqual([]);
    // The links stayed links; what went through them landed where they lead, inside the image.
    expect(vt['/bin']).toMatchObject({ type: 'symlink', link: 'usr/bin' });
    expect(vt['/etc/localtime']).toMatchObject({ type: 'symlink', link: '/usr/share/zoneinfo/Etc/UTC' });
    expect(vt['/usr/bin/a-tool']).toMatchObject({ type: 'file', mode: '644' });
    expect(vt['/usr/lib/app/sub/x']).toMatchObject({ type: 'file' });
    expect(vt['/usr/sbin/pkgs/pkg/mod.py']).toMatchObject({ type: 'file' });
    expect(vt['/run/app']).toMatchObject({ type: 'dir' });
    expect(vt['/usr/share/zoneinfo/Etc/UTC']).toMatchObject({ type: 'file', size: 10 });
    expect(vt['/opt/notes.txt.gz']).toMatchObject({ type: 'file', size: fs.statSync(path.join(dir, 'notes.txt.gz')).size });
    expect(vt['/tmp/escaped/a.txt']).toMatchObject({ type: 'file' });
    expect(vt['/tmp/escaped-abs/a.txt']).toMatchObject({ type: 'file' });
    expect(vt['/opt/modes/group-writable']?.mode).toBe('775');
    expect(vt['/opt/modes/read-only']?.mode).toBe('444');
    expect(vt['/opt/modes/owner-only']?.mode).toBe('400');
    expect(vt['/opt/modes/private']?.mode).toBe('700');
    expect(vt['/opt/modes/sticky']?.mode).toBe('1777');
    // mtimes: the sources', in both engines.
    const kept = ['/usr/bin/a-tool', '/usr/lib/app/sub/x', '/usr/sbin/pkgs/pkg/mod.py', '/usr/share/zoneinfo/Etc/UTC', '/opt/notes.txt.gz', '/opt/dl/dated.txt', '/opt/dl/undated.txt', '/opt/staged.txt'];
    const want = {
      '/usr/bin/a-tool': Math.floor(T2001.getTime() / 1000), '/usr/lib/app/sub/x': T1999.getTime() / 1000, '/usr/sbin/pkgs/pkg/mod.py': 7, '/usr/share/zoneinfo/Etc/UTC': T1999.getTime() / 1000,
      '/opt/notes.txt.gz': T1999.getTime() / 1000, '/opt/dl/dated.txt': T2026, '/opt/dl/undated.txt': 0, '/opt/staged.txt': Math.floor(T2001.getTime() / 1000),
    };
    expect(await mtimes(vroot, kept)).toEqual(want);
    expect(await mtimes(droot, kept)).toEqual(want);
    expect(leftovers()).toEqual([]);
  }, 30 * 60_000);
});

describe('crafted links in the image and paths through files: one line, nothing stored, nothing on the host', () => {
  test('COPY and WORKDIR through a symlink loop, COPY under a file reached through links', async () => {
    const loop = writeCtx('loop', { 'a.txt': 'a\n', Dockerfile: `FROM ${BASE}\nRUN ln -s /loop2 /loop1 && ln -s loop1 /loop2\nCOPY a.txt /loop1/x\n` });
    const t0 = Date.now();
    const r = await build('vm', loop, 'fbtest/vmtrees-loop:1');
    expect({ code: r.code, last: r.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(/Dockerfile:3: COPY \/loop1\/x: the destination cannot be resolved in the image \(.*more than 40 symlinks on the way \(a symlink loop\?\)\): fix the symlinks in an earlier RUN or choose another destination$/),
    });
    // The RUN comes from the step cache: no boot, the WORKDIR fails at once.
    const wd = writeCtx('loop-wd', { Dockerfile: `FROM ${BASE}\nRUN ln -s /loop2 /loop1 && ln -s loop1 /loop2\nWORKDIR /loop2/app\n` });
    const w = await build('vm', wd, 'fbtest/vmtrees-loop:2');
    expect({ code: w.code, last: w.stderr.trim().split('\n').pop() }).toEqual({ code: 2, last: expect.stringMatching(/Dockerfile:3: WORKDIR \/loop2\/app: the destination cannot be resolved in the image .*a symlink loop/) });
    expect(Date.now() - t0).toBeLessThan(10 * 60_000);
    const file = writeCtx('through-file', { 'a.txt': 'a\n', Dockerfile: `FROM ${BASE}\nCOPY a.txt /etc/os-release/x\n` });
    const f = await build('vm', file, 'fbtest/vmtrees-file:1');
    expect({ code: f.code, last: f.stderr.trim().split('\n').pop() }).toEqual({
      code: 2,
      last: expect.stringMatching(/Dockerfile:2: COPY \/etc\/os-release\/x: \/usr\/lib\/os-release \(through symlinks\) is a file in the image, not a directory: choose another destination or remove it in an earlier RUN$/),
    });
    const ls = (await runCli(['image', 'ls'], { env })).stdout;
    expect(ls).not.toContain('fbtest/vmtrees-loop');
    expect(ls).not.toContain('fbtest/vmtrees-file');
    expect(fs.existsSync('/loop1')).toBe(false);
    expect(leftovers()).toEqual([]);
  }, 20 * 60_000);
});
