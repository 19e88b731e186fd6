import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { effectiveCommand, mergeEnv, type RunConfig } from '../guest/run-config.js';
import { INIT_PATH, makeConfigDisk, prepareRootfs } from '../guest/prepare.js';
import { RunCache, newVmmId, validateName, type VmState } from '../runtime/state.js';
import type { StorageProvider, StoredKernel } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import { pidAlive } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import { qemuArgv, resolveAccel } from '../vmm/qemu.js';

export interface PortSpec { proto: 'tcp' | 'udp'; hostAddr: string; hostPort: number; guestPort: number }

export interface RunOptions {
  from: string;
  name?: string;
  vmlinuxId?: string;
  memMib: number;
  cpus: number;
  hostname?: string;
  env: string[];
  envFiles: string[];
  sshUser?: string;
  identityFile?: string;
  network: 'user' | 'none';
  ports: string[];
  accel: string;
  command?: string[];
  bootTimeoutMs: number;
}

/** User-mode networking: QEMU's slirp gives the guest this address. */
export const USER_NET = { ip: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' };

export function parsePort(s: string): PortSpec {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(s);
  const ok = (n: string | undefined): boolean => Number(n) >= 1 && Number(n) <= 65535;
  if (!m || !ok(m[2]) || !ok(m[3])) throw new UserError(`malformed --port '${s}': use [hostip:]hostport:guestport[/tcp|udp], e.g. 127.0.0.1:8080:80`);
  return { proto: (m[4] ?? 'tcp') as 'tcp' | 'udp', hostAddr: m[1] ?? '127.0.0.1', hostPort: Number(m[2]), guestPort: Number(m[3]) };
}

export function parseEnvFile(text: string, file: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const kv = l.replace(/^export\s+/, '');
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(kv)) throw new UserError(`${file}:${i + 1}: not KEY=value`);
    out.push(kv);
  });
  return out;
}

const PUBLIC_KEY_RE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/;

async function portFree(p: PortSpec): Promise<boolean> {
  if (p.proto === 'udp') return true;
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(p.hostPort, p.hostAddr, () => srv.close(() => resolve(true)));
  });
}

async function pickKernel(storage: StorageProvider, id: string | undefined): Promise<StoredKernel> {
  if (id) return storage.getKernel(id);
  const ks = (await storage.listKernels()).filter((k) => !k.error);
  if (ks.length === 1) return storage.getKernel(ks[0]!.id);
  throw new UserError(ks.length === 0 ? 'no kernel stored: import one with firebuild kernel import --id ID FILE [--initrd FILE]' : `several kernels stored (${ks.map((k) => k.id).join(', ')}): choose one with --vmlinux-id`);
}

