import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { lines, runCli, tempDir } from '../helpers/cli.js';

/**
 * ADD URLs never reach the host's services (issue 12): the host process fetches what a Dockerfile's ADD
 * names, outside the build VM's network isolation, so a pull request could `ADD http://127.0.0.1:5000/...`
 * or the cloud metadata address. Targets:
 *   secret   a server on the host's 127.0.0.1 (counts its requests: it must see none);
 *   outside  a server in a test network namespace behind a veth (10.216.X.1, routed: not a host address),
 *            which redirects to the secret, or to a file of its own.
 * No VM boots: `rootfs --plan` and a `FROM scratch` vm build (which runs no step in a VM).
 */
let work: string;
let env: NodeJS.ProcessEnv;
let secret: http.Server;
let secretPort = 0;
const secretHits: string[] = [];
let ctxServer: http.Server;
let ctxPort = 0;
let outside: ChildProcess | undefined;
let outsideLog = '';
const NS = `fbhu${process.pid % 100000}`;
const HVETH = `fbhh${process.pid % 100000}`;
const OVETH = `fbho${process.pid % 100000}`;
const X = 100 + (process.pid % 150);
const HOST_VETH = `10.215.${X}.1`;
const PEER_VETH = `10.215.${X}.2`;
const OUTSIDE = `10.216.${X}.1`;
const REFUSAL = 'a host-only address a build may not fetch from: serve it from elsewhere, or allow it with --allow-host-urls (trusted Dockerfiles only)';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const outsideHits = (p: string): number => outsideLog.split('\n').filter((l) => l === p).length;

