import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { RegistryCaches, RegistryStepCache, stepTag, STEP_CACHE_ARTIFACT_TYPE, STEP_CACHE_LAYER_TYPE, ANNOTATION_STEP_KEY } from '../../src/engine/registry-step-cache.js';
import { StepCache } from '../../src/engine/step-cache.js';
import { EMPTY, MANIFEST_MEDIA_TYPE } from '../../src/oci/referrers.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { tarCreate } from '../../src/rootfs/gnu-tar.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { expectJsonResult, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { startRegistry, type Registry } from '../helpers/servers.js';
import { annotations, runAction } from '../helpers/runner.js';
import { factsOf, summaryTables } from '../helpers/summary-render.js';
import { ext4Cat } from '../helpers/trees.js';
import { freePort, importTestKernel } from '../helpers/vm.js';

/**
 * The registry step cache (docs/step-cache.md) and the fleet it serves: three runners (three homes, each
 * with its own store, step cache and temp dir) and one registry of the test's own (real docker-registry,
 * its storage in the test's dir so a blob can be corrupted as a disk would). Runner A builds and exports,
 * B rebuilds with 0 steps run, C changes one step and reruns from it; a corrupt blob is detected, the
 * step rebuilt and the entry replaced; concurrent pushers lose nothing; auth; bad input.
 */
const bcrypt = createRequire(import.meta.url)('bcryptjs') as { hashSync(pw: string, rounds: number): string };
const SECRET = `regcache-${process.pid}`;
let work: string;
let reg: Registry;
let authReg: Registry;
let n = 0;
const BASE = process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim';
const REPO = `fbtest/fleet-${process.pid}`;

const dockerfile = (two: string): string => `FROM ${BASE}\nRUN echo one > /one\nRUN echo ${two} > /two\nRUN cat /one /two > /three\n`;

interface Runner { home: string; tmp: string; env: NodeJS.ProcessEnv }

async function runner(name: string, more: NodeJS.ProcessEnv = {}): Promise<Runner> {
  const home = path.join(work, name, 'home');
  const tmp = path.join(work, name, 'tmp');
  fs.mkdirSync(tmp, { recursive: true });
  const env = { FIREBUILD_HOME: home, TMPDIR: tmp, FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '', DOCKER_CONFIG: path.join(work, name, 'docker'), ...more };
  expect(await importTestKernel(env)).toBe(0);
  return { home, tmp, env };
}

interface Built { executed: number; cached: number; rootfs: string; registryCache?: { pulled: number; pushed: number; present: number; pruned: number; exportWarning?: string } }

async function build(r: Runner, text: string, extra: string[]): Promise<CliResult & { json?: Built }> {
  const dir = path.join(work, `ctx-${n++}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'Dockerfile'), text);
  const res = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', `fbtest/fleet:${n}`, '--accel', 'tcg', ...extra], { env: r.env });
  return { ...res, ...(res.code === 0 ? { json: JSON.parse(res.stdout) as Built } : {}) };
}

/** Push a hand-made entry for `tagKey`: its archive holds `files` (from `dir`), its manifest names `annotated`. */
async function plant(client: RegistryClient, repo: string, tagKey: string, annotated: string, dir: string, files: string[]): Promise<void> {
  const archive = path.join(work, `planted-${n++}.tar.zst`);
  await tarCreate(archive, { dir, names: files, compression: 'zstd', sparse: true });
  const data = fs.readFileSync(archive);
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  await client.pushBlob(repo, { data }, digest, data.length);
  await client.pushBlob(repo, { data: Buffer.from(EMPTY.data, 'base64') }, EMPTY.digest, EMPTY.size);
  await client.putManifest(repo, stepTag(tagKey), Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPE, artifactType: STEP_CACHE_ARTIFACT_TYPE,
    config: { mediaType: EMPTY.mediaType, digest: EMPTY.digest, size: EMPTY.size },
    layers: [{ mediaType: STEP_CACHE_LAYER_TYPE, digest, size: data.length }],
    annotations: { [ANNOTATION_STEP_KEY]: annotated },
  })), MANIFEST_MEDIA_TYPE);
}

const tags = async (addr: string): Promise<string[]> => ((await (await fetch(`http://${addr}/v2/${REPO}/tags/list`)).json()) as { tags: string[] | null }).tags ?? [];
const warnings = (r: CliResult): string[] => r.stderr.split('\n').filter((l) => l.startsWith('WARN '));

beforeAll(async () => {
  work = await tempDir('firebuild-regcache-');
  reg = await startRegistry(`127.0.0.1:${await freePort()}`, path.join(work, 'registry'));
  fs.writeFileSync(path.join(work, 'htpasswd'), `ci:${bcrypt.hashSync(SECRET, 5)}\n`);
  authReg = await startRegistry(`127.0.0.1:${await freePort()}`, path.join(work, 'registry-auth'), { htpasswd: path.join(work, 'htpasswd') });
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await authReg?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('a fleet of three runners sharing one registry step cache', () => {
  let a: Runner;
  let keys: string[] = [];

  test('runner A builds and exports every step; runner B rebuilds with 0 steps run; C changes step 2 and reruns from it', async () => {
    a = await runner('a');
    const cache = `registry:${reg.addr}/${REPO}`;
    const built = await build(a, dockerfile('two'), ['--cache-to', cache]);
    expectJsonResult(built);
    expect(built.json).toMatchObject({ executed: 3, cached: 0, registryCache: { pushed: 3, present: 0, pulled: 0 } });
    keys = (await tags(reg.addr)).filter((t) => t.startsWith('step-')).map((t) => t.slice(5));
    expect(keys).toHaveLength(3);

    const b = await runner('b');
    const again = await build(b, dockerfile('two'), ['--cache-from', cache]);
    expectJsonResult(again);
    expect(again.json).toMatchObject({ executed: 0, cached: 3, registryCache: { pulled: 1 } });
    expect(await ext4Cat(again.json!.rootfs, '/three')).toBe('one\ntwo\n');
    expect(warnings(again)).toEqual([]);

    const c = await runner('c');
    const changed = await build(c, dockerfile('TWO'), ['--cache-from', cache, '--cache-to', cache]);
    expectJsonResult(changed);
    // Step 1 came from the registry; steps 2 and 3 ran, and were pushed (step 1 was there already).
    expect(changed.json).toMatchObject({ executed: 2, cached: 1, registryCache: { pulled: 1, pushed: 2, present: 1 } });
    expect(await ext4Cat(changed.json!.rootfs, '/three')).toBe('one\nTWO\n');
    expect((await tags(reg.addr)).filter((t) => t.startsWith('step-'))).toHaveLength(5);
  }, 20 * 60_000);

  test('a corrupt blob in the registry is detected, the step built again and the entry replaced', async () => {
    const client = new RegistryClient(reg.addr);
    // The last step's entry of runner A's build: find its layer and flip a byte of it on the registry's disk.
    const last = await Promise.all(keys.map(async (k) => ({ k, m: JSON.parse((await client.getManifest(REPO, stepTag(k), [MANIFEST_MEDIA_TYPE])).body.toString()) as { layers: { digest: string }[]; annotations: Record<string, string> } })));
    const newest = last.sort((x, y) => x.m.annotations['org.opencontainers.image.created']!.localeCompare(y.m.annotations['org.opencontainers.image.created']!)).at(-1)!;
    const hex = newest.m.layers[0]!.digest.slice(7);
    const blob = path.join(reg.storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    const data = fs.readFileSync(blob);
    data[data.length >> 1] = data[data.length >> 1]! ^ 0xff;
    fs.writeFileSync(blob, data);

    const d = await runner('d');
    const cache = `registry:${reg.addr}/${REPO}`;
    const rebuilt = await build(d, dockerfile('two'), ['--cache-from', cache, '--cache-to', cache]);
    expectJsonResult(rebuilt);
    expect(warnings(rebuilt).join('\n')).toMatch(/registry step cache entry cannot be used: the step is built again.*does not match its digest/);
    // Step 3's entry was bad: step 2's was pulled, step 3 ran, and its entry was pushed afresh.
    expect(rebuilt.json).toMatchObject({ executed: 1, cached: 2, registryCache: { pulled: 1, pushed: 1 } });
    expect(await ext4Cat(rebuilt.json!.rootfs, '/three')).toBe('one\ntwo\n');
    const fresh = JSON.parse((await client.getManifest(REPO, stepTag(newest.k), [MANIFEST_MEDIA_TYPE])).body.toString()) as { layers: { digest: string }[] };
    expect(fresh.layers[0]!.digest).not.toBe(newest.m.layers[0]!.digest);

    const e = await runner('e');
    const healed = await build(e, dockerfile('two'), ['--cache-from', cache]);
    expectJsonResult(healed);
    expect(healed.json).toMatchObject({ executed: 0, cached: 3 });
    expect(warnings(healed)).toEqual([]);
  }, 20 * 60_000);

  test('the build-rootfs action, run as the runner runs it: pulled from cache-from, a cache-to that cannot be reached is one warning annotation', async () => {
    const r = await runner('action');
    const dir = path.join(work, `ctx-${n++}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile('two'));
    const run = await runAction('build-rootfs/index.js', {
      dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/fleet-action:1', engine: 'vm', 'step-cache': 'false',
      'cache-from': `registry:${reg.addr}/${REPO}`, 'cache-to': 'registry:127.0.0.1:1/fbtest/unreachable',
    }, { ...r.env, FIREBUILD_ACCEL: 'tcg' });
    expect({ code: run.code, errors: annotations(run.stdout) }).toEqual({ code: 0, errors: [] });
    // One warning annotation (the build's logger's), naming the cache and why.
    expect(annotations(run.stdout, 'warning')).toEqual([expect.stringMatching(/^::warning::\[rootfs\] the step cache export failed \(the image is built and stored\) cache=127\.0\.0\.1:1\/fbtest\/unreachable reason=cannot reach registry 127\.0\.0\.1:1/)]);
    expect(run.outputs).toMatchObject({ 'cache-pulled': '1', 'cache-pushed': '0', tag: 'fbtest/fleet-action:1' });
    expect(factsOf(summaryTables(run.summary)[0]!)).toMatchObject({ steps: '0 run, 3 from the cache', 'registry cache (from)': `1 pulled from ${reg.addr}/${REPO}`, 'registry cache (to)': expect.stringMatching(/^export failed: cannot reach registry/) });
  }, 10 * 60_000);
});

describe('the registry step cache against bad registries and bad input', () => {
  test('unreachable: --cache-from builds without it, --cache-to is a warning, and the image is stored', async () => {
    const r = await runner('unreachable');
    const built = await build(r, 'FROM scratch\nCOPY Dockerfile /d\n', ['--cache-from', 'registry:127.0.0.1:1/fbtest/x', '--cache-to', 'registry:127.0.0.1:1/fbtest/x']);
    expectJsonResult(built);
    expect(built.json).toMatchObject({ executed: 1, registryCache: { pulled: 0, pushed: 0, exportWarning: expect.stringMatching(/cannot reach registry 127\.0\.0\.1:1/) } });
    expect(warnings(built).join('\n')).toMatch(/the step cache export failed \(the image is built and stored\)/);
    const ls = await runCli(['image', 'ls', '--json'], { env: r.env });
    expect((JSON.parse(ls.stdout) as { tag: string }[]).map((i) => i.tag)).toEqual([`fbtest/fleet:${n}`]);
  }, 5 * 60_000);

  test('a registry with auth: credentials from the Docker config push and pull; without them the export is a warning', async () => {
    const cache = `registry:${authReg.addr}/${REPO}`;
    const anon = await runner('anon');
    const refused = await build(anon, 'FROM scratch\nCOPY Dockerfile /d\n', ['--cache-to', cache]);
    expectJsonResult(refused);
    expect(refused.json!.registryCache!.exportWarning).toMatch(/needs credentials/);
    expect(`${refused.stdout}${refused.stderr}`).not.toContain(SECRET);

    const login = { auths: { [authReg.addr]: { auth: Buffer.from(`ci:${SECRET}`).toString('base64') } } };
    const p = await runner('pusher');
    fs.mkdirSync(p.env.DOCKER_CONFIG!, { recursive: true });
    fs.writeFileSync(path.join(p.env.DOCKER_CONFIG!, 'config.json'), JSON.stringify(login));
    const pushed = await build(p, 'FROM scratch\nCOPY Dockerfile /d\n', ['--cache-to', cache]);
    expectJsonResult(pushed);
    expect(pushed.json!.registryCache).toMatchObject({ pushed: 1 });
    const q = await runner('puller');
    fs.mkdirSync(q.env.DOCKER_CONFIG!, { recursive: true });
    fs.writeFileSync(path.join(q.env.DOCKER_CONFIG!, 'config.json'), JSON.stringify(login));
    const pulled = await build(q, 'FROM scratch\nCOPY Dockerfile /d\n', ['--cache-from', cache]);
    expectJsonResult(pulled);
    expect(pulled.json).toMatchObject({ executed: 0, registryCache: { pulled: 1 } });
    expect(`${pushed.stdout}${pushed.stderr}${pulled.stdout}${pulled.stderr}`).not.toContain(SECRET);
  }, 5 * 60_000);

  test.each([
    [['--cache-to', 'registry:127.0.0.1:5000/acme/cache:v1'], /^error: invalid cache location 'registry:127\.0\.0\.1:5000\/acme\/cache:v1': name a repository without a tag or digest/],
    [['--cache-from', 'type=registry,ref=x'], /^error: invalid cache location 'type=registry,ref=x': write registry:HOST\/REPOSITORY/],
    [['--cache-max-size', '1G'], /^error: --cache-max-size prunes the --cache-to registry step cache: give --cache-to too$/],
    [['--cache-to', 'registry:127.0.0.1:5000/a/b', '--cache-max-size', 'lots'], /^error: .*--cache-max-size/],
  ])('%j is one line, and nothing is built or stored', async (extra, want) => {
    const r = await runner(`bad-${n}`);
    const res = await build(r, 'FROM scratch\nCOPY Dockerfile /d\n', extra);
    expect({ code: res.code, errors: res.stderr.split('\n').filter((l) => l.startsWith('error:')) }).toEqual({ code: 2, errors: [expect.stringMatching(want)] });
    expect(fs.existsSync(path.join(r.home, 'cache', 'vm-steps'))).toBe(false);
    const ls = await runCli(['image', 'ls', '--json'], { env: r.env });
    expect(JSON.parse(ls.stdout || '[]')).toEqual([]);
  }, 60_000);

  test('the Docker engine refuses the registry step cache in one line', async () => {
    const r = await runner('docker');
    const res = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', 'FROM scratch\n', '--tag', 'fbtest/x:1', '--cache-from', `registry:${reg.addr}/x`], { env: r.env });
    expect({ code: res.code, errors: res.stderr.split('\n').filter((l) => l.startsWith('error:')) }).toEqual({ code: 2, errors: [expect.stringMatching(/are the vm engine's registry step cache: add --engine vm/)] });
  }, 60_000);
});

describe('entries, pushed and pulled in-process', () => {
  /** A local step cache with entries for `keys`: real ext4 images (mkfs), each with a file naming its key. */
  async function localCache(name: string, keys: string[]): Promise<StepCache> {
    const dir = path.join(work, 'local', name);
    const c = new StepCache(dir, 1024 ** 3, new MemoryLogger());
    for (const k of keys) {
      const img = path.join(work, `img-${k}.ext4`);
      if (!fs.existsSync(img)) {
        const src = path.join(work, `src-${k}`);
        fs.mkdirSync(src, { recursive: true });
        fs.writeFileSync(path.join(src, 'key'), k);
        execFileSync('mkfs.ext4', ['-q', '-F', '-d', src, img, '8M'], { stdio: 'pipe' });
      }
      await c.save(k, img);
    }
    return c;
  }
  const key = (s: string): string => createHash('sha256').update(s).digest('hex');
  const open = (repo: string): RegistryStepCache => new RegistryStepCache(new RegistryClient(reg.addr), repo, new MemoryLogger(), 1024 ** 3);

  test('concurrent pushers: equal keys (last writer wins, the entry is whole) and different keys (none lost)', async () => {
    const repo = `fbtest/concurrent-${process.pid}`;
    const [k1, k2, k3, k4] = ['1', '2', '3', '4'].map(key) as [string, string, string, string];
    const x = await localCache('x', [k1, k2, k3]);
    const y = await localCache('y', [k2, k3, k4]);
    // Four pushers at once, overlapping on k2 and k3.
    await Promise.all([open(repo).push([k1, k2, k3], x), open(repo).push([k2, k3, k4], y), open(repo).push([k3, k2], x), open(repo).push([k4, k1], y)]);
    const listed = await open(repo).list();
    expect(listed.map((e) => e.key).sort()).toEqual([k1, k2, k3, k4].sort());
    for (const k of [k1, k2, k3, k4]) {
      const fresh = new StepCache(path.join(work, 'local', `fresh-${k}`), 1024 ** 3, new MemoryLogger());
      expect(await open(repo).pull(k, fresh)).toBe(true);
      const out = path.join(work, `out-${k}.ext4`);
      expect(await fresh.restore(k, out)).toBe(true);
      expect(await ext4Cat(out, '/key')).toBe(k);
    }
  }, 5 * 60_000);

  test('--cache-max-size prunes the oldest entries first', async () => {
    const repo = `fbtest/prune-${process.pid}`;
    const ks = ['p1', 'p2', 'p3'].map(key);
    const c = await localCache('prune', ks);
    for (const k of ks) await open(repo).push([k], c);
    const before = await open(repo).list();
    expect(before.map((e) => e.key)).toEqual(ks);
    const keep = before[1]!.bytes + before[2]!.bytes;
    expect(await open(repo).prune(keep)).toEqual([ks[0]]);
    expect((await open(repo).list()).map((e) => e.key)).toEqual(ks.slice(1));
  }, 5 * 60_000);

  test('a crafted entry is refused: another key planted in its archive, a manifest naming another key, a huge sparse image', async () => {
    const repo = `fbtest/crafted-${process.pid}`;
    const client = new RegistryClient(reg.addr);
    const [mine, other] = [key('mine'), key('other')];
    const src = await localCache('crafted', [other]);
    const victim = (name: string): StepCache => new StepCache(path.join(work, 'local', name), 1024 ** 3, new MemoryLogger());

    // 1. The entry tagged for `mine` carries `other`'s files: pulling `mine` must not plant `other`.
    await plant(client, repo, mine, mine, src.dir, [`${other}.ext4`, `${other}.json`]);
    const v1 = victim('v1');
    expect(await open(repo).pull(mine, v1)).toBe(false);
    expect(await v1.has(other)).toBe(false);
    expect(await v1.has(mine)).toBe(false);

    // 2. The manifest under `mine`'s tag names `other`.
    await plant(client, repo, mine, other, src.dir, [`${other}.ext4`, `${other}.json`]);
    expect(await open(repo).pull(mine, victim('v2'))).toBe(false);

    // 3. A tiny archive whose image claims 64 GiB (sparse): refused before it is unpacked.
    const huge = path.join(work, 'huge');
    fs.mkdirSync(huge);
    fs.writeFileSync(path.join(huge, `${mine}.json`), JSON.stringify({ sha256: 'x' }));
    fs.closeSync(fs.openSync(path.join(huge, `${mine}.ext4`), 'w'));
    fs.truncateSync(path.join(huge, `${mine}.ext4`), 64 * 1024 ** 3);
    await plant(client, repo, mine, mine, huge, [`${mine}.ext4`, `${mine}.json`]);
    const v3 = victim('v3');
    const log = new MemoryLogger();
    expect(await new RegistryStepCache(client, repo, log, 1024 ** 3).pull(mine, v3)).toBe(false);
    expect(JSON.stringify(log.entries)).toMatch(/more than the step cache's limit/);
    expect(fs.readdirSync(v3.dir).filter((f) => !f.startsWith('.'))).toEqual([]);
  }, 5 * 60_000);
});

describe('a hostile or broken registry never fails a build', () => {
  /** A registry of the test's own making: `routes` answers each path (status, body, headers); every request is counted. */
  async function stub(routes: (p: string) => { status: number; body: string; headers?: Record<string, string> }): Promise<{ addr: string; hits: string[]; close(): Promise<void> }> {
    const hits: string[] = [];
    const server = http.createServer((req, res) => {
      hits.push(`${req.method} ${req.url}`);
      const r = req.url === '/v2/' ? { status: 200, body: '{}' } : routes(req.url ?? '');
      res.writeHead(r.status, { 'Content-Type': 'application/json', ...r.headers });
      res.end(req.method === 'HEAD' ? undefined : r.body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { addr: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, hits, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
  }
  const k = createHash('sha256').update('hostile').digest('hex');

  test.each([
    ['null', 'null'],
    ['an array', '[]'],
    ['layers: null', JSON.stringify({ artifactType: STEP_CACHE_ARTIFACT_TYPE, layers: null })],
    ['a layer of size 1e400', `{"artifactType":"${STEP_CACHE_ARTIFACT_TYPE}","layers":[{"mediaType":"${STEP_CACHE_LAYER_TYPE}","digest":"sha256:${'a'.repeat(64)}","size":1e400}],"annotations":{"${ANNOTATION_STEP_KEY}":"${k}"}}`],
    ['a negative layer size', JSON.stringify({ artifactType: STEP_CACHE_ARTIFACT_TYPE, layers: [{ mediaType: STEP_CACHE_LAYER_TYPE, digest: `sha256:${'a'.repeat(64)}`, size: -1 }], annotations: { [ANNOTATION_STEP_KEY]: k } })],
  ])('a manifest that is %s: pull says no, warns, and marks the entry for replacement', async (_what, body) => {
    const s = await stub(() => ({ status: 200, body, headers: { 'Content-Type': MANIFEST_MEDIA_TYPE } }));
    try {
      const log = new MemoryLogger();
      const c = new RegistryStepCache(new RegistryClient(s.addr), 'x/y', log, 1024 ** 3);
      expect(await c.pull(k, new StepCache(path.join(work, 'local', `hostile-${n++}`), 1024 ** 3, log))).toBe(false);
      expect(c.badKeys()).toEqual([k]);
      expect(log.entries.filter((e) => e.level === 'warn').map((e) => e.message)).toEqual(['a registry step cache entry cannot be used: the step is built again']);
    } finally {
      await s.close();
    }
  });

  test('a tag list that is HTML, or repeats itself with a next link forever: pruning is bounded and a broken list is the export\'s warning, not the build\'s error', async () => {
    const repeat = await stub((p) => p.startsWith('/v2/x/y/tags/list')
      ? { status: 200, body: JSON.stringify({ tags: ['step-' + k, 'latest', 'step-nothex'] }), headers: { Link: '</v2/x/y/tags/list?n=1000&last=z>; rel="next"' } }
      : { status: 404, body: '{}' });
    try {
      const c = new RegistryStepCache(new RegistryClient(repeat.addr), 'x/y', new MemoryLogger(), 1024 ** 3);
      expect(await c.list()).toEqual([]);
      // Two pages (the second added nothing new), one manifest GET for the one step tag.
      expect(repeat.hits.filter((h) => h.includes('/tags/list'))).toHaveLength(2);
      expect(repeat.hits.filter((h) => h.includes('/manifests/'))).toEqual([`GET /v2/x/y/manifests/step-${k}`]);
    } finally {
      await repeat.close();
    }
    const html = await stub((p) => p.startsWith('/v2/x/y/tags/list') ? { status: 200, body: '<html>proxy login</html>', headers: { 'Content-Type': 'text/html' } } : { status: 404, body: '{}' });
    try {
      const caches = await RegistryCaches.open({ to: `registry:${html.addr}/x/y`, maxEntryBytes: 1024 ** 3 }, new MemoryLogger());
      const report = await caches!.export([], new StepCache(path.join(work, 'local', 'html'), 1024 ** 3, new MemoryLogger()), 1);
      expect(report.exportWarning).toMatch(/answered the tag list of 127\.0\.0\.1:\d+\/x\/y with something that is not JSON/);
    } finally {
      await html.close();
    }
  });

  test('an entry whose archive holds only its json is not used, and is marked for replacement', async () => {
    const repo = `fbtest/json-only-${process.pid}`;
    const client = new RegistryClient(reg.addr);
    const dir = path.join(work, 'json-only');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, `${k}.json`), JSON.stringify({ sha256: 'x' }));
    await plant(client, repo, k, k, dir, [`${k}.json`]);
    const c = new RegistryStepCache(client, repo, new MemoryLogger(), 1024 ** 3);
    const local = new StepCache(path.join(work, 'local', 'json-only'), 1024 ** 3, new MemoryLogger());
    expect(await c.pull(k, local)).toBe(false);
    expect(await local.present([k])).toEqual([]);
    expect(await local.has(k)).toBe(false);
    expect(c.badKeys()).toEqual([k]);
  });
});
