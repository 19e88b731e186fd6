import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { freePort, importTestKernel, killAll } from '../helpers/vm.js';

/**
 * Issue 12 item 3: VMs on user-mode networking (build VMs of the vm engine, run/smoke VMs) reach the
 * outside, never the host's services. The test makes four targets, each reachable from the host itself:
 *   loop  a service on the host's 127.0.0.1, tried as 10.0.2.2 (QEMU's alias for the host's loopback);
 *   veth  a service on the host's 0.0.0.0, tried at the host's own address on a test veth (10.213.X.1);
 *   meta  169.254.169.254 (a server in the test netns, routed from the host like a cloud's metadata);
 *   out   a server in a test network namespace behind the veth (10.214.X.1, routed: "the outside").
 * The VM must reach out and none of the others.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const NS = `fbiso${process.pid % 100000}`;
const HVETH = `fbih${process.pid % 100000}`;
const OVETH = `fbio${process.pid % 100000}`;
const servers: http.Server[] = [];
let outside: ChildProcess | undefined;
let loopPort = 0;
let anyPort = 0;
const BASE = 'fbtest/isobase:1';
// Addresses of their own per run: the host's network namespace is shared with other test runs.
const X = 100 + (process.pid % 150);
const HOST_VETH = `10.213.${X}.1`;
const PEER_VETH = `10.213.${X}.2`;
const OUTSIDE = `10.214.${X}.1`;

const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });

function serve(host: string, port: number, body: string): Promise<void> {
  const s = http.createServer((_q, r) => r.end(body));
  servers.push(s);
  return new Promise((resolve) => s.listen(port, host, () => resolve()));
}

/** A shell loop (bash /dev/tcp: the base image has no HTTP client) writing `<name> reached <body>` or `<name> unreachable`. */
function probeScript(out: string): string {
  const targets = [['loop', '10.0.2.2', loopPort], ['veth', HOST_VETH, anyPort], ['meta', '169.254.169.254', 80], ['out', OUTSIDE, 8080]];
  const lines = targets.map(([n, h, p]) => `timeout 15 bash -c 'exec 3<>/dev/tcp/${h}/${p} || exit 1; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3' >/tmp/r 2>&1; if grep -q "^HTTP/1" /tmp/r; then echo "${n} reached $(tail -n 1 /tmp/r)"; else echo "${n} unreachable"; fi`);
  return `{ ${lines.join('; ')}; } > ${out}`;
}

function slirpFor(dir: string): string[] {
  const ps = sh('ps', '-eo', 'pid=,comm=,args=');
  return ps.split('\n').filter((l) => /^\s*\d+ (slirp4netns|qemu-system-x86) /.test(l) && l.includes(dir));
}