function cleanupNet(): void {
  for (const c of [['route', 'del', `${OUTSIDE}/32`, 'via', PEER_VETH], ['link', 'del', HVETH], ['netns', 'del', NS]]) {
    try {
      execFileSync('ip', c, { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

function listen(s: http.Server): Promise<number> {
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)));
}

beforeAll(async () => {
  cleanupNet();
  work = await tempDir('firebuild-hosturls-');
  env = { FIREBUILD_HOME: path.join(work, 'home'), FIREBUILD_LOG_LEVEL: 'error' };
  secret = http.createServer((q, r) => {
    secretHits.push(q.url ?? '');
    r.end('host-secret');
  });
  secretPort = await listen(secret);
  // An http context on the host's loopback (the operator names it: trusted) whose file redirects to the secret.
  ctxServer = http.createServer((q, r) => {
    if (q.url === '/app/Dockerfile') r.end('FROM scratch\nCOPY f /f\nCOPY leak /leak\n');
    else if (q.url === '/app/Ok.Dockerfile') r.end('FROM scratch\nCOPY f /f\n');
    else if (q.url === '/app/f') r.end('context-file');
    else if (q.url === '/app/leak') r.writeHead(302, { location: `http://127.0.0.1:${secretPort}/secret` }).end();
    else r.writeHead(404).end();
  });
  ctxPort = await listen(ctxServer);
  // The outside: a netns behind a veth holding 10.216.X.1, routed from the host.
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['link', 'add', HVETH, 'type', 'veth', 'peer', 'name', OVETH]);
  execFileSync('ip', ['link', 'set', OVETH, 'netns', NS]);
  execFileSync('ip', ['addr', 'add', `${HOST_VETH}/30`, 'dev', HVETH]);
  execFileSync('ip', ['link', 'set', HVETH, 'up']);
  for (const c of [['addr', 'add', `${PEER_VETH}/30`, 'dev', OVETH], ['link', 'set', OVETH, 'up'], ['link', 'set', 'lo', 'up'], ['addr', 'add', `${OUTSIDE}/32`, 'dev', 'lo'], ['route', 'add', 'default', 'via', HOST_VETH]]) execFileSync('ip', ['-n', NS, ...c]);
  execFileSync('ip', ['route', 'replace', `${OUTSIDE}/32`, 'via', PEER_VETH]);
  const script = [
    "const h = require('http');",
    'h.createServer((q, r) => {',
    '  console.log(q.url);',
    `  if (q.url === '/redirect') r.writeHead(302, { location: 'http://127.0.0.1:${secretPort}/secret' }).end();`,
    `  else if (q.url === '/hop') r.writeHead(301, { location: '/file' }).end();`,
    "  else if (q.url === '/file') r.end('outside-content');",
    '  else r.writeHead(404).end();',
    `}).listen(8080, '${OUTSIDE}', () => console.log('ready'));`,
  ].join('\n');
  outside = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  outside.stdout!.setEncoding('utf8').on('data', (d: string) => (outsideLog += d));
  for (let i = 0; i < 100 && !outsideLog.includes('ready'); i++) await new Promise((r) => setTimeout(r, 100));
  // The outside answers the host itself: a refusal below is the check, not a dead server.
  expect(await fetch(`http://${OUTSIDE}:8080/file`).then((r) => r.text())).toBe('outside-content');
  outsideLog = '';
}, 60_000);

afterAll(async () => {
  outside?.kill();
  secret?.close();
  ctxServer?.close();
  cleanupNet();
  fs.rmSync(work, { recursive: true, force: true });
});

/** `rootfs --plan` of a Dockerfile holding one ADD of `url`. */
async function planAdd(url: string, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string; stdout: string }> {
  return runCli(['rootfs', '--plan', '--dockerfile', `FROM scratch\nADD ${url} /x\n`, ...extra], { env: { ...env, ...extraEnv } });
}

describe('ADD URLs that lead to the host are refused', () => {
  test("the host's 127.0.0.1: one line, the secret server sees no request; --allow-host-urls (or FIREBUILD_ALLOW_HOST_URLS=1) lets it through", async () => {
    const url = `http://127.0.0.1:${secretPort}/secret`;
    const r = await planAdd(url);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr.trim()).toBe(`error: Dockerfile:2: ADD ${url}: 127.0.0.1 is ${REFUSAL}`);
    expect(secretHits).toEqual([]);
    const ok = await planAdd(url, ['--allow-host-urls']);
    expect(ok.code).toBe(0);
    expect((JSON.parse(ok.stdout) as { stages: { steps: { resources: { sha256: string }[] }[] }[] }).stages[0]!.steps[0]!.resources[0]!.sha256).toBe(sha('host-secret'));
    expect(secretHits).toEqual(['/secret']);
    expect((await planAdd(url, [], { FIREBUILD_ALLOW_HOST_URLS: '1' })).code).toBe(0);
    secretHits.length = 0;
  }, 60_000);

  test('a name that resolves to loopback (localhost), the cloud metadata address, the unspecified address: refused before any connection', async () => {
    const byName = await planAdd(`http://localhost:${secretPort}/secret`);
    expect(byName.code).toBe(2);
    expect(lines(byName.stderr)).toHaveLength(1);
    expect(byName.stderr.trim()).toMatch(new RegExp(`^error: Dockerfile:2: ADD http://localhost:${secretPort}/secret: localhost resolves to (127\\.0\\.0\\.1|::1), a host-only address a build may not fetch from`));
    for (const u of ['http://169.254.169.254/latest/meta-data/iam/', `http://0.0.0.0:${secretPort}/secret`, `http://[::1]:${secretPort}/secret`]) {
      const r = await planAdd(u);
      expect(r.code).toBe(2);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain(`is ${REFUSAL}`);
    }
    expect(secretHits).toEqual([]);
  }, 60_000);

  test('an outside server that redirects to 127.0.0.1: the redirect is checked (one request to the outside, none to the secret); a redirect to an allowed place is followed', async () => {
    const r = await planAdd(`http://${OUTSIDE}:8080/redirect`);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr.trim()).toBe(`error: Dockerfile:2: ADD http://${OUTSIDE}:8080/redirect: 127.0.0.1 is ${REFUSAL}`);
    expect(outsideHits('/redirect')).toBe(1);
    expect(secretHits).toEqual([]);
    const ok = await planAdd(`http://${OUTSIDE}:8080/hop`);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(sha('outside-content'));
    // The build (vm engine, FROM scratch: nothing boots) fetches through the same check.
    const dir = path.join(work, 'build');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM scratch\nADD http://${OUTSIDE}:8080/redirect /x\n`);
    const b = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/hosturls:1'], { env });
    expect(b.code).toBe(2);
    expect(lines(b.stderr)).toHaveLength(1);
    expect(b.stderr).toContain(`ADD http://${OUTSIDE}:8080/redirect: 127.0.0.1 is ${REFUSAL}`);
    expect(outsideHits('/redirect')).toBe(2);
    expect(secretHits).toEqual([]);
    expect(fs.existsSync(path.join(work, 'home', 'rootfs', 'fbtest'))).toBe(false);
  }, 120_000);

  test("an http context the operator names on 127.0.0.1 is trusted; its file that redirects to another host-only origin is refused", async () => {
    const ok = await runCli(['rootfs', '--plan', '--dockerfile', `http://127.0.0.1:${ctxPort}/app/Ok.Dockerfile`], { env });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(sha('context-file'));
    const r = await runCli(['rootfs', '--plan', '--dockerfile', `http://127.0.0.1:${ctxPort}/app/Dockerfile`], { env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toContain(`Dockerfile:3: COPY http://127.0.0.1:${ctxPort}/app/leak: 127.0.0.1 is ${REFUSAL}`);
    expect(secretHits).toEqual([]);
  }, 60_000);
});
