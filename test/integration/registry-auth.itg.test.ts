import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { RegistryClient } from '../../src/oci/registry.js';
import { guardedFetch } from '../../src/util/pinned-request.js';
import { expectJsonResult, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { annotations, runAction } from '../helpers/runner.js';
import { startRegistry, type Registry } from '../helpers/servers.js';
import { DOCKER } from '../helpers/trees.js';
import { freePort } from '../helpers/vm.js';

/**
 * The vm engine's FROM pulls with the credentials Docker would use, and through the proxy Docker would
 * use. Real parts: docker-registry with htpasswd auth started here on 127.0.0.1, the same storage served
 * without auth on a non-loopback address of this host (loopback is never proxied, as in Docker), real
 * credential helpers (scripts on a PATH of this test speaking the docker-credential-helpers protocol) and
 * a plain-http forward proxy that counts what goes through it. No RUN: nothing boots; each build has a
 * FIREBUILD_HOME of its own, so every pull really asks the registry.
 */
const bcrypt = createRequire(import.meta.url)('bcryptjs') as { hashSync(pw: string, rounds: number): string };
const LOCAL = process.env.FIREBUILD_REGISTRY_ADDR ?? '127.0.0.1:5000';
const REPO_NAME = `fbauth-${process.pid}/base`;
const SECRET = `s3cret-${process.pid}`;
let work: string;
let bin: string;
let helperLog: string;
let authHost: string;
let lanHost: string;
let closed: string;
const registries: Registry[] = [];
let proxy: http.Server;
let proxyPort = 0;
const proxied: string[] = [];
let n = 0;

const HELPERS: Record<string, string> = {
  // Answers for the auth registry with the secret FBTEST_SECRET names; records its argv and stdin.
  fbtest: `#!/bin/sh\nurl=$(cat)\nprintf '%s %s\\n' "$1" "$url" >> "$FBTEST_HELPER_LOG"\nprintf '{"ServerURL":"%s","Username":"ci","Secret":"%s"}' "$url" "$FBTEST_SECRET"\n`,
  fbfail: `#!/bin/sh\ncat >/dev/null\necho "the keychain is locked (fbtest)"\nexit 1\n`,
  fbnone: `#!/bin/sh\ncat >/dev/null\necho "credentials not found in native keychain"\nexit 1\n`,
  fbslow: `#!/bin/sh\ncat >/dev/null\nsleep 60\n`,
  // An identity token, as `docker login` to e.g. Azure leaves one: the user `<token>`.
  fbtoken: `#!/bin/sh\ncat >/dev/null\nprintf '{"ServerURL":"x","Username":"<token>","Secret":"%s"}' "$FBTEST_SECRET"\n`,
  fbjunk: `#!/bin/sh\ncat >/dev/null\necho "Username=ci Secret=$FBTEST_SECRET"\n`,
};

function nonLoopbackIPv4(): string {
  for (const addrs of Object.values(os.networkInterfaces())) for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  throw new Error('this host has no non-loopback IPv4 address: the proxy test needs one (loopback is never proxied)');
}

/** The local registry's copy of the test base image into `to` (one platform: what a FROM pulls). */
async function copyImage(from: RegistryClient, fromRepo: string, to: RegistryClient): Promise<void> {
  const accept = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];
  let m = await from.getManifest(fromRepo, '1', accept);
  let doc = JSON.parse(m.body.toString()) as { manifests?: { digest: string; platform?: { architecture?: string } }[]; config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
  if (doc.manifests) {
    m = await from.getManifest(fromRepo, doc.manifests.find((d) => d.platform?.architecture === 'amd64')!.digest, accept);
    doc = JSON.parse(m.body.toString());
  }
  for (const b of [doc.config, ...doc.layers]) {
    const f = path.join(work, 'blob');
    await from.getBlob(fromRepo, b.digest, b.size, f);
    await to.pushBlob(REPO_NAME, { file: f }, b.digest, b.size);
    fs.rmSync(f);
  }
  await to.putManifest(REPO_NAME, '1', m.body, m.mediaType);
}

function dockerConfig(cfg: object): string {
  const dir = path.join(work, `docker-${n++}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

/** A vm-engine build of `FROM <from>` in a store, TMPDIR and Docker config of its own (debug log: the secret must not show even there). */
async function build(from: string, more: NodeJS.ProcessEnv, extra: string[] = []): Promise<CliResult & { home: string; tmp: string }> {
  const dir = path.join(work, `build-${n++}`);
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(tmp, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${from}\nENV AUTH_TEST=1\n`);
  const home = path.join(dir, 'home');
  const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/auth:1', ...extra], {
    env: {
      FIREBUILD_HOME: home, TMPDIR: tmp, FIREBUILD_LOG_LEVEL: 'debug', FIREBUILD_DOCKER_IO_REGISTRY: closed, FIREBUILD_REGISTRY_MIRRORS: '',
      PATH: `${bin}:${process.env.PATH}`, FBTEST_HELPER_LOG: helperLog, FBTEST_SECRET: SECRET,
      HTTP_PROXY: '', http_proxy: '', HTTPS_PROXY: '', https_proxy: '', NO_PROXY: '', no_proxy: '',
      ...more,
    },
  });
  return { ...r, home, tmp };
}

