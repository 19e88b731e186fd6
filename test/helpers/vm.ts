import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { pidAlive } from '../../src/util/fs.js';
import { runCli } from './cli.js';

/** What the tests that boot VMs share: the suite's fast kernel, the host's Debian cloud kernel, free ports, and cleanup. */
export const alive = pidAlive;

/** Debian's cloud kernel and its initrd from /boot (installed by scripts/install-deps.sh). */
export function debianCloudKernel(): { kernel: string; initrd: string } {
  const vmlinuz = fs.readdirSync('/boot').filter((f) => /^vmlinuz-.*cloud/.test(f)).sort().pop();
  if (!vmlinuz) throw new Error('no Debian cloud kernel in /boot: run scripts/install-deps.sh');
  return { kernel: path.join('/boot', vmlinuz), initrd: path.join('/boot', vmlinuz.replace('vmlinuz', 'initrd.img')) };
}

/** `firebuild kernel import` of that kernel (with its initrd unless `withInitrd` is false); returns the CLI's exit code. */
export async function importDebianCloud(env: NodeJS.ProcessEnv, id = 'debian-cloud', withInitrd = true): Promise<number> {
  const k = debianCloudKernel();
  return (await runCli(['kernel', 'import', '--id', id, k.kernel, ...(withInitrd ? ['--initrd', k.initrd] : [])], { env })).code;
}

/** The fast guest kernel the suite built once (global-setup.ts): its vmlinux. */
export function testKernel(): string {
  const k = process.env.FIREBUILD_TEST_KERNEL;
  if (!k || !fs.existsSync(k)) throw new Error('FIREBUILD_TEST_KERNEL is not set or missing: the integration global setup builds it');
  return k;
}

/** `firebuild kernel import` of the fast guest kernel (as `default`, the kernel booted without --vmlinux-id); returns the CLI's exit code. */
export async function importTestKernel(env: NodeJS.ProcessEnv, id = 'default'): Promise<number> {
  return (await runCli(['kernel', 'import', '--id', id, testKernel()], { env })).code;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  const p = await new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
  await new Promise((r) => s.close(r));
  return p;
}

/** Never leave a VM behind, whatever failed: kill every VM in the run cache. */
export async function killAll(runCache: string, env: NodeJS.ProcessEnv, opts: { shutdownTimeout?: number; wrap?: string[] } = {}): Promise<void> {
  for (const id of fs.existsSync(runCache) ? fs.readdirSync(runCache) : []) {
    await runCli(['kill', '--vmm-id', id, '--shutdown-timeout', String(opts.shutdownTimeout ?? 2)], { env, ...(opts.wrap ? { wrap: opts.wrap } : {}) });
  }
}

/** The VMM processes (QEMU, Firecracker, the jailer) whose command line names a path under `under` (a test's own directory). */
export function vmmProcessesUnder(under: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (/qemu|firecracker|jailer/.test(path.basename(argv[0] ?? '')) && argv.some((a) => a.includes(under))) out.push(Number(pid));
  }
  return out;
}

/** SIGKILL every VMM process under `under` (a test file's last resort in afterAll). */
export function killVmmProcessesUnder(under: string): void {
  for (const pid of vmmProcessesUnder(under)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}
