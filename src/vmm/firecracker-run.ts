import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { copySparse } from '../util/fs.js';
import type { GuestChannel } from './backend.js';
import { inCgroupArgv } from './in-cgroup.js';
import { GUEST_CID, VSOCK_UDS, apiRequests, configFile, jailerArgv, jailRoot, stopRequest, type ApiRequest, type FirecrackerVm } from './firecracker.js';

/**
 * Running Firecracker under the jailer. The VM's files are placed in the jail root owned by the jail's
 * uid/gid (the stored kernel and initrd as read-only copies, never the store's own inodes; see placeFile); the jailer runs inside the VM's cgroup and execs Firecracker in a new
 * PID namespace, writing its host pid to `<jail root>/firecracker.pid`. Two ways to configure it:
 *  - `api` (default): the jailer daemonizes; firebuild sends the configuration over the API socket
 *    (serial console to `<jail root>/serial.log` through `PUT /serial`), then InstanceStart.
 *  - `config-file`: `--config-file` JSON in the jail; the jailer does not daemonize, so Firecracker's
 *    stdout, the serial console, goes to the log file firebuild hands it.
 * Both keep the API socket for the graceful stop (SendCtrlAltDel).
 */
export type FirecrackerMode = 'api' | 'config-file';

export const API_SOCK = '/run/firecracker.socket';

export interface FirecrackerLaunch {
  id: string;
  firecracker: string;
  jailer: string;
  chrootBase: string;
  uid: number;
  gid: number;
  mode: FirecrackerMode;
  kernel: string;
  initrd?: string;
  bootArgs: string;
  rootfs: string;
  disks: string[];
  /** More drives after them (a build step's RUN mounts), jailed as `mount<i>.ext4`. */
  drives?: { path: string; readOnly: boolean }[];
  memMib: number;
  cpus: number;
  netns?: string;
  tap?: { name: string; mac: string };
  /** The VM's cgroup (made by firebuild); the jailer starts inside it. */
  cgroup?: string;
  metadata?: Record<string, unknown>;
  timeoutMs?: number;
  /** Host services the guest reaches over vsock (CID 2, each on its port). */
  channels?: readonly GuestChannel[];
}

export interface FirecrackerStarted {
  pid: number;
  jailDir: string;
  apiSock: string;
  serialLog: string;
}

/**
 * Put a file into the jail, owned by the jail's uid/gid. The store's files (the stored kernel and initrd) are
 * always copied, read-only: a hard link would hand the store's own inode to the jail user, who could then
 * rewrite it for every later VM. Only the VM's own files (its per-VM rootfs copy, config disk, a build's
 * disk: one name each) are hard-linked; anything with another name is copied too. Copies are sparse, by
 * reflink where the file system has them.
 */
export async function placeFile(src: string, dst: string, uid: number, gid: number, kind: 'store' | 'own'): Promise<void> {
  let linked = false;
  if (kind === 'own' && (await fsp.stat(src)).nlink === 1) {
    linked = await fsp.link(src, dst).then(() => true, () => false);
  }
  if (!linked) {
    await copySparse(src, dst);
    if (kind === 'store') await fsp.chmod(dst, 0o400);
  }
  await fsp.chown(dst, uid, gid);
}

/** One API call over the unix socket; a non-2xx answer is an error with Firecracker's fault message. */
export function apiCall(sock: string, req: Pick<ApiRequest, 'method' | 'path' | 'body'>, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(req.body);
    const r = http.request({ socketPath: sock, method: req.method, path: req.path, timeout: timeoutMs, headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Content-Length': Buffer.byteLength(data) } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve({ status, body });
        let fault = body;
        try {
          fault = (JSON.parse(body) as { fault_message?: string }).fault_message ?? body;
        } catch {
          // not JSON
        }
        reject(new UserError(`Firecracker refused ${req.method} ${req.path} (${status}): ${fault}`));
      });
    });
    r.on('timeout', () => r.destroy(new Error(`Firecracker API ${req.method} ${req.path} timed out`)));
    r.on('error', reject);
    r.end(data);
  });
}