/** A refused build: exit 2, one error line, no secret anywhere in the output, nothing stored, no temp dir left. */
async function expectRefused(r: CliResult & { home: string; tmp: string }, want: RegExp): Promise<void> {
  const errors = r.stderr.split('\n').filter((l) => /^error:|Dockerfile:\d+:/.test(l));
  expect({ code: r.code, errors }).toEqual({ code: 2, errors: [expect.stringMatching(want)] });
  expect(`${r.stdout}${r.stderr}`).not.toContain(SECRET);
  expect(fs.readdirSync(r.tmp)).toEqual([]);
  const ls = await runCli(['image', 'ls', '--json'], { env: { FIREBUILD_HOME: r.home } });
  expect(JSON.parse(ls.stdout || '[]')).toEqual([]);
}

beforeAll(async () => {
  work = await tempDir('firebuild-auth-');
  bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  for (const [name, text] of Object.entries(HELPERS)) fs.writeFileSync(path.join(bin, `docker-credential-${name}`), text, { mode: 0o755 });
  helperLog = path.join(work, 'helper.log');
  fs.writeFileSync(path.join(work, 'htpasswd'), `ci:${bcrypt.hashSync(SECRET, 5)}\n`);
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  closed = `127.0.0.1:${(probe.address() as net.AddressInfo).port}`;
  await new Promise((resolve) => probe.close(resolve));

  // The registry with htpasswd auth on loopback, and its storage served without auth on a LAN address.
  const storage = path.join(work, 'storage');
  authHost = `127.0.0.1:${await freePort()}`;
  registries.push(await startRegistry(authHost, storage, { htpasswd: path.join(work, 'htpasswd'), confDir: work }));
  const pushed = `${LOCAL}/fbauth-${process.pid}/src:1`;
  execFileSync(DOCKER, ['tag', process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim', pushed], { stdio: 'pipe' });
  execFileSync(DOCKER, ['push', pushed], { stdio: 'pipe' });
  execFileSync(DOCKER, ['rmi', pushed], { stdio: 'pipe' });
  await copyImage(new RegistryClient(LOCAL), `fbauth-${process.pid}/src`, new RegistryClient(authHost, { username: 'ci', password: SECRET }));
  lanHost = `${nonLoopbackIPv4()}:${await freePort()}`;
  registries.push(await startRegistry(lanHost, storage, { confDir: work }));

  // A plain-http forward proxy: absolute-form requests are forwarded and counted; CONNECT is refused.
  proxy = http.createServer((req, res) => {
    proxied.push(`${req.method} ${req.url}`);
    const up = http.request(req.url!, { method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  proxy.on('connect', (req, socket) => {
    proxied.push(`CONNECT ${req.url}`);
    socket.end('HTTP/1.1 405 Method Not Allowed\r\n\r\n');
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyPort = (proxy.address() as net.AddressInfo).port;
}, 5 * 60_000);

afterAll(async () => {
  for (const r of registries) await r.stop();
  proxy?.closeAllConnections();
  await new Promise((resolve) => (proxy ? proxy.close(resolve) : resolve(undefined)));
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('FROM from a registry that wants a password: Docker config helpers', () => {
  test('credsStore: the helper is run as Docker runs it (get, the registry on stdin) and its credentials pull the base; the auths entry is not used', async () => {
    fs.writeFileSync(helperLog, '');
    // The auths entry holds wrong credentials: with a credsStore, Docker ignores them, and so must firebuild.
    const cfg = dockerConfig({ credsStore: 'fbtest', auths: { [authHost]: { auth: Buffer.from('ci:wrong').toString('base64') } } });
    const r = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: cfg });
    expectJsonResult(r);
    expect(fs.readFileSync(helperLog, 'utf8').split('\n')).toContain(`get ${authHost}`);
    expect(`${r.stdout}${r.stderr}`).not.toContain(SECRET);
    const meta = JSON.parse(fs.readFileSync((JSON.parse(r.stdout) as { metadata: string }).metadata, 'utf8')) as { parents: string[]; config: { env: string[] } };
    expect(meta.parents).toEqual([expect.stringMatching(new RegExp(`^${authHost}/${REPO_NAME}:1@sha256:[a-f0-9]{64}$`))]);
    expect(meta.config.env).toContain('AUTH_TEST=1');
  }, 5 * 60_000);

  test('credHelpers for one host beats credsStore (a store that is not even installed is never run)', async () => {
    const r = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'not-installed', credHelpers: { [authHost]: 'fbtest' } }) });
    expectJsonResult(r);
  }, 5 * 60_000);

  test('a helper that fails: one line naming the helper and the registry, nothing left behind', async () => {
    const cfg = dockerConfig({ credsStore: 'fbfail' });
    const r = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: cfg });
    await expectRefused(r, new RegExp(`the credential helper docker-credential-fbfail \\(credsStore in ${cfg}/config\\.json\\) failed for registry ${authHost} \\(exit 1\\): the keychain is locked \\(fbtest\\)$`));
  }, 2 * 60_000);

  test('a helper that hangs is killed at the timeout; one that is not installed, or answers junk, is one line too', async () => {
    const slow = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'fbslow' }), FIREBUILD_CREDENTIAL_HELPER_TIMEOUT: '1' });
    await expectRefused(slow, new RegExp(`docker-credential-fbslow \\(credsStore in .*\\) gave no answer within 1 s \\(FIREBUILD_CREDENTIAL_HELPER_TIMEOUT allows longer\\), asked for registry ${authHost}: killed it$`));
    const missing = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credHelpers: { [authHost]: 'not-installed' } }) });
    await expectRefused(missing, new RegExp(`the credential helper docker-credential-not-installed \\(credHelpers\\["${authHost}"\\] in .*\\) is needed for registry ${authHost} but docker-credential-not-installed is not on PATH`));
    // The junk holds the secret: the error must not repeat it.
    const junk = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'fbjunk' }) });
    await expectRefused(junk, /docker-credential-fbjunk .* answered for registry .* with something other than \{"ServerURL","Username","Secret"\} JSON/);
  }, 2 * 60_000);

  test('wrong credentials from the helper: one line (the registry\'s 401), naming where they came from', async () => {
    const r = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'fbtest' }), FBTEST_SECRET: `wrong-${SECRET}` });
    await expectRefused(r, new RegExp(`registry ${authHost} refused the credentials .*\\(from docker-credential-fbtest \\(credsStore in .*\\)\\): check them, or docker login ${authHost} again$`));
    expect(`${r.stdout}${r.stderr}`).not.toContain(`wrong-${SECRET}`);
  }, 2 * 60_000);

  test('"credentials not found" from the helper means anonymous: the registry\'s refusal is the one line', async () => {
    const r = await build(`${authHost}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'fbnone' }) });
    await expectRefused(r, new RegExp(`registry ${authHost} needs credentials: pass --username and --password-stdin, or docker login ${authHost}$`));
  }, 2 * 60_000);

  test('an identity token (the helper\'s <token> user) is traded at the token service as an OAuth2 refresh token, as Docker does', async () => {
    // A registry with a token service: every /v2/ request needs the access token the service gives for
    // the refresh token; authorized requests are served by the local registry.
    const access = `access-${process.pid}`;
    const asked: string[] = [];
    const front = http.createServer((req, res) => {
      if (req.url === '/token') {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          const f = new URLSearchParams(body);
          asked.push(`${req.method} grant_type=${f.get('grant_type')} service=${f.get('service')} scope=${f.get('scope')}`);
          if (req.method === 'POST' && f.get('grant_type') === 'refresh_token' && f.get('refresh_token') === SECRET) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: access }));
          else res.writeHead(401).end();
        });
        return;
      }
      if (req.headers.authorization !== `Bearer ${access}`) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="fbtest"` }).end();
        return;
      }
      const up = http.request(`http://${LOCAL}${req.url}`, { method: req.method, headers: { accept: req.headers.accept ?? '*/*' } }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end();
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(front.address() as net.AddressInfo).port}`;
    try {
      const r = await build(`${host}/fbauth-${process.pid}/src:1`, { DOCKER_CONFIG: dockerConfig({ credHelpers: { [host]: 'fbtoken' } }) });
      expectJsonResult(r);
      expect(asked[0]).toBe(`POST grant_type=refresh_token service=fbtest scope=repository:fbauth-${process.pid}/src:pull`);
      expect(`${r.stdout}${r.stderr}`).not.toContain(SECRET);
      // A wrong token: the token service's refusal is the one line.
      const wrong = await build(`${host}/fbauth-${process.pid}/src:1`, { DOCKER_CONFIG: dockerConfig({ credHelpers: { [host]: 'fbtoken' } }), FBTEST_SECRET: 'not-the-token' });
      await expectRefused(wrong, new RegExp(`registry ${host} refused the credentials \\(token service answered 401\\) \\(from docker-credential-fbtoken`));
    } finally {
      front.closeAllConnections();
      await new Promise((resolve) => front.close(resolve));
    }
  }, 5 * 60_000);

  test('an unreachable registry: one line, nothing left behind', async () => {
    const r = await build(`${closed}/${REPO_NAME}:1`, { DOCKER_CONFIG: dockerConfig({ credsStore: 'fbtest' }) });
    await expectRefused(r, new RegExp(`at ${closed}: unreachable \\([^)]*ECONNREFUSED`));
  }, 2 * 60_000);

  test('image pull asks the same helper: its failure is one line before anything is fetched', async () => {
    const cfg = dockerConfig({ credsStore: 'fbfail' });
    const r = await runCli(['image', 'pull', `${authHost}/${REPO_NAME}:1`], { env: { FIREBUILD_HOME: path.join(work, 'pull-home'), DOCKER_CONFIG: cfg, PATH: `${bin}:${process.env.PATH}` } });
    expect({ code: r.code, errors: r.stderr.split('\n').filter((l) => l.startsWith('error:')) }).toEqual({ code: 2, errors: [`error: the credential helper docker-credential-fbfail (credsStore in ${cfg}/config.json) failed for registry ${authHost} (exit 1): the keychain is locked (fbtest)`] });
  });
});

describe('HTTP_PROXY / NO_PROXY', () => {
  const mirror = (): string[] => ['--registry-mirror', `http://${lanHost}`];

  test('with HTTP_PROXY the pull from an http registry goes through the proxy; with NO_PROXY covering the host it does not', async () => {
    proxied.length = 0;
    const via = await build(`${REPO_NAME}:1`, { HTTP_PROXY: `http://127.0.0.1:${proxyPort}` }, mirror());
    expectJsonResult(via);
    // The manifest and every blob came through it, as absolute-form requests (no CONNECT for http).
    expect(proxied).toContain(`GET http://${lanHost}/v2/${REPO_NAME}/manifests/1`);
    expect(proxied.filter((p) => p.startsWith(`GET http://${lanHost}/v2/${REPO_NAME}/blobs/sha256:`)).length).toBeGreaterThanOrEqual(2);
    expect(proxied.filter((p) => !p.startsWith(`GET http://${lanHost}/`))).toEqual([]);

    proxied.length = 0;
    const host = lanHost.split(':')[0]!;
    const direct = await build(`${REPO_NAME}:1`, { http_proxy: `http://127.0.0.1:${proxyPort}`, no_proxy: `example.com,${host}` }, mirror());
    expectJsonResult(direct);
    expect(proxied).toEqual([]);
  }, 5 * 60_000);

  test('a download whose every hop is checked (ADD URL) goes through the proxy too: the guard still sees each hop, redirects are followed by hand', async () => {
    const files = http.createServer((req, res) => {
      if (req.url === '/a') res.writeHead(302, { location: '/b' }).end();
      else res.writeHead(200, { 'content-type': 'text/plain' }).end(`file ${req.headers['accept-encoding']}`);
    });
    await new Promise<void>((resolve) => files.listen(0, lanHost.split(':')[0], resolve));
    const origin = `http://${lanHost.split(':')[0]}:${(files.address() as net.AddressInfo).port}`;
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY };
    try {
      const hops: string[] = [];
      // A guard that lets everything through but records what it was asked (the host-only guard would refuse this host's own address).
      const guard = { check: async (u: URL) => void hops.push(u.toString()) };
      proxied.length = 0;
      process.env.HTTP_PROXY = `http://127.0.0.1:${proxyPort}`;
      delete process.env.NO_PROXY;
      const via = await guardedFetch(`${origin}/a`, 'GET', AbortSignal.timeout(30_000), guard);
      expect({ status: via.res.status, url: via.url, body: await via.res.text() }).toEqual({ status: 200, url: `${origin}/b`, body: 'file identity' });
      expect(hops).toEqual([`${origin}/a`, `${origin}/b`]);
      expect(proxied).toEqual([`GET ${origin}/a`, `GET ${origin}/b`]);
      // NO_PROXY: straight to the server (the pinned request of P64).
      proxied.length = 0;
      process.env.NO_PROXY = lanHost.split(':')[0];
      const direct = await guardedFetch(`${origin}/a`, 'GET', AbortSignal.timeout(30_000), guard);
      expect({ status: direct.res.status, body: await direct.res.text(), proxied }).toEqual({ status: 200, body: 'file undefined', proxied: [] });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      files.closeAllConnections();
      await new Promise((resolve) => files.close(resolve));
    }
  });

  test('a proxy that does not answer: the pull is one line saying so, nothing left behind', async () => {
    const r = await build(`${REPO_NAME}:1`, { HTTP_PROXY: `http://${closed}` }, mirror());
    await expectRefused(r, new RegExp(`at http://${lanHost} \\(mirror\\): unreachable through proxy http://${closed} \\(`));
  }, 2 * 60_000);

  test('a malformed proxy variable is one line', async () => {
    const r = await build(`${REPO_NAME}:1`, { HTTPS_PROXY: 'socks5://127.0.0.1:1080' }, mirror());
    await expectRefused(r, /malformed HTTPS_PROXY 'socks5:\/\/127\.0\.0\.1:1080': SOCKS proxies are not supported/);
  }, 2 * 60_000);
});

