import { exitCodeOf, followConsole } from '../runtime/console.js';
import { disownVm } from '../runtime/owner.js';
import { vmmOf, type VmState } from '../runtime/state.js';
import { teardown, vmDiskFull } from '../runtime/stop.js';
import { DEFAULT_LOCK_DIR } from '../net/network.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { hasProbes, removeSmokedVm, smoke, type SmokeProbes } from './smoke.js';
import { bootVm, runCacheOf, type BootRequest, type VmContext } from './vm-boot.js';

export { parseEnvFile, type BootRequest, type VmContext } from './vm-boot.js';

/** `firebuild run`: a VM to boot, the probes it must pass, and whether it outlives this process. */
export interface RunRequest extends BootRequest {
  /** `--wait-tcp`, `--wait-http`, `--wait-exit-code` and their deadline (no probe: none of the lists, no exit code). */
  probes: SmokeProbes;
  /** Return once the VM is up (and its probes passed), leaving it running. */
  daemonize: boolean;
}

/** How a `run` ended, for the face to print (a failure is an error instead). */
export type RunResult =
  /** The command ran in the foreground and exited 0 (or the image's own init powered off). */
  | { mode: 'foreground' }
  /** `--wait-exit-code`: the command exited with the expected code; the VM is removed. */
  | { mode: 'exit-code'; vm: VmState; exitCode: number }
  /** `--daemonize`: the VM runs on, no longer owned by this process. */
  | { mode: 'daemonized'; vm: VmState };

/**
 * Boot a stored image as a microVM and, after its probes (commands/smoke.ts: a failed probe kills it):
 * with `--wait-exit-code`, remove it; with `--daemonize`, hand it over (it outlives this process);
 * otherwise follow its console in the foreground (each chunk to `onConsole`) until it ends, then remove
 * all it left on the host. The command's non-zero exit code is a UserError carrying `exitCode`; a
 * failure on a full disk says so. A SIGINT/SIGTERM until then tears the VM down (runtime/owner.ts).
 */
export async function runCommand(r: RunRequest, ctx: VmContext, log: Logger, onConsole: (chunk: string) => void): Promise<RunResult> {
  const { probes, daemonize, ...boot } = r;
  const vm = hasProbes(probes) ? (await smoke(boot, probes, ctx, log)).vm : await bootVm(boot, ctx, log);
  if (probes.exitCode !== undefined) {
    await removeSmokedVm(vm, ctx, log);
    return { mode: 'exit-code', vm, exitCode: probes.exitCode };
  }
  if (daemonize) {
    // The VM outlives this process from here: a signal no longer tears it down.
    disownVm(vm.id);
    return { mode: 'daemonized', vm };
  }
  // Foreground: stream the console until the VM ends. Ctrl-C (SIGINT) or SIGTERM: the process's cancel
  // handlers (bin/firebuild.js) tear the VM down, as they do during the boot, and exit 130/143.
  let text = '';
  for await (const chunk of followConsole(vm.serialLog, vmmOf(vm))) {
    onConsole(chunk);
    text += chunk;
  }
  const exit = exitCodeOf(text);
  // A command that failed on a full host disk (QEMU hands the write error to the guest): say so.
  const full = exit === 0 ? undefined : await vmDiskFull(vm);
  // The VM ended: everything it had on the host goes (cgroup, netns, CNI, port rules, jail, run cache), as kill does.
  await teardown(runCacheOf(ctx.settings), vm, DEFAULT_LOCK_DIR, log).catch(() => undefined);
  if (full) throw full;
  // The image's own init powers off without firebuild's exit line.
  if (exit === undefined && r.init === 'image') return { mode: 'foreground' };
  if (exit === undefined) throw new UserError('the VM ended without reporting an exit code (a crash or a kill)');
  if (exit !== 0) throw Object.assign(new UserError(`the command exited with code ${exit}`), { exitCode: exit });
  return { mode: 'foreground' };
}