async function waitFor(file: string, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fsp.access(file);
      return;
    } catch {
      if (Date.now() > deadline) throw new UserError(`${what} did not appear within ${Math.round(timeoutMs / 1000)} s (${file})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function runJailer(argv: [string, string[]], mode: FirecrackerMode, serialLog: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // --daemonize calls setsid(), which fails for a process group leader: no `detached` then. Without it
    // Firecracker inherits stdout and stderr, so both go to the log file, never to a pipe of ours that
    // would outlive this process.
    const fd = mode === 'config-file' ? fs.openSync(serialLog, 'a') : undefined;
    const child = fd === undefined
      ? spawn(argv[0], argv[1], { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(argv[0], argv[1], { stdio: ['ignore', fd, fd], detached: true });
    if (fd !== undefined) fs.closeSync(fd);
    let err = '';
    child.stderr?.on('data', (d) => (err += d));
    child.on('error', (e) => reject(new UserError(`cannot start the jailer ${argv[0]}: ${(e as Error).message}`)));
    // With --new-pid-ns the jailer exits once Firecracker is cloned (its pid is in the pid file).
    child.on('exit', (code) => {
      if (code === 0) return resolve();
      const text = err || (fd !== undefined ? fs.readFileSync(serialLog, 'utf8') : '');
      reject(new UserError(`the jailer failed (exit ${code}): ${text.trim().split('\n').slice(-3).join(' | ') || 'no message'}`));
    });
  });
}

export async function startFirecracker(o: FirecrackerLaunch): Promise<FirecrackerStarted> {
  const root = jailRoot(o.chrootBase, o.firecracker, o.id);
  const jailDir = path.dirname(root);
  await fsp.mkdir(root, { recursive: true, mode: 0o700 });
  const inJail = (name: string): string => `/${name}`;
  await placeFile(o.kernel, path.join(root, 'vmlinux'), o.uid, o.gid, 'store');
  if (o.initrd) await placeFile(o.initrd, path.join(root, 'initrd'), o.uid, o.gid, 'store');
  await placeFile(o.rootfs, path.join(root, 'rootfs.ext4'), o.uid, o.gid, 'own');
  for (const [i, d] of o.disks.entries()) await placeFile(d, path.join(root, `disk${i}.ext4`), o.uid, o.gid, 'own');
  // The guest's vsock connections to port P reach `<jail root>/vsock.sock_P`: each service listens there
  // (owned by the jail's user, who connects to it), inside the jail, removed with it.
  for (const ch of o.channels ?? []) await ch.listen(path.join(root, `${VSOCK_UDS.slice(1)}_${ch.vsockPort}`), { uid: o.uid, gid: o.gid });
  // A RUN mount's drive: hard-linked where it can be (a cache volume's writes then land in place), else
  // copied; the build takes a copy's writes back and gives the file its owner back (jailedMountDrive).
  for (const [i, d] of (o.drives ?? []).entries()) await placeFile(d.path, path.join(root, `mount${i}.ext4`), o.uid, o.gid, 'own');
  const serialLog = path.join(root, 'serial.log');
  await fsp.writeFile(serialLog, '', { mode: 0o600 });
  await fsp.chown(serialLog, o.uid, o.gid);

  const vm: FirecrackerVm = {
    kernel: inJail('vmlinux'),
    ...(o.initrd ? { initrd: inJail('initrd') } : {}),
    bootArgs: o.bootArgs,
    rootfs: inJail('rootfs.ext4'),
    drives: [
      ...o.disks.map((_d, i) => ({ id: `disk${i}`, path: inJail(`disk${i}.ext4`), readOnly: true })),
      ...(o.drives ?? []).map((d, i) => ({ id: `mount${i}`, path: inJail(`mount${i}.ext4`), readOnly: d.readOnly })),
    ],
    vcpus: o.cpus,
    memMib: o.memMib,
    ...(o.tap ? { network: [{ ifaceId: 'eth0', tap: o.tap.name, mac: o.tap.mac }] } : {}),
    ...(o.tap && o.metadata ? { mmds: true } : {}),
    ...(o.mode === 'api' ? { serialOut: inJail('serial.log') } : {}),
    ...(o.channels?.length ? { vsock: { guestCid: GUEST_CID, udsPath: VSOCK_UDS } } : {}),
  };
  const common = { jailer: o.jailer, firecracker: o.firecracker, id: o.id, uid: o.uid, gid: o.gid, chrootBase: o.chrootBase, newPidNs: true, ...(o.netns ? { netns: o.netns } : {}) };
  let argv: string[];
  if (o.mode === 'config-file') {
    const cfg = path.join(root, 'vm-config.json');
    await fsp.writeFile(cfg, JSON.stringify(configFile(vm), null, 2) + '\n', { mode: 0o600 });
    await fsp.chown(cfg, o.uid, o.gid);
    argv = jailerArgv({ ...common, configFile: inJail('vm-config.json'), apiSock: API_SOCK });
  } else {
    argv = jailerArgv({ ...common, daemonize: true, apiSock: API_SOCK });
  }
  await runJailer(inCgroupArgv(o.cgroup, o.jailer, argv), o.mode, serialLog);
  const pidFile = path.join(root, `${path.basename(o.firecracker)}.pid`);
  const timeout = o.timeoutMs ?? 10_000;
  await waitFor(pidFile, timeout, 'the jailer pid file');
  const pid = Number((await fsp.readFile(pidFile, 'utf8')).trim());
  const apiSock = path.join(root, API_SOCK);
  await waitFor(apiSock, timeout, 'the Firecracker API socket');
  if (o.mode === 'api') {
    for (const req of apiRequests(vm, o.metadata)) await apiCall(apiSock, req);
  }
  return { pid, jailDir, apiSock, serialLog };
}

/** Graceful stop: Ctrl+Alt+Del into the guest, whose init turns it into the stop signal. */
export async function sendCtrlAltDel(apiSock: string): Promise<void> {
  await apiCall(apiSock, stopRequest(), 3000);
}

/** Where a RUN mount's drive sits in a build VM's jail (see startFirecracker). */
export function jailedMountDrive(jailDir: string, i: number): string {
  return path.join(jailDir, 'root', `mount${i}.ext4`);
}
