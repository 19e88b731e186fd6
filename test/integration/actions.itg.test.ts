import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { runCli, tempDir } from '../helpers/cli.js';
import { alive, freePort, importTestKernel, killAll, testKernel, vmmProcessesUnder } from '../helpers/vm.js';
import { startResultsService } from '../helpers/results-service.js';
import { annotations, runAction, runnerFiles, runPost, startAction } from '../helpers/runner.js';
import { factsOf, renderSummary, summaryTables } from '../helpers/summary-render.js';
import { zipEntry } from '../helpers/zip.js';

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
    // A normal end: the record of what the step owned (its build VMs, its work directory) ends empty, and
    // the post step does nothing at all.
    expect(JSON.parse(build.state.owned!)).toEqual([]);
    const buildPost = await runPost('build-rootfs/post/index.js', build.state, env);
    expect({ code: buildPost.code, stdout: buildPost.stdout }).toEqual({ code: 0, stdout: '' });
    const latest = await runCli(['image', 'inspect', 'examples/hello:latest'], { env: { FIREBUILD_HOME: env.FIREBUILD_HOME! } });
    expect(latest.code).toBe(0);
    expect(JSON.parse(latest.stdout)).toMatchObject({ tag: 'examples/hello:latest', metadata: { rootfs: { sha256: build.outputs.sha256 }, config: { labels: { 'org.example.team': 'web' } } } });
    expect(build.outputs).toMatchObject({ tag: 'examples/hello:ci', sha256: expect.stringMatching(/^[0-9a-f]{64}$/), rootfs: expect.stringContaining('rootfs.ext4'), 'metadata-file': expect.stringMatching(/metadata\.json$/) });
    // metadata is JSON, as docker/build-push-action's: the content of metadata-file.
    expect(JSON.parse(build.outputs.metadata!)).toEqual(JSON.parse(fs.readFileSync(build.outputs['metadata-file']!, 'utf8')));
    expect(JSON.parse(build.outputs.metadata!)).toMatchObject({ tag: 'examples/hello:ci', rootfs: { sha256: build.outputs.sha256 } });
    expect(Number(build.outputs.size)).toBeGreaterThan(0);
    // The job summaries as GitHub renders them (CommonMark + GFM): tables, not raw pipes.
    expect(renderSummary(build.summary)).toMatch(/^<h3>firebuild rootfs: examples\/hello:ci<\/h3>/);
    const [built] = summaryTables(build.summary);
    expect(factsOf(built!)).toMatchObject({
      tag: 'examples/hello:ci', builder: 'vm', sha256: build.outputs.sha256, rootfs: build.outputs.rootfs,
      size: expect.stringMatching(/^\d+\.\d MiB( \(\d+\.\d [KM]iB of files\))?$/),
      'build time': expect.stringMatching(/^\d+(\.\d)? s$|^\d+ min \d\d s$/),
      steps: expect.stringMatching(/^\d+ run, \d+ from the cache$/),
    });

    // An auto host port (two runners on one host never collide): the probe names it by its guest port,
    // the chosen mapping is an output, and that port answers.
    const smoke = await runAction('smoke-test/index.js', { tag: 'examples/hello:ci', ports: '127.0.0.1:0:8080', env: 'GREETING=from-ci', 'wait-http': 'http://127.0.0.1:auto:8080/cgi-bin/index.cgi', 'wait-http-body': 'from-ci' }, env);
    expect({ code: smoke.code, errors: annotations(smoke.stdout) }).toEqual({ code: 0, errors: [] });
    // QEMU's user-mode guest address (10.0.2.15) is not reachable from the host: no ip-address.
    expect(smoke.outputs).toMatchObject({ 'vmm-id': expect.stringMatching(/^[a-z0-9]{20}$/), 'ip-address': '', 'serial-log': expect.stringContaining('serial.log') });
    const hostPort = (JSON.parse(smoke.outputs.ports!) as Record<string, string>)['8080/tcp'];
    expect(hostPort).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(hostPort).not.toBe('127.0.0.1:0');
    const url = `http://${hostPort}/cgi-bin/index.cgi`;
    // The boot (VMM start to init) and readiness (VMM start to the probe passing) figures.
    const [bootMs, readyMs] = [Number(smoke.outputs['boot-ms']), Number(smoke.outputs['ready-ms'])];
    expect(bootMs).toBeGreaterThan(0);
    expect(readyMs).toBeGreaterThanOrEqual(bootMs);
    // The probe's tries and time, in a folded group of its own.
    expect(smoke.stdout).toMatch(new RegExp(`::group::Probes\n(.*\n)*?passed: GET ${url.replace(/[.?]/g, '\\$&')}: \\d+ tr(y|ies) in \\d+ ms(.*\n)*?::endgroup::`));
    expect(smoke.state['vmm-id']).toBe(smoke.outputs['vmm-id']);
    const [vmFacts, probes] = summaryTables(smoke.summary);
    expect(factsOf(vmFacts!)).toMatchObject({ result: 'passed: 1 probe', VM: smoke.outputs['vmm-id'], ports: `${hostPort} -> 8080/tcp`, 'boot (VMM start to init)': expect.stringMatching(/^\d+(\.\d)? m?s$/) });
    expect(probes!.rows[0]).toEqual(['probe', 'result', 'tries and time']);
    expect(probes!.rows[1]).toEqual([`GET ${url}`, 'passed', expect.stringMatching(/^\d+ tr(y|ies), \d+(\.\d)? m?s$/)]);
    expect(await (await fetch(url)).text()).toMatch(/^from-ci from /);

    const registryRef = `127.0.0.1:5000/fbtest/actions-${process.pid}:1`;
    const pub = await runAction('publish/index.js', { tag: 'examples/hello:ci', 'oci-ref': registryRef }, env);
    expect({ code: pub.code, errors: annotations(pub.stdout) }).toEqual({ code: 0, errors: [] });
    expect(pub.outputs).toMatchObject({ digest: expect.stringMatching(/^sha256:/), sha256: build.outputs.sha256 });
    const [published] = summaryTables(pub.summary);
    expect(factsOf(published!)).toMatchObject({ 'OCI artifact': registryRef, digest: pub.outputs.digest, 'rootfs sha256': build.outputs.sha256, 'compressed size': expect.stringMatching(/^\d+\.\d [KM]iB$/) });
    // The pull command, by digest, as a code block a reader copies.
    expect(renderSummary(pub.summary)).toContain(`<pre lang="sh"><code>firebuild image pull ${pub.outputs.ref}</code></pre>`);
    expect(pub.outputs.ref).toBe(`127.0.0.1:5000/fbtest/actions-${process.pid}@${pub.outputs.digest}`);

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
      expect(uploaded.map((a) => a.name)).toEqual(['rootfs.ext4.zst', 'metadata.json', 'sbom.spdx.json', 'SHA256SUMS']);
      const sums = Object.fromEntries(uploaded[3]!.body.toString().trim().split('\n').map((l) => l.split('  ').reverse()));
      for (const a of uploaded.slice(0, 3)) expect(sums[a.name]).toBe(createHash('sha256').update(a.body).digest('hex'));
      expect(JSON.parse(uploaded[2]!.body.toString())).toMatchObject({ spdxVersion: 'SPDX-2.3', name: 'examples/hello:ci' });
      const stored = JSON.parse((await runCli(['image', 'inspect', 'examples/hello:ci'], { env })).stdout) as { metadata: { rootfs: { sha256: string } } };
      expect(sums['rootfs.ext4']).toBe(stored.metadata.rootfs.sha256);
      expect(reqs.every((q) => q.auth === 'token ghs_testtoken')).toBe(true);
      expect(reqs.filter((q) => q.url.startsWith('/uploads/')).map((q) => q.type)).toEqual(Array(4).fill('application/octet-stream'));
      const [facts] = summaryTables(r.summary);
      expect(facts!.rows.filter(([k]) => k === 'release' || k === 'asset')).toEqual([['release', 'v1'], ['asset', 'rootfs.ext4.zst'], ['asset', 'metadata.json'], ['asset', 'sbom.spdx.json'], ['asset', 'SHA256SUMS']]);
      expect(facts!.html).toMatch(/<a href="http:\/\/127\.0\.0\.1:\d+\/acme\/app\/releases\/tag\/v1">v1<\/a>/);

      const again = await runAction('publish/index.js', inputs, api);
      expect(again.code).toBe(1);
      expect(annotations(again.stdout)).toEqual(['::error::release v1 already has rootfs.ext4.zst, metadata.json, sbom.spdx.json, SHA256SUMS: set overwrite: true to replace them']);
      // summary: false (the opt-out) writes no job summary.
      const replaced = await runAction('publish/index.js', { ...inputs, overwrite: 'true', summary: 'false' }, api);
      expect(replaced.code).toBe(0);
      expect(replaced.summary).toBe('');
      expect(reqs.filter((q) => q.method === 'DELETE')).toHaveLength(4);
      expect([...assets.values()].map((a) => a.name)).toEqual(['rootfs.ext4.zst', 'metadata.json', 'sbom.spdx.json', 'SHA256SUMS']);
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
      expect(a!.body.subarray(0, 2).toString()).toBe('PK'); // a zip holding the four files
      for (const f of ['rootfs.ext4.zst', 'metadata.json', 'sbom.spdx.json', 'SHA256SUMS']) expect([f, a!.body.includes(Buffer.from(f))]).toEqual([f, true]);
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

  test('a boot failure (the kernel panics: its init does not exist) is one annotation naming the panic line; the serial log is folded into the log and uploaded; no VM is left', async () => {
    // The cheapest reliable panic: the suite kernel with an init= that wins over firebuild's (the last one counts).
    expect((await runCli(['kernel', 'import', '--id', 'panics', '--cmdline', 'init=/no-such-init', testKernel()], { env })).code).toBe(0);
    const svc = await startResultsService();
    try {
      const r = await runAction('smoke-test/index.js', { tag: 'examples/hello:ci', 'vmlinux-id': 'panics', 'boot-timeout': '600' }, { ...env, ...svc.env });
      expect(r.code).toBe(1);
      const panic = 'Kernel panic - not syncing: Requested init /no-such-init failed (error -2).';
      // One annotation, the panic line itself (not the console's last line: the panic's call trace ends it).
      expect(annotations(r.stdout)).toEqual([`::error::the VM's kernel panicked before its init started: ${panic}`]);
      const id = r.state['vmm-id']!;
      expect(id).toMatch(/^[a-z0-9]{20}$/);
      // Folded into the step's log: the whole console, the panic line in it.
      expect(r.stdout).toMatch(new RegExp(`::group::Serial log of VM ${id}\n[^]*Kernel panic - not syncing: Requested init /no-such-init failed[^]*\n::endgroup::`));
      // Uploaded: the artifact holds the serial log (a zip: read its one entry back).
      const a = svc.artifacts.get(`firebuild-serial-${id}`);
      expect(a?.finalized).toBeDefined();
      expect(zipEntry(a!.body, `firebuild-serial-${id}.log`)).toContain(panic);
      // Kept for a later `if: failure()` step too.
      expect(fs.readFileSync(r.outputs['serial-log']!, 'utf8')).toContain(panic);
      // Nothing left: no run cache entry, no VMM process.
      expect(fs.readdirSync(runCache())).toEqual([]);
      expect(vmmProcessesUnder(work)).toEqual([]);
      expect((await runPost('smoke-test/post/index.js', r.state, env)).code).toBe(0);
    } finally {
      svc.close();
      await runCli(['kernel', 'rm', 'panics'], { env });
    }
  });
});
