import { disownVm } from '../runtime/owner.js';
import { parsePort } from '../net/network.js';
import { readConsole } from '../runtime/console.js';
import { runProbes, waitExitCode, type ProbeResult } from '../runtime/probes.js';
import { vmmOf, type VmState } from '../runtime/state.js';
import { killVm } from '../runtime/stop.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { bootVm, runCacheOf, type BootRequest, type VmContext } from './vm-boot.js';

/** A boot that failed (kernel panic, no init, deadline): the VM is gone, its console is on the error. */
export { BootFailure } from '../runtime/console.js';

/** A VM's serial log as it is now ('' when there is none): what a face keeps of a failed VM. */
export const readSerialLog = readConsole;

/** How long a VM that failed its probes gets to stop gracefully before it is forced. */
const KILL_TIMEOUT_MS = 5000;

/** The smoke probes, each against the same deadline counted from the boot (the init's start). */
export interface SmokeProbes {
  /**
   * Host ports on 127.0.0.1 that must accept connections (published ports); `{ guestPort }` is the host
   * port an auto mapping (`auto:8080`) got, known once the VM is launched.
   */
  tcp: ProbePort[];
  /** A URL's `:auto:GUESTPORT` (http://127.0.0.1:auto:8080/) becomes the host port that mapping got. */
  http: { url: string; status: number; body?: string }[];
  /** The command must exit with this code (after the TCP and HTTP probes). */
  exitCode?: number;
  timeoutMs: number;
}

export type ProbePort = number | { guestPort: number };

/** A TCP probe's port as both faces take it: a host port, or `auto:GUESTPORT` (the host port an auto mapping got). */
export function parseProbePort(s: string, what: string): ProbePort {
  const m = /^(?:auto:)?(\d{1,5})$/.exec(s.trim());
  const n = Number(m?.[1]);
  if (!m || n < 1 || n > 65535) throw new UserError(`${what} is '${s}': give a host port (8080) or auto:GUESTPORT for an auto-published port`);
  return s.trim().startsWith('auto:') ? { guestPort: n } : n;
}

/** A smoke test's figures: the boot (VMM launch to the init's start) and readiness (VMM launch to every probe passed). */
export interface SmokeResult {
  vm: VmState;
  bootMs: number;
  readyMs: number;
  probes: ProbeResult[];
}

/**
 * The VM's address where this host can reach it, else undefined: a CNI address is routed from the host;
 * QEMU's user-mode networking gives every guest 10.0.2.15 behind its own NAT, reachable only through
 * published ports.
 */
export function hostReachableIp(vm: VmState): string | undefined {
  return vm.network.mode === 'cni' ? vm.network.ip : undefined;
}

type PublishedPort = Pick<VmState['network']['ports'][number], 'proto' | 'hostPort' | 'guestPort'>;

/** The host port a probe means: its own, or the one the auto mapping of that guest port got. */
function hostPortFor(p: ProbePort, ports: PublishedPort[]): number {
  if (typeof p === 'number') return p;
  const m = ports.find((x) => x.guestPort === p.guestPort && x.proto === 'tcp');
  if (!m) throw new UserError(`probe auto:${p.guestPort}: no published TCP port maps guest port ${p.guestPort}: add ports auto:${p.guestPort}`);
  return m.hostPort;
}

function resolveUrl(url: string, ports: PublishedPort[]): string {
  return url.replace(/:auto:(\d{1,5})(?=[/?#]|$)/, (_all, g: string) => `:${hostPortFor({ guestPort: Number(g) }, ports)}`);
}

export interface SmokeHooks {
  /** The VM is up (its init started); the probes come next. */
  booted?: (vm: VmState) => void;
  /** Each probe as it ends, passed or failed: its tries and time. */
  probed?: (r: ProbeResult) => void;
  /** A probe failed; called before the VM is killed, while its serial log still exists. */
  failed?: (vm: VmState, err: unknown) => Promise<void>;
  /**
   * After the probes passed, release the VM from this process: it outlives it and a later kill removes it
   * (the smoke-test action's post step). Otherwise the VM stays owned (a SIGINT/SIGTERM tears it down)
   * and the caller goes on with it.
   */
  handOver?: boolean;
}

export function hasProbes(p: SmokeProbes): boolean {
  return p.tcp.length > 0 || p.http.length > 0 || p.exitCode !== undefined;
}

/**
 * The smoke test both faces run (`run --wait-tcp/--wait-http/--wait-exit-code`, the smoke-test action):
 * boot, then the TCP and HTTP probes, then the exit-code probe; a failed probe kills the VM (and all it
 * left on the host) and is the error. A failed boot leaves nothing (launchVm tears it down).
 */
export async function smoke(r: BootRequest, probes: SmokeProbes, ctx: VmContext, log: Logger, hooks: SmokeHooks = {}): Promise<SmokeResult> {
  // A probe naming an auto port that nothing publishes is refused before anything boots.
  const requested = r.ports.map((p) => parsePort(p));
  for (const p of probes.tcp) hostPortFor(p, requested);
  for (const h of probes.http) resolveUrl(h.url, requested);
  const vm = await bootVm(r, ctx, log);
  hooks.booted?.(vm);
  const results: ProbeResult[] = [];
  try {
    if (probes.tcp.length || probes.http.length) {
      const ports = vm.network.ports;
      results.push(...await runProbes({
        tcp: probes.tcp.map((p) => ({ host: '127.0.0.1', port: hostPortFor(p, ports) })),
        http: probes.http.map((h) => ({ ...h, url: resolveUrl(h.url, ports) })),
        timeoutMs: probes.timeoutMs,
      }, vm.serialLog, hooks.probed));
      log.info('probes passed', { tcp: probes.tcp.length, http: probes.http.length });
    }
    if (probes.exitCode !== undefined) {
      const started = Date.now();
      await waitExitCode(vm.serialLog, vmmOf(vm), probes.exitCode, probes.timeoutMs);
      const r = { what: `exit code ${probes.exitCode}`, passed: true, attempts: 1, ms: Date.now() - started };
      results.push(r);
      hooks.probed?.(r);
      log.info('exit code probe passed', { 'exit-code': probes.exitCode });
    }
  } catch (err) {
    // The face's report (the serial-log artifact) never keeps the VM from being removed.
    await Promise.resolve(hooks.failed?.(vm, err)).catch(() => undefined);
    await killVm(runCacheOf(ctx.settings), vm.id, KILL_TIMEOUT_MS, log);
    throw err;
  }
  const ready = Date.now();
  if (hooks.handOver) disownVm(vm.id);
  const t = vm.bootTimes ?? { vmmStartedAt: ready, initStartedAt: ready };
  return { vm, bootMs: t.initStartedAt - t.vmmStartedAt, readyMs: ready - t.vmmStartedAt, probes: results };
}

/** Stop a VM that passed its smoke test and remove all it left (`run --wait-exit-code`: the command has ended). */
export async function removeSmokedVm(vm: VmState, ctx: VmContext, log: Logger): Promise<void> {
  await killVm(runCacheOf(ctx.settings), vm.id, KILL_TIMEOUT_MS, log);
}
