import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DirectoryStorage } from '../../src/store/directory.js';
import { MAX_SOCKET_PATH, jailerSocketPathLength } from '../../src/vmm/jail-paths.js';
import { BIN, REPO, lines, runCli, runCommand, snapshot, tempDir } from '../helpers/cli.js';

let work: string;
let env: NodeJS.ProcessEnv;
let dirs: { conf: string; rootfs: string; kernels: string; run: string; jail: string };

beforeEach(async () => {
  work = await tempDir();
  dirs = {
    conf: path.join(work, 'profiles'),
    rootfs: path.join(work, 'rootfs'),
    kernels: path.join(work, 'kernels'),
    run: path.join(work, 'run'),
    jail: path.join(work, 'jail'),
  };
  for (const d of [dirs.rootfs, dirs.kernels, dirs.run, dirs.jail]) fs.mkdirSync(d);
  // FIREBUILD_HOME keeps the built-in default store inside the test's directory.
  env = { FIREBUILD_HOME: path.join(work, 'home'), FIREBUILD_PROFILE_CONF_DIR: dirs.conf };
});
afterEach(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

const profileArgs = (): string[] => [
  '--profile-conf-dir', dirs.conf,
  '--chroot-base', dirs.jail,
  '--run-cache', dirs.run,
  '--storage-provider', 'directory',
  '--storage-provider-property-string', `rootfs-storage-root=${dirs.rootfs}`,
  '--storage-provider-property-string', `kernel-storage-root=${dirs.kernels}`,
];

async function writeImage(root: string, tag: string): Promise<void> {
  const store = new DirectoryStorage({ rootfsRoot: root, kernelRoot: dirs.kernels, createRoots: true });
  await store.writeImage(tag, async (s) => {
    await fsp.writeFile(s.rootfsPath, 'x'.repeat(1000));
    return { type: 'baseos', source: { kind: 'test', ref: 't' }, parents: [], config: {} };
  });
}

describe('firebuild CLI', () => {
  test('--help lists the commands', async () => {
    const r = await runCli(['--help'], { env });
    expect(r.code).toBe(0);
    for (const c of ['profile-create', 'profile-ls', 'profile-inspect', 'image', 'kernel', 'doctor']) expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
  });

  test('npx firebuild --help runs the package bin', () => {
    const out = execFileSync('npx', ['--no-install', 'firebuild', '--help'], { cwd: REPO, encoding: 'utf8', env: { ...process.env, ...env } });
    expect(out).toContain('Usage: firebuild');
    expect(out).toContain('profile-create');
  });

  test('image ls on an empty store exits 0 with only the header', async () => {
    const r = await runCli(['image', 'ls'], { env });
    expect(r.code).toBe(0);
    expect(lines(r.stdout)).toEqual(['TAG  TYPE  SIZE  APPARENT  CREATED  PARENT']);
    expect(fs.existsSync(path.join(work, 'home', 'rootfs'))).toBe(false); // listing creates nothing
  });

  test('profile-create with a chroot base too long exits 2 with the computed length in one line', async () => {
    const jail = path.join(dirs.jail, 'x'.repeat(60));
    fs.mkdirSync(jail);
    const args = profileArgs();
    args[args.indexOf('--chroot-base') + 1] = jail;
    const before = snapshot(work);
    const r = await runCli(['profile-create', '--profile', 'long', ...args], { env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    const len = jailerSocketPathLength(jail, undefined);
    expect(len).toBeGreaterThan(MAX_SOCKET_PATH);
    expect(r.stderr).toContain(`would be ${len} characters`);
    expect(snapshot(work)).toEqual(before);
  });

  test('profile-create, profile-ls and profile-inspect; directory 0700, file 0600', async () => {
    const r = await runCli(['profile-create', '--profile', 'standard', ...profileArgs(), '--tracing-enable', '--storage-provider-property-int64', 'max-images=10'], { env });
    expect(r.stderr).toBe('[profile] profile written profile=standard file=' + path.join(dirs.conf, 'standard.json') + '\n');
    expect(r.code).toBe(0);
    expect(fs.statSync(dirs.conf).mode & 0o777).toBe(0o700);
    expect(fs.statSync(path.join(dirs.conf, 'standard.json')).mode & 0o777).toBe(0o600);
    const ls = await runCli(['profile-ls'], { env });
    expect(ls.stdout).toBe('standard\n');
    const inspect = await runCli(['profile-inspect', '--profile', 'standard'], { env });
    expect(JSON.parse(inspect.stdout)).toMatchObject({
      name: 'standard',
      'run-cache': dirs.run,
      'chroot-base': dirs.jail,
      'storage-provider-property-string': { 'rootfs-storage-root': dirs.rootfs, 'kernel-storage-root': dirs.kernels },
      'storage-provider-property-int64': { 'max-images': 10 },
      'tracing-enable': true,
    });
    const again = await runCli(['profile-create', '--profile', 'standard', ...profileArgs()], { env });
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists.*--overwrite/);
    expect((await runCli(['profile-create', '--profile', 'standard', ...profileArgs(), '--overwrite'], { env })).code).toBe(0);
  });

  test('profile binaries are optional but must be executable when given', async () => {
    const notExec = path.join(work, 'firecracker');
    fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
    const r = await runCli(['profile-create', '--profile', 'fc', ...profileArgs(), '--binary-firecracker', notExec], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--binary-firecracker .* is not executable/);
    fs.chmodSync(notExec, 0o755);
    expect((await runCli(['profile-create', '--profile', 'fc', ...profileArgs(), '--binary-firecracker', notExec], { env })).code).toBe(0);
  });

  test('precedence through the CLI: a flag beats the profile, which beats the built-in default', async () => {
    const other = path.join(work, 'other-rootfs');
    fs.mkdirSync(other);
    await writeImage(dirs.rootfs, 'prof/img:1');
    await writeImage(other, 'flag/img:1');
    await writeImage(path.join(work, 'home', 'rootfs'), 'default/img:1');
    expect((await runCli(['profile-create', '--profile', 'p', ...profileArgs()], { env })).code).toBe(0);
    const tags = async (args: string[]): Promise<string[]> => {
      const r = await runCli(['image', 'ls', '--json', ...args], { env });
      expect(r.code).toBe(0);
      return (JSON.parse(r.stdout) as { tag: string }[]).map((x) => x.tag);
    };
    expect(await tags([])).toEqual(['default/img:1']);
    expect(await tags(['--profile', 'p'])).toEqual(['prof/img:1']);
    expect(await tags(['--profile', 'p', '--storage-provider-property-string', `rootfs-storage-root=${other}`])).toEqual(['flag/img:1']);
    expect(await tags([], )).toEqual(['default/img:1']);
    // FIREBUILD_PROFILE picks the profile too.
    expect((JSON.parse((await runCli(['image', 'ls', '--json'], { env: { ...env, FIREBUILD_PROFILE: 'p' } })).stdout) as { tag: string }[]).map((x) => x.tag)).toEqual(['prof/img:1']);
  });

  test('image ls / inspect / rm, and a corrupt metadata file', async () => {
    await writeImage(path.join(work, 'home', 'rootfs'), 'acme/web:1.2-rc1');
    await writeImage(path.join(work, 'home', 'rootfs'), 'acme/bad:1');
    const badMeta = path.join(work, 'home', 'rootfs', 'acme', 'bad', '1', 'metadata.json');
    fs.writeFileSync(badMeta, 'not json');
    const ls = await runCli(['image', 'ls'], { env });
    expect(ls.code).toBe(0);
    const rows = lines(ls.stdout);
    expect(rows).toHaveLength(3);
    expect(rows[1]).toMatch(/^acme\/bad:1\s+CORRUPT/);
    expect(rows[2]).toMatch(/^acme\/web:1\.2-rc1\s+baseos\s+\S+ \S+\s+1000 B\s+\d{4}-/);
    expect(ls.stderr).toContain('image acme/bad:1 is unreadable');
    const inspect = await runCli(['image', 'inspect', 'acme/web:1.2-rc1'], { env });
    expect(inspect.code).toBe(0);
    expect(JSON.parse(inspect.stdout).metadata).toMatchObject({ tag: 'acme/web:1.2-rc1', type: 'baseos' });
    const bad = await runCli(['image', 'inspect', 'acme/bad:1'], { env });
    expect(bad.code).toBe(2);
    // The store reads an entry through its .current link (docs/store.md): the message names that file.
    const badReal = path.join(path.dirname(badMeta), '.current', 'metadata.json');
    expect(lines(bad.stderr)).toEqual([`error: stored image acme/bad:1 is corrupt: image metadata ${badReal}: not valid JSON (Unexpected token 'o', "not json" is not valid JSON): remove it with 'firebuild image rm acme/bad:1', then build or pull it again`]);
    expect((await runCli(['image', 'rm', 'acme/web:1.2-rc1'], { env })).code).toBe(0);
    expect((await runCli(['image', 'inspect', 'acme/web:1.2-rc1'], { env })).stderr).toMatch(/not found/);
  });

  test('--log-as-json writes one JSON object a line on stderr', async () => {
    const r = await runCli(['--log-as-json', 'profile-create', '--profile', 'j', ...profileArgs()], { env });
    expect(r.code).toBe(0);
    const entries = lines(r.stderr).map((l) => JSON.parse(l));
    expect(entries[0]).toMatchObject({ '@level': 'info', '@message': 'profile written', '@module': 'profile', profile: 'j' });
    expect(entries[0]['@timestamp']).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  test('an unknown command or option is a one-line error with exit 2', async () => {
    const r = await runCli(['imgae', 'ls'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'imgae'/);
    const o = await runCli(['image', 'ls', '--nope'], { env });
    expect(o.code).toBe(2);
    expect(lines(o.stderr)).toEqual(["error: unknown option '--nope'"]);
  });
});

describe('start-up: a command loads what it uses, not every command (issue 13; bench/cli-start.mjs measures the time)', () => {
  /** The modules a CLI run imports (an ES module loader hook sees every import, node: ones included). */
  async function imported(args: string[]): Promise<string[]> {
    const hook = path.join(work, 'hook.mjs');
    const body = `import { writeSync } from 'node:fs'; export async function load(url, context, next) { writeSync(2, 'IMPORTED ' + url + '\\n'); return next(url, context); }`;
    await fsp.writeFile(hook, `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent(${JSON.stringify(body)}));\n`);
    const r = await runCommand(process.execPath, ['--import', hook, BIN, '--', ...args], { env: { ...process.env, ...env } });
    expect(r.code).toBe(0);
    const urls = r.stderr.split('\n').filter((l) => l.startsWith('IMPORTED ')).map((l) => l.slice('IMPORTED '.length));
    expect(urls).toContain(pathToFileURL(path.join(REPO, 'lib', 'cli', 'main.js')).href); // the hook saw the CLI
    return urls;
  }
  const HEAVY = /\/node_modules\/(zod|dockerode|@actions|tar|simple-git|proper-lockfile|dockerfile-ast)\/|\/lib\/(build|oci|rootfs|runtime)\/|^node:(https?|tls|dns)/;

  test('--version imports no dependency and no command', async () => {
    const urls = await imported(['--version']);
    expect(urls.filter((u) => u.includes('/node_modules/') || /\/lib\/(commands|store|profile)\//.test(u))).toEqual([]);
  });

  test('image ls (an empty store) and rootfs --plan import none of the other commands\' dependencies', async () => {
    expect((await imported(['image', 'ls'])).filter((u) => HEAVY.test(u))).toEqual([]);
    expect((await imported(['image', 'ls', '--json'])).filter((u) => HEAVY.test(u))).toEqual([]);
    const plan = await imported(['rootfs', '--plan', '--dockerfile', 'examples/hello/Dockerfile']);
    // The plan is parsed (src/dockerfile) and checked (zod): those it needs; no engine, fetch or git.
    expect(plan.filter((u) => HEAVY.test(u) && !/\/node_modules\/(zod|dockerfile-ast)\//.test(u))).toEqual([]);
  });
});

describe('bad input: one line, exit 2, nothing changed on disk', () => {
  type Case = [string, () => string[] | Promise<string[]>, RegExp];
  const cases: Case[] = [
    ['unknown profile', () => ['image', 'ls', '--profile', 'nope'], /^error: profile 'nope' not found in .*profile-create --profile nope/],
    ['malformed tag', () => ['image', 'inspect', 'Acme/Web'], /^error: malformed tag 'Acme\/Web': use org\/name:version/],
    ['malformed tag on rm', () => ['image', 'rm', 'acme/web:1/../..'], /^error: malformed tag/],
    ['missing storage root', () => ['image', 'ls', '--storage-provider-property-string', `rootfs-storage-root=${path.join(work, 'missing')}`], /^error: rootfs-storage-root .*missing does not exist: create it/],
    ['missing storage root in profile-create', () => {
      const a = profileArgs();
      a[a.indexOf(`rootfs-storage-root=${dirs.rootfs}`)] = `rootfs-storage-root=${path.join(work, 'missing')}`;
      return ['profile-create', '--profile', 'x', ...a];
    }, /^error: storage property rootfs-storage-root .*missing does not exist/],
    ['malformed string property', () => ['profile-create', '--profile', 'x', ...profileArgs(), '--storage-provider-property-string', 'novalue'], /^error: malformed --storage-provider-property-string 'novalue': use key=value/],
    ['malformed int64 property', () => ['profile-create', '--profile', 'x', ...profileArgs(), '--storage-provider-property-int64', 'n=1.5'], /^error: malformed --storage-provider-property-int64 'n=1.5'/],
    ['malformed property on a command', () => ['image', 'ls', '--storage-provider-property-string', '=x'], /^error: malformed --storage-provider-property-string/],
    ['unwritable profile dir', async () => {
      const ro = path.join(work, 'ro');
      fs.mkdirSync(ro);
      if (process.getuid?.() === 0) execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
      else fs.chmodSync(ro, 0o500);
      return ['profile-create', '--profile', 'x', ...profileArgs(), '--profile-conf-dir', path.join(ro, 'profiles')];
    }, /^error: profile directory .*ro\/profiles is not writable/],
    ['invalid profile name', () => ['profile-inspect', '--profile', '../etc'], /^error: invalid profile name '\.\.\/etc'/],
    ['unknown storage provider', () => ['image', 'ls', '--storage-provider', 's3'], /^error: unknown storage provider 's3'/],
    ['corrupt metadata file', async () => {
      await writeImage(dirs.rootfs, 'acme/c:1');
      fs.writeFileSync(path.join(dirs.rootfs, 'acme', 'c', '1', 'metadata.json'), '{"schemaVersion":1}');
      return ['image', 'inspect', 'acme/c:1', '--storage-provider-property-string', `rootfs-storage-root=${dirs.rootfs}`];
    }, /^error: stored image acme\/c:1 is corrupt: image metadata .*metadata\.json: (tag|type|created|source|config|rootfs).*: remove it with 'firebuild image rm acme\/c:1'/],
    ['kernel file missing', () => ['kernel', 'import', '--id', 'k1', path.join(work, 'nope')], /^error: kernel file .*nope not found/],
    ['bad kernel id', () => ['kernel', 'import', '--id', '../k', '/etc/hostname'], /^error: invalid kernel id '\.\.\/k'/],
  ];

  test.each(cases)('%s', async (_name, args, want) => {
    const a = await args();
    const before = snapshot(work);
    const r = await runCli(a, { env });
    try {
      expect(r.code).toBe(2);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(want);
      expect(snapshot(work)).toEqual(before);
    } finally {
      const ro = path.join(work, 'ro');
      if (fs.existsSync(ro) && process.getuid?.() === 0) execFileSync('umount', [ro]);
    }
  });
});
