import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expectJsonResult, lines, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { ext4Tree, type Tree, changedPaths, ext4Cat } from '../helpers/trees.js';
import { importDebianCloud, importTestKernel } from '../helpers/vm.js';

/**
 * RUN --mount=type=cache|bind|tmpfs and RUN --network with the vm engine (real QEMU under TCG, real ext4):
 * a cache volume outlives the build and is found warm by another build, never lands in an image; a bind
 * reads the build context or a stage; a tmpfs leaves nothing; all of them together with a secret keep the
 * secret working; RUN output goes through pipes; a build step writes the image's own /run (also with an
 * initrd kernel, which mounts a tmpfs there); bad mount options are one line before anything runs.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const BASE = 'fbtest/mountbase:1';
const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

function writeCtx(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  const dir = path.join(work, 'ctx', name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  for (const [f, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), data);
  }
  return dir;
}

const vmBuild = (dir: string, tag: string, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
  runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--context', dir, '--tag', tag, '--accel', 'tcg', ...extra], { env: { ...env, ...extraEnv } });

async function rootfsOf(tag: string): Promise<string> {
  const r = await runCli(['image', 'inspect', tag], { env });
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { rootfs: string }).rootfs;
}

const cat = ext4Cat;
const changed = (after: Tree, before: Tree): string[] => changedPaths(after, before, { dirMtimes: false });

const errors = (r: CliResult): string[] => lines(r.stderr).filter((l) => l.startsWith('error:'));
const leftovers = (): string[] => fs.readdirSync(path.join(work, 'tmp')).filter((n) => n.startsWith('firebuild-vmbuild-') || n.startsWith('firebuild-config-'));

beforeAll(async () => {
  work = await tempDir('firebuild-mounts-');
  fs.mkdirSync(path.join(work, 'tmp'));
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '', FIREBUILD_CACHE_MOUNT_SIZE: '1G' };
  expect(await importTestKernel(env)).toBe(0);
  const base = writeCtx('base', `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n`);
  expectJsonResult(await runCli(['baseos', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '64M'], { env }));
}, 10 * 60_000);

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

describe('RUN --mount=type=cache (MUST-SHOW: warm across builds, never in the image)', () => {
  test('a second build of another Dockerfile and tag finds what the first wrote in the cache; neither image holds the cache; ls and prune', async () => {
    const marker = `fbcache-${randomBytes(12).toString('hex')}`;
    const first = writeCtx('cache1', `FROM ${BASE}\nRUN --mount=type=cache,target=/cache,id=fbt sh -c 'if [ -e /cache/stamp ]; then echo warm; else echo cold; fi > /result; ls -A /cache > /listing; echo ${marker} > /cache/stamp'\n`);
    const r1 = await vmBuild(first, 'fbtest/cache-a:1');
    expectJsonResult(r1);
    const a = await rootfsOf('fbtest/cache-a:1');
    expect(await cat(a, '/result')).toBe('cold\n');
    // A fresh cache is an empty directory (no lost+found).
    expect(await cat(a, '/listing')).toBe('');
    const base = await ext4Tree(await rootfsOf(BASE));
    // The image is the base plus what the RUN wrote outside the cache: no /cache, not its content.
    expect(changed(await ext4Tree(a), base)).toEqual(['/listing', '/result']);
    expect(fs.readFileSync(a).includes(marker)).toBe(false);

    const second = writeCtx('cache2', `FROM ${BASE}\nRUN --mount=type=cache,target=/var/cache/other,id=fbt,sharing=locked sh -c 'cat /var/cache/other/stamp > /result; stat -c "%a %u %g" /var/cache/other > /mode'\n`);
    const r2 = await vmBuild(second, 'fbtest/cache-b:1');
    expectJsonResult(r2);
    const b = await rootfsOf('fbtest/cache-b:1');
    expect(await cat(b, '/result')).toBe(`${marker}\n`);
    expect(await cat(b, '/mode')).toBe('755 0 0\n');
    // (/result holds the marker: the RUN copied it out of the cache.)
    expect(changed(await ext4Tree(b), base)).toEqual(['/mode', '/result']);

    // The first Dockerfile again with --no-cache (the step reruns): the cache is warm now.
    expectJsonResult(await vmBuild(first, 'fbtest/cache-a:2', ['--no-cache']));
    expect(await cat(await rootfsOf('fbtest/cache-a:2'), '/result')).toBe('warm\n');

    const ls = await runCli(['cache', 'ls', '--json'], { env });
    expect(ls.code).toBe(0);
    expect((JSON.parse(ls.stdout) as { id: string; inUse: boolean }[]).map((v) => ({ id: v.id, inUse: v.inUse }))).toEqual([{ id: 'fbt', inUse: false }]);
    const pruned = await runCli(['cache', 'prune', '--id', 'fbt'], { env });
    expect({ code: pruned.code, out: pruned.stdout }).toEqual({ code: 0, out: 'fbt\n' });
    // Only the (empty) lock file stays: a build waiting on it keeps waiting on the same lock.
    expect(fs.readdirSync(path.join(work, 'home', 'cache', 'vm-mounts')).filter((n) => !n.endsWith('.lock'))).toEqual([]);
    expect(leftovers()).toEqual([]);
  }, 15 * 60_000);
});

describe('every mount type with a secret in one RUN (MUST-SHOW: the secret is readable)', () => {
  test.each([['compiled', {}], ['shell', { FIREBUILD_GUEST_INIT: 'shell' }]] as [string, NodeJS.ProcessEnv][])('%s init: secret + cache + bind (context, stage) + tmpfs; pipes; --network=none; the image holds only what the RUNs wrote; a changed bound file reruns the step', async (name, initEnv) => {
    const secret = `fbsecret-${randomBytes(12).toString('hex')}`;
    const secretFile = path.join(work, `secret-${name}`);
    fs.writeFileSync(secretFile, secret, { mode: 0o600 });
    const dir = writeCtx(`all-${name}`, [
      `FROM ${BASE} AS tools`,
      'RUN mkdir -p /opt/tools && echo tool > /opt/tools/t.txt',
      `FROM ${BASE}`,
      // Per init: the steps' keys differ, so neither test restores the other's steps.
      `WORKDIR /work-${name}`,
      [
        'RUN --mount=type=secret,id=tok --mount=type=cache,target=/var/cache/x,id=all',
        '--mount=type=bind,source=sub,target=src --mount=type=bind,from=tools,source=/opt/tools/t.txt,target=/tool.txt',
        '--mount=type=tmpfs,target=/scratch,size=8m',
        'sh -c \'sha256sum /run/secrets/tok | cut -d" " -f1 > /out.secret; cat src/a.txt > /out.bind; cat /tool.txt > /out.stage;',
        'echo x > /scratch/y && df -k /scratch | tail -1 | tr -s " " | cut -d" " -f2 > /out.tmpfs; echo c > /var/cache/x/c;',
        'if (echo w > src/w) 2>/dev/null; then echo rw; else echo ro; fi > /out.bindro;',
        'if test ! -t 1 && test ! -t 2; then echo pipes; else echo tty; fi > /out.tty\'',
      ].join(' \\\n  '),
      'RUN --network=none sh -c \'ls /sys/class/net > /out.net\'',
      'RUN mkdir -p /var/run/postgresql',
      'RUN test -d /var/run/postgresql && echo kept > /out.run',
      '',
    ].join('\n'), { 'sub/a.txt': 'bound v1\n', 'other.txt': 'not bound\n' });
    const r = await vmBuild(dir, `fbtest/all-${name}:1`, ['--secret', `id=tok,src=${secretFile}`], initEnv);
    expectJsonResult(r);
    const img = await rootfsOf(`fbtest/all-${name}:1`);
    expect(await cat(img, '/out.secret')).toBe(`${sha(secret)}\n`);
    expect(await cat(img, '/out.bind')).toBe('bound v1\n');
    expect(await cat(img, '/out.stage')).toBe('tool\n');
    expect(await cat(img, '/out.tmpfs')).toBe('8192\n');
    expect(await cat(img, '/out.bindro')).toBe('ro\n');
    expect(await cat(img, '/out.tty')).toBe('pipes\n');
    expect(await cat(img, '/out.net')).toBe('lo\n');
    expect(await cat(img, '/out.run')).toBe('kept\n');
    // Nothing of the mounts is left: no mount point (/work-<init>/src, /tool.txt, /scratch, /var/cache/x, /run/secrets), no /run/mount.
    expect(changed(await ext4Tree(img), await ext4Tree(await rootfsOf(BASE)))).toEqual(['/out.bind', '/out.bindro', '/out.net', '/out.run', '/out.secret', '/out.stage', '/out.tmpfs', '/out.tty', '/run/postgresql', `/work-${name}`]);
    expect(fs.readFileSync(img).includes(secret)).toBe(false);

    // What a bind reads is part of the step's key: a changed file reruns the step (and the others after it).
    fs.writeFileSync(path.join(dir, 'sub', 'a.txt'), 'bound v2\n');
    const again = await vmBuild(dir, `fbtest/all-${name}:2`, ['--secret', `id=tok,src=${secretFile}`], initEnv);
    expectJsonResult(again);
    expect(JSON.parse(again.stdout)).toMatchObject({ executed: 4 });
    expect(await cat(await rootfsOf(`fbtest/all-${name}:2`), '/out.bind')).toBe('bound v2\n');
    // A file outside the bound subtree is not: nothing reruns.
    fs.writeFileSync(path.join(dir, 'other.txt'), 'changed\n');
    const same = await vmBuild(dir, `fbtest/all-${name}:3`, ['--secret', `id=tok,src=${secretFile}`], initEnv);
    expect(JSON.parse(same.stdout)).toMatchObject({ executed: 0 });
    expect(leftovers()).toEqual([]);
  }, 15 * 60_000);
});

describe('an initrd kernel: build steps write the image\'s own /run', () => {
  test.each([['compiled', {}], ['shell', { FIREBUILD_GUEST_INIT: 'shell' }]] as [string, NodeJS.ProcessEnv][])('%s init: mkdir -p /var/run/postgresql in one RUN is there in the next', async (name, initEnv) => {
    expect(await importDebianCloud(env, `cloud-${name}`)).toBe(0);
    const dir = writeCtx(`initrd-${name}`, `FROM ${BASE}\nRUN mkdir -p /var/run/postgresql && echo ${name} > /tmp/t\nRUN test -d /var/run/postgresql && test -f /tmp/t && echo kept > /out\n`);
    const r = await vmBuild(dir, `fbtest/initrd-${name}:1`, ['--vmlinux-id', `cloud-${name}`], initEnv);
    expectJsonResult(r);
    expect(await cat(await rootfsOf(`fbtest/initrd-${name}:1`), '/out')).toBe('kept\n');
  }, 10 * 60_000);
});

describe('bad mounts are one line at the RUN, before anything runs', () => {
  test.each([
    ['RUN --mount=type=cache,target=/c,sharing=exclusive true', 'RUN --mount=type=cache: sharing=exclusive is not shared, private or locked'],
    ['RUN --mount=type=cache,target=/c,colour=red true', "RUN --mount=type=cache does not take 'colour'"],
    ['RUN --mount=type=tmpfs,target=/proc/x true', 'RUN --mount=type=tmpfs,target=/proc/x: the target /proc/x is under /proc, which the build VM mounts itself: give another path'],
    ['RUN --mount=type=bind,from=nostage,target=/x true', 'refers to unknown stage'],
    ['RUN --network=host true', "RUN --network=host is refused by the vm engine: a build VM never shares the host's network (it would reach the host's own services); use --network=default or none"],
    ['RUN --mount=type=bind,source=missing,target=/x true', 'missing not found in the build context'],
  ])('%s', async (run, msg) => {
    const dir = writeCtx(`bad-${sha(run).slice(0, 8)}`, `FROM ${BASE}\nRUN echo first > /first\n${run}\n`);
    const r = await vmBuild(dir, 'fbtest/bad:1');
    expect(r.code).toBe(2);
    const errs = errors(r);
    expect(errs).toHaveLength(1);
    expect(errs[0]).toContain(`${path.join(dir, 'Dockerfile')}:3: `);
    expect(errs[0]).toContain(msg);
    // Checked before anything ran: no VM booted (the first RUN did not run).
    expect(r.stderr).not.toContain('VM starting');
    expect((await runCli(['image', 'inspect', 'fbtest/bad:1'], { env })).code).not.toBe(0);
    expect(leftovers()).toEqual([]);
  }, 5 * 60_000);
});
