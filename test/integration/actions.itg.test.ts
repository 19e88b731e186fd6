import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { runCli, tempDir } from '../helpers/cli.js';
import { alive, freePort, importTestKernel, killAll } from '../helpers/vm.js';
import { startResultsService } from '../helpers/results-service.js';
import { annotations, runAction, runnerFiles, runPost, startAction } from '../helpers/runner.js';

/**
 * The bundled actions (dist/) run as the runner runs them — INPUT_* variables, real GITHUB_OUTPUT,
 * GITHUB_STEP_SUMMARY, GITHUB_STATE and RUNNER_TEMP files, saved state passed to the post step as
 * STATE_* — against the real Docker engine, QEMU (TCG) and the registry on 127.0.0.1:5000.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const runCache = (): string => path.join(work, 'home', 'run');
beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  expect(await importTestKernel(env)).toBe(0);
});
afterAll(async () => {
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('the bundled actions, run as the runner runs them', () => {
  test('build-rootfs, then smoke-test (and its post step), then publish: the README example from source to a probed VM to an OCI artifact that pulls back identical', async () => {
    // docker/build-push-action's names: file, a tags list (built under the first, stored under the others), labels.
    const build = await runAction('build-rootfs/index.js', { file: path.resolve('examples/hello/Dockerfile'), tags: 'examples/hello:ci\nexamples/hello:latest', labels: 'org.example.team=web', 'free-space': '32M' }, env);
    expect({ code: build.code, errors: annotations(build.stdout) }).toEqual({ code: 0, errors: [] });
    expect(build.outputs.tags).toBe('examples/hello:ci\nexamples/hello:latest');
    const latest = await runCli(['image', 'inspect', 'examples/hello:latest'], { env: { FIREBUILD_HOME: env.FIREBUILD_HOME! } });
    expect(latest.code).toBe(0);
    expect(JSON.parse(latest.stdout)).toMatchObject({ tag: 'examples/hello:latest', metadata: { rootfs: { sha256: build.outputs.sha256 }, config: { labels: { 'org.example.team': 'web' } } } });
    expect(build.outputs).toMatchObject({ tag: 'examples/hello:ci', sha256: expect.stringMatching(/^[0-9a-f]{64}$/), rootfs: expect.stringContaining('rootfs.ext4'), metadata: expect.stringContaining('metadata.json') });
    expect(Number(build.outputs.size)).toBeGreaterThan(0);
    expect(build.summary).toContain('firebuild rootfs: examples/hello:ci');

    const port = await freePort();
    const url = `http://127.0.0.1:${port}/cgi-bin/index.cgi`;
    const smoke = await runAction('smoke-test/index.js', { tag: 'examples/hello:ci', ports: `127.0.0.1:${port}:8080`, env: 'GREETING=from-ci', 'wait-http': url, 'wait-http-body': 'from-ci' }, env);
    expect({ code: smoke.code, errors: annotations(smoke.stdout) }).toEqual({ code: 0, errors: [] });
    expect(smoke.outputs).toMatchObject({ 'vmm-id': expect.stringMatching(/^[a-z0-9]{20}$/), 'ip-address': '10.0.2.15', 'serial-log': expect.stringContaining('serial.log') });
    expect(smoke.state['vmm-id']).toBe(smoke.outputs['vmm-id']);
    expect(smoke.summary).toContain(`GET ${url}`);
    expect(await (await fetch(url)).text()).toMatch(/^from-ci from /);

    const registryRef = `127.0.0.1:5000/fbtest/actions-${process.pid}:1`;
    const pub = await runAction('publish/index.js', { tag: 'examples/hello:ci', 'oci-ref': registryRef }, env);
    expect({ code: pub.code, errors: annotations(pub.stdout) }).toEqual({ code: 0, errors: [] });
    expect(pub.outputs).toMatchObject({ digest: expect.stringMatching(/^sha256:/), sha256: build.outputs.sha256 });

    // The post step tears the VM down.
    const post = await runPost('smoke-test/post/index.js', smoke.state, env);
    expect(post.code).toBe(0);
    expect(fs.readdirSync(runCache())).toEqual([]);

    // The artifact pulls into an empty store with the same sha256.
    const empty = { FIREBUILD_HOME: path.join(work, 'empty') };
    const pulled = await runCli(['image', 'pull', registryRef], { env: empty });
    expect(pulled.code).toBe(0);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ tag: 'examples/hello:ci', sha256: build.outputs.sha256 });
  });

  test('publish to a GitHub release: packaged assets with SHA256SUMS; a name collision is refused, overwrite replaces (a local server stands in for the GitHub API)', async () => {
    type Req = { method: string; url: string; auth?: string; type?: string; body: Buffer };
    const reqs: Req[] = [];
    const assets = new Map<number, { id: number; name: string; body: Buffer }>();
    let release: Record<string, unknown> | undefined;
    let nextId = 10;
    const srv = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        reqs.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, type: req.headers['content-type'], body });
        const send = (code: number, j?: unknown): void => { res.writeHead(code, { 'content-type': 'application/json' }); res.end(j === undefined ? '' : JSON.stringify(j)); };
        const base = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
        const url = new URL(req.url!, base);
        if (req.method === 'GET' && url.pathname === '/repos/acme/app/releases/tags/v1') return release ? send(200, { ...release, assets: [...assets.values()].map((a) => ({ id: a.id, name: a.name })) }) : send(404, { message: 'Not Found' });
        if (req.method === 'POST' && url.pathname === '/repos/acme/app/releases') {
          release = { id: 1, tag_name: JSON.parse(body.toString()).tag_name, html_url: `${base}/acme/app/releases/tag/v1`, upload_url: `${base}/uploads/repos/acme/app/releases/1/assets{?name,label}`, assets: [] };
          return send(201, release);
        }
        if (req.method === 'POST' && url.pathname === '/uploads/repos/acme/app/releases/1/assets') {
          const a = { id: nextId++, name: url.searchParams.get('name')!, body };
          assets.set(a.id, a);
          return send(201, { id: a.id, name: a.name, size: body.length, browser_download_url: `${base}/acme/app/releases/download/v1/${a.name}` });
        }
        const del = /^\/repos\/acme\/app\/releases\/assets\/(\d+)$/.exec(url.pathname);
        if (req.method === 'DELETE' && del) { assets.delete(Number(del[1])); return send(204); }
        send(404, { message: `not mocked: ${req.method} ${url.pathname}` });
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    try {
      const api = { ...env, GITHUB_API_URL: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`, GITHUB_REPOSITORY: 'acme/app' };
      const inputs = { tag: 'examples/hello:ci', targets: 'release', 'github-token': 'ghs_testtoken', 'release-tag': 'v1' };
      const r = await runAction('publish/index.js', inputs, api);
      expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
      expect(r.outputs['release-url']).toMatch(/\/acme\/app\/releases\/tag\/v1$/);
      const uploaded = [...assets.values()];
      expect(uploaded.map((a) => a.name)).toEqual(['rootfs.ext4.zst', 'metadata.json', 'SHA256SUMS']);
      const sums = Object.fromEntries(uploaded[2]!.body.toString().trim().split('\n').map((l) => l.split('  ').reverse()));
      for (const a of uploaded.slice(0, 2)) expect(sums[a.name]).toBe(createHash('sha256').update(a.body).digest('hex'));
      const stored = JSON.parse((await runCli(['image', 'inspect', 'examples/hello:ci'], { env })).stdout) as { metadata: { rootfs: { sha256: string } } };
      expect(sums['rootfs.ext4']).toBe(stored.metadata.rootfs.sha256);
      expect(reqs.every((q) => q.auth === 'token ghs_testtoken')).toBe(true);
      expect(reqs.filter((q) => q.url.startsWith('/uploads/')).map((q) => q.type)).toEqual(['application/octet-stream', 'application/octet-stream', 'application/octet-stream']);

      const again = await runAction('publish/index.js', inputs, api);
      expect(again.code).toBe(1);
      expect(annotations(again.stdout)).toEqual(['::error::release v1 already has rootfs.ext4.zst, metadata.json, SHA256SUMS: set overwrite: true to replace them']);
      const replaced = await runAction('publish/index.js', { ...inputs, overwrite: 'true' }, api);
      expect(replaced.code).toBe(0);
      expect(reqs.filter((q) => q.method === 'DELETE')).toHaveLength(3);
      expect([...assets.values()].map((a) => a.name)).toEqual(['rootfs.ext4.zst', 'metadata.json', 'SHA256SUMS']);
    } finally {
      srv.close();
    }
  });

  test('publish as an Actions artifact: the packaged files reach the results service; the same name twice is one annotation (a local stand-in for the service)', async () => {
    const svc = await startResultsService();
    try {
      const e = { ...env, ...svc.env };
      const r = await runAction('publish/index.js', { tag: 'examples/hello:ci', targets: 'artifact' }, e);
      expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
      const a = svc.artifacts.get('firebuild-examples-hello-ci');
      expect(a?.finalized?.hash).toBe(`sha256:${createHash('sha256').update(a!.body).digest('hex')}`);
      expect(Number(a?.finalized?.size)).toBe(a!.body.length);
      expect(a!.body.subarray(0, 2).toString()).toBe('PK'); // a zip holding the three files
      for (const f of ['rootfs.ext4.zst', 'metadata.json', 'SHA256SUMS']) expect([f, a!.body.includes(Buffer.from(f))]).toEqual([f, true]);
      expect(r.outputs['artifact-id']).toBe('7');
      const again = await runAction('publish/index.js', { tag: 'examples/hello:ci', targets: 'artifact' }, e);
      expect(again.code).toBe(1);
      expect(annotations(again.stdout)).toEqual(['::error::an artifact named firebuild-examples-hello-ci already exists in this run: choose another artifact-name']);
    } finally {
      svc.close();
    }
  });

  test('the post step leaves no VM behind after the main step was killed mid-boot', async () => {
    const files = await runnerFiles();
    const main = startAction('smoke-test/index.js', { tag: 'examples/hello:ci', network: 'none', timeout: '120' }, files, env);
    // Kill the main step as a cancelled job would, once it has saved the VM's id (however long that takes
    // on a busy machine: no count of tries, only the step's own end).
    while (!fs.readFileSync(files.state, 'utf8').includes('vmm-id') && main.child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1500));
    main.child.kill('SIGKILL');
    const killed = await main.done;
    if (!killed.state['vmm-id']) throw new Error(`the main step saved no VM id: ${killed.stdout}`);
    expect(killed.state['vmm-id']).toMatch(/^[a-z0-9]{20}$/);
    const state = JSON.parse(fs.readFileSync(path.join(runCache(), killed.state['vmm-id']!, 'state.json'), 'utf8')) as { pid: number };
    const post = await runPost('smoke-test/post/index.js', killed.state, env);
    expect(post.code).toBe(0);
    expect(annotations(post.stdout)).toEqual([]); // a warning (forced stop of a half-booted VM) is fine, an error is not
    expect(state.pid === 0 || !alive(state.pid)).toBe(true);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });

  test.each([
    ['missing required input', 'build-rootfs/index.js', { dockerfile: 'examples/hello/Dockerfile' }, /^::error::input 'tag' \(or 'tags'\) is required/],
    ['unknown engine', 'build-rootfs/index.js', { dockerfile: 'examples/hello/Dockerfile', tag: 'a/b:1', engine: 'kaniko' }, /^::error::input 'engine' is 'kaniko': use one of docker/],
    ['unknown accel', 'smoke-test/index.js', { tag: 'examples/hello:ci', accel: 'hvf' }, /^::error::input 'accel' is 'hvf': use one of auto, kvm, tcg/],
    ['a failing Dockerfile step, annotated at its file and line', 'build-rootfs/index.js', { dockerfile: 'FROM debian:bookworm-slim\nRUN exit 3\n', tag: 'a/fail:1' }, /^::error file=.*,line=2::.*exit code 3/],
    ['registry auth failure', 'publish/index.js', { tag: 'examples/hello:ci', 'oci-ref': '127.0.0.1:9/x/y:1' }, /^::error::cannot reach registry 127\.0\.0\.1:9/],
  ])('bad input: %s is one annotation and a failed step', async (_n, entry, inputs, want) => {
    const r = await runAction(entry, inputs as Record<string, string>, env);
    expect(r.code).toBe(1);
    expect(annotations(r.stdout)).toEqual([expect.stringMatching(want)]);
    expect(fs.existsSync(runCache()) ? fs.readdirSync(runCache()) : []).toEqual([]);
  });

  test('a probe that never passes fails with the console tail, removes the VM, keeps its serial log and uploads it as an artifact; the post step has nothing left to remove', async () => {
    const port = await freePort();
    const svc = await startResultsService();
    // The probes' 15 s start when the VM is up; the boot (TCG, maybe on a busy machine) has its own deadline.
    const r = await runAction('smoke-test/index.js', { tag: 'examples/hello:ci', ports: `127.0.0.1:${port}:8080`, 'wait-http': `http://127.0.0.1:${port}/nothing-here`, timeout: '15', 'boot-timeout': '600' }, { ...env, ...svc.env });
    svc.close();
    expect(r.code).toBe(1);
    expect(annotations(r.stdout)).toEqual([expect.stringMatching(/^::error::probe GET http:\/\/127\.0\.0\.1:\d+\/nothing-here failed within 15 s \(status 404, expected 200\): console tail: /)]);
    const log = svc.artifacts.get(`firebuild-serial-${r.state['vmm-id']}`);
    expect(log?.finalized).toBeDefined();
    expect(log!.body.includes(Buffer.from(`firebuild-serial-${r.state['vmm-id']}.log`))).toBe(true);
    // The failed VM is gone, its serial log kept for a later `if: failure()` step (the output names the copy).
    expect(r.outputs['serial-log']).toMatch(new RegExp(`firebuild-serial-${r.state['vmm-id']}\\.log$`));
    expect(fs.readFileSync(r.outputs['serial-log']!, 'utf8')).toMatch(/FIREBUILD-START/);
    expect(fs.readdirSync(runCache())).toEqual([]);
    expect((await runPost('smoke-test/post/index.js', r.state, env)).code).toBe(0);
    expect(fs.readdirSync(runCache())).toEqual([]);
  });
});