function cleanupNet(): void {
  for (const c of [['route', 'del', `${OUTSIDE}/32`, 'via', PEER_VETH], ['route', 'del', '169.254.169.254/32', 'via', PEER_VETH], ['link', 'del', HVETH], ['netns', 'del', NS]]) {
    try {
      execFileSync('ip', c, { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

beforeAll(async () => {
  cleanupNet();
  work = await tempDir('firebuild-isonet-');
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  loopPort = await freePort();
  anyPort = await freePort();
  await serve('127.0.0.1', loopPort, 'host-loopback-secret');
  await serve('0.0.0.0', anyPort, 'host-any-secret');
  // The outside: a netns behind a veth, holding 10.214.X.1 and 169.254.169.254, routed from the host.
  sh('ip', 'netns', 'add', NS);
  sh('ip', 'link', 'add', HVETH, 'type', 'veth', 'peer', 'name', OVETH);
  sh('ip', 'link', 'set', OVETH, 'netns', NS);
  sh('ip', 'addr', 'add', `${HOST_VETH}/30`, 'dev', HVETH);
  sh('ip', 'link', 'set', HVETH, 'up');
  for (const c of [['addr', 'add', `${PEER_VETH}/30`, 'dev', OVETH], ['link', 'set', OVETH, 'up'], ['link', 'set', 'lo', 'up'], ['addr', 'add', `${OUTSIDE}/32`, 'dev', 'lo'], ['addr', 'add', '169.254.169.254/32', 'dev', 'lo'], ['route', 'add', 'default', 'via', HOST_VETH]]) sh('ip', '-n', NS, ...c);
  sh('ip', 'route', 'replace', `${OUTSIDE}/32`, 'via', PEER_VETH);
  sh('ip', 'route', 'replace', '169.254.169.254/32', 'via', PEER_VETH);
  outside = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', `const h=require('http');h.createServer((q,r)=>r.end('outside-ok')).listen(8080,'${OUTSIDE}');h.createServer((q,r)=>r.end('metadata-secret')).listen(80,'169.254.169.254')`], { stdio: 'ignore' });
  // Every target answers the host itself: "unreachable" in a VM is the isolation, not a dead server.
  for (const [u, body] of [[`http://127.0.0.1:${loopPort}/`, 'host-loopback-secret'], [`http://${HOST_VETH}:${anyPort}/`, 'host-any-secret'], ['http://169.254.169.254/', 'metadata-secret'], [`http://${OUTSIDE}:8080/`, 'outside-ok']] as const) {
    let text = '';
    for (let i = 0; i < 50 && text !== body; i++) {
      text = await fetch(u).then((r) => r.text()).catch(() => '');
      if (text !== body) await new Promise((r) => setTimeout(r, 100));
    }
    expect(text).toBe(body);
  }
  expect(await importTestKernel(env)).toBe(0);
  const base = path.join(work, 'base');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n`);
  expectJsonResult(await runCli(['baseos', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '64M'], { env }));
}, 15 * 60_000);

afterAll(async () => {
  await killAll(path.join(work, 'home', 'run'), env).catch(() => undefined);
  for (const s of servers) s.close();
  outside?.kill();
  cleanupNet();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('isolated user-mode networking', () => {
  test('a build step (vm engine, --network user) reaches a server outside, not the host loopback (10.0.2.2), not the host on a veth, not 169.254.169.254', async () => {
    const dir = path.join(work, 'probe');
    fs.mkdirSync(dir);
    // The host's static busybox, for the run test's HTTP server (the base image has none).
    fs.copyFileSync('/bin/busybox', path.join(dir, 'busybox'));
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nCOPY busybox /usr/local/bin/busybox\nRUN ${probeScript('/results.txt')}\n`);
    const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/isoprobe:1', '--accel', 'tcg', '--network', 'user'], { env });
    expectJsonResult(r);
    const { Ext4Reader } = await import('../../src/rootfs/debugfs.js');
    const results = (await new Ext4Reader((JSON.parse(r.stdout) as { rootfs: string }).rootfs).readFile('/results.txt')).toString();
    expect(results.trim().split('\n')).toEqual(['loop unreachable', 'veth unreachable', 'meta unreachable', 'out reached outside-ok']);
    expect(slirpFor(path.join(work, 'home'))).toEqual([]);
  }, 15 * 60_000);

  test('a run --daemonize VM: its published port answers (smoke probe), it reaches the outside only; kill leaves no slirp4netns, QEMU or run cache', async () => {
    const port = await freePort();
    const cmd = `mkdir -p /www && ${probeScript('/www/results.txt')}; exec /usr/local/bin/busybox httpd -f -p 8080 -h /www`;
    const r = await runCli(['run', '--from', 'fbtest/isoprobe:1', '--name', 'iso1', '--port', `127.0.0.1:${port}:8080`, '--daemonize', '--wait-http', `http://127.0.0.1:${port}/results.txt`, '--wait-http-body', 'out ', '--wait-timeout', '240', '--', 'bash', '-c', cmd], { env });
    expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 0, stderr: expect.stringContaining('probes passed') });
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string; 'cache-dir': string };
    const results = await fetch(`http://127.0.0.1:${port}/results.txt`).then((x) => x.text());
    expect(results.trim().split('\n')).toEqual(['loop unreachable', 'veth unreachable', 'meta unreachable', 'out reached outside-ok']);
    expect(slirpFor(vm['cache-dir']).some((l) => l.includes('slirp4netns'))).toBe(true);
    const k = await runCli(['kill', '--vmm-id', vm['vmm-id']], { env });
    expect(k.code).toBe(0);
    expect(slirpFor(vm['cache-dir'])).toEqual([]);
    expect(fs.existsSync(vm['cache-dir'])).toBe(false);
  }, 15 * 60_000);

  test('a VM whose wrapper is SIGKILLed alone: purge removes its QEMU and slirp4netns too', async () => {
    const r = await runCli(['run', '--from', 'fbtest/isoprobe:1', '--name', 'iso2', '--daemonize', '--', 'sleep', '3600'], { env });
    expect(r.code).toBe(0);
    const vm = JSON.parse(r.stdout) as { pid: number; 'cache-dir': string };
    expect(slirpFor(vm['cache-dir']).length).toBe(2);
    process.kill(vm.pid, 'SIGKILL');
    await new Promise((res) => setTimeout(res, 500));
    const p = await runCli(['purge'], { env });
    expect(p.code).toBe(0);
    expect(slirpFor(vm['cache-dir'])).toEqual([]);
    expect(fs.existsSync(vm['cache-dir'])).toBe(false);
  }, 10 * 60_000);

  test('user-host is for run VMs only: a build refuses it in one line', async () => {
    const dir = path.join(work, 'uh');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN true\n`);
    const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/isouh:1', '--accel', 'tcg', '--network', 'user-host'], { env });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--network.*user-host/);
  });
});
