import { disownVm } from '../runtime/owner.js';
import { runProbes, waitExitCode } from '../runtime/probes.js';
import { vmmOf, type VmState } from '../runtime/state.js';
import { killVm } from '../runtime/stop.js';
import type { Logger } from '../util/logger.js';
import { bootVm, runCacheOf, type BootRequest, type VmContext } from './vm-boot.js';

/** How long a VM that failed its probes gets to stop gracefully before it is forced. */
const KILL_TIMEOUT_MS = 5000;

/** The smoke probes, each against the same deadline counted from the boot (the init's start). */
export interface SmokeProbes {
  /** Host ports on 127.0.0.1 that must accept connections (published ports). */
  tcp: number[];
  http: { url: string; status: number; body?: string }[];
  /** The command must exit with this code (after the TCP and HTTP probes). */
  exitCode?: number;
  timeoutMs: number;
}

export interface SmokeHooks {
  /** The VM is up (its init started); the probes come next. */
  booted?: (vm: VmState) => void;
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
export async function smoke(r: BootRequest, probes: SmokeProbes, ctx: VmContext, log: Logger, hooks: SmokeHooks = {}): Promise<VmState> {
  const vm = await bootVm(r, ctx, log);
  hooks.booted?.(vm);
  try {
    if (probes.tcp.length || probes.http.length) {
      await runProbes({
        tcp: probes.tcp.map((port) => ({ host: '127.0.0.1', port })),
        http: probes.http,
        timeoutMs: probes.timeoutMs,
      }, vm.serialLog);
      log.info('probes passed', { tcp: probes.tcp.length, http: probes.http.length });
    }
    if (probes.exitCode !== undefined) {
      await waitExitCode(vm.serialLog, vmmOf(vm), probes.exitCode, probes.timeoutMs);
      log.info('exit code probe passed', { 'exit-code': probes.exitCode });
    }
  } catch (err) {
    // The face's report (the serial-log artifact) never keeps the VM from being removed.
    await Promise.resolve(hooks.failed?.(vm, err)).catch(() => undefined);
    await killVm(runCacheOf(ctx.settings), vm.id, KILL_TIMEOUT_MS, log);
    throw err;
  }
  if (hooks.handOver) disownVm(vm.id);
  return vm;
}

/** Stop a VM that passed its smoke test and remove all it left (`run --wait-exit-code`: the command has ended). */
export async function removeSmokedVm(vm: VmState, ctx: VmContext, log: Logger): Promise<void> {
  await killVm(runCacheOf(ctx.settings), vm.id, KILL_TIMEOUT_MS, log);
}