/** Boot a stored image as a QEMU microVM in the background; returns once the init has started the command. */
export async function runVm(o: RunOptions, storage: StorageProvider, cache: RunCache, log: Logger): Promise<VmState> {
  const image = await storage.getImage(o.from);
  const kernel = await pickKernel(storage, o.vmlinuxId);
  const id = newVmmId();
  const name = validateName(o.name ?? id.slice(0, 12));
  if ((await cache.list()).some((v) => v.running && v.name === name)) throw new UserError(`--name ${name} is taken by a running VM: choose another name`);
  const envFromFiles: string[][] = [];
  for (const f of o.envFiles) {
    const text = await fsp.readFile(f, 'utf8').catch(() => {
      throw new UserError(`env file ${f} not found: check the --env-file path`);
    });
    envFromFiles.push(parseEnvFile(text, f));
  }
  const flagEnv = o.env.map((e) => {
    if (e.includes('=')) return e;
    const v = process.env[e];
    if (v === undefined) throw new UserError(`--env ${e} has no value and is not set here: write --env ${e}=value`);
    return `${e}=${v}`;
  });
  let authorizedKeys: string | undefined;
  if (o.identityFile) {
    const text = (await fsp.readFile(o.identityFile, 'utf8').catch(() => {
      throw new UserError(`identity file ${o.identityFile} not found`);
    })).trim();
    if (!text.split('\n').every((l) => PUBLIC_KEY_RE.test(l.trim()))) {
      throw new UserError(`identity file ${o.identityFile} is not an SSH public key: give the .pub file (never the private key)`);
    }
    authorizedKeys = text + '\n';
  }
  const ports = o.ports.map(parsePort);
  if (ports.length && o.network !== 'user') throw new UserError('--port needs --network user');
  for (const p of ports) if (!(await portFree(p))) throw new UserError(`port ${p.hostAddr}:${p.hostPort} is already in use: choose another host port`);
  const { accel, warning } = await resolveAccel(o.accel);
  if (warning) log.warn(warning);

  const dir = await cache.create(id);
  let pid = 0;
  try {
    const rootfs = path.join(dir, 'rootfs.ext4');
    await prepareRootfs(image.rootfsPath, rootfs);
    const hostname = o.hostname ?? name;
    const cfg: RunConfig = {
      hostname,
      net: o.network === 'user' ? { mode: 'static', ip: USER_NET.ip, gateway: USER_NET.gateway } : { mode: 'none' },
      ...(o.network === 'user' ? { dns: [USER_NET.dns] } : {}),
      env: mergeEnv(image.metadata.config.env, ...envFromFiles, flagEnv),
      command: effectiveCommand(image.metadata.config, o.command),
      user: image.metadata.config.user,
      workdir: image.metadata.config.workingDir,
      stopSignal: image.metadata.config.stopSignal,
      ...(o.sshUser ? { sshUser: o.sshUser } : {}),
    };
    if (cfg.command.length === 0) throw new UserError(`image ${o.from} has no ENTRYPOINT or CMD: give a command after --`);
    const config = path.join(dir, 'config.ext4');
    await makeConfigDisk(cfg, config, log, authorizedKeys);
    const serialLog = path.join(dir, 'serial.log');
    const pidFile = path.join(dir, 'qemu.pid');
    const argv = qemuArgv({
      kernel: kernel.vmlinuxPath,
      ...(kernel.initrdPath ? { initrd: kernel.initrdPath } : {}),
      append: `console=ttyS0 root=/dev/vda rw init=${INIT_PATH} quiet ${kernel.metadata.cmdline ?? ''}`.trim(),
      rootfs,
      disks: [config],
      memMib: o.memMib,
      cpus: o.cpus,
      accel,
      serialLog,
      pidFile,
      ...(o.network === 'user' ? { userNet: { hostfwd: ports } } : {}),
    });
    const child = spawn('qemu-system-x86_64', argv, { detached: true, stdio: ['ignore', 'ignore', 'ignore'] });
    child.unref();
    pid = child.pid ?? 0;
    const state: VmState = {
      schemaVersion: 1, id, name, image: image.tag, kernel: kernel.id, backend: 'qemu', accel, pid,
      started: new Date().toISOString(), hostname,
      network: { mode: o.network, ...(o.network === 'user' ? { ip: USER_NET.ip.split('/')[0] as string } : {}), ports },
      serialLog, cacheDir: dir,
    };
    await cache.write(state);
    log.info('VM starting', { id, name, accel, image: image.tag });
    await waitForConsole(serialLog, /FIREBUILD-(START|EXIT)/, pid, o.bootTimeoutMs);
    return state;
  } catch (err) {
    if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    await waitGone(pid, 5000);
    await cache.remove(id);
    throw err;
  }
}

/** Wait for a console line; a deadline or the VM's exit is an error carrying the console tail. */
export async function waitForConsole(serialLog: string, re: RegExp, pid: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await fsp.readFile(serialLog, 'utf8').catch(() => '');
    if (re.test(text)) return text;
    if (!pidAlive(pid)) throw new UserError(`the VM exited before its init started: console tail: ${consoleTail(text)}`);
    if (Date.now() > deadline) throw new UserError(`the VM did not start its init within ${Math.round(timeoutMs / 1000)} s: console tail: ${consoleTail(text)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function consoleTail(text: string, n = 5): string {
  const lines = text.trim().split(/\r?\n/).filter(Boolean).slice(-n);
  return lines.length ? lines.join(' | ') : '(empty)';
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (pid && pidAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Stop a VM (TERM, then KILL after the timeout) and remove its run cache. */
export async function killVm(cache: RunCache, id: string, timeoutMs: number, log: Logger): Promise<void> {
  const s = await cache.read(id);
  if (pidAlive(s.pid)) {
    process.kill(s.pid, 'SIGTERM');
    if (!(await waitGone(s.pid, timeoutMs))) {
      log.warn('VM did not stop in time: killing it', { id });
      process.kill(s.pid, 'SIGKILL');
      await waitGone(s.pid, 5000);
    }
  }
  await cache.remove(id);
  log.info('VM removed', { id, name: s.name });
}

/** Remove every VM whose process is gone (crashed, powered off, killed). */
export async function purgeVms(cache: RunCache, log: Logger): Promise<string[]> {
  const gone = (await cache.list()).filter((v) => !v.running);
  for (const v of gone) {
    await cache.remove(v.id);
    log.info('purged', { id: v.id, name: v.name });
  }
  return gone.map((v) => v.id);
}

/** `inspect` in the seed's shape: `.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP`. */
export function inspectView(s: VmState & { running?: boolean }): Record<string, unknown> {
  return {
    ...s,
    NetworkInterfaces: s.network.ip ? [{ StaticConfiguration: { IPConfiguration: { IP: s.network.ip } } }] : [],
  };
}