describe('the build-rootfs action\'s registry-mirrors input', () => {
  test('newline separated mirrors, in order: a dead one is passed over, the next has the image; a malformed one is one annotation naming the input', async () => {
    const dir = path.join(work, 'action');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${REPO_NAME}:1\n`);
    const env = { FIREBUILD_HOME: path.join(dir, 'home'), FIREBUILD_DOCKER_IO_REGISTRY: closed, FIREBUILD_REGISTRY_MIRRORS: '' };
    const inputs = { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/auth-action:1', 'step-cache': 'false' };
    const r = await runAction('build-rootfs/index.js', { ...inputs, 'registry-mirrors': `http://${closed}\nhttp://${lanHost}\n` }, env);
    expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
    expect(r.outputs.tag).toBe('fbtest/auth-action:1');
    expect(r.stdout).toContain(`passedOver=http://${closed} (mirror)`);
    const bad = await runAction('build-rootfs/index.js', { ...inputs, tag: 'fbtest/auth-action:2', 'registry-mirrors': `http://${lanHost}, ${lanHost}` }, env);
    expect({ code: bad.code, errors: annotations(bad.stdout).map((a) => a.replace(/^::\w+[^:]*::/, '')) }).toEqual({ code: 1, errors: [expect.stringMatching(new RegExp(`^malformed registry mirror '${lanHost}' \\(input 'registry-mirrors'\\): give http\\(s\\)://host\\[:port\\]`))] });
  }, 5 * 60_000);
});
