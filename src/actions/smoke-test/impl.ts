import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as core from '@actions/core';
import { BootFailure, hostReachableIp, parseProbePort, type ProbePort, readSerialLog, smoke, type SmokeResult } from '../../commands/smoke.js';
import { vmKill } from '../../commands/vm.js';
import { openStorage } from '../../profile/settings.js';
import type { ProbeResult } from '../../runtime/probes.js';
import type { VmState } from '../../runtime/state.js';
import { UserError } from '../../util/errors.js';
import { ActionsLogger, actionSettings, input, listInput, removeLeftOwned, uploadArtifact } from '../common.js';
import { formatDuration, summaryInput, writeSummary, type Cell } from '../summary.js';
import { getVmInputs, vmChoice, type VmInputs } from '../vm-inputs.js';

/**
 * The smoke-test action: boot a stored image, run the probes (TCP ports, HTTP checks, or the command's
 * exit code) through commands/smoke.ts, output the VM's IP and serial log. The VM keeps running for later
 * steps; the post step (post.ts) always tears it down, also after a cancel. A failed probe removes the VM
 * in the main step, after its serial log went up as an artifact.
 */
export const ACCELS = ['auto', 'kvm', 'tcg'] as const;
export const STATE_VMM_ID = 'vmm-id';

export interface SmokeInputs extends VmInputs {
  tag: string;
  vmlinuxId: string;
  mem: number;
  cpu: number;
  ports: string[];
  env: string[];
  waitTcp: ProbePort[];
  waitHttp: string[];
  waitHttpStatus: number;
  waitHttpBody: string;
  expectExitCode: number | undefined;
  /** The probes' deadline, counted from the boot (the init's start), not from the step's start. */
  timeoutMs: number;
  /** The boot's own deadline: a slow boot (TCG on a busy runner) never eats the probes' time, nor theirs its. */
  bootTimeoutMs: number;
  accel: string;
  /** Write the job summary (input `summary`). */
  summary: boolean;
}

function int(name: string, v: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UserError(`input '${name}' is '${v}': give a whole number from ${min} to ${max}`);
  return Number(v);
}

export function getInputs(): SmokeInputs {
  const exit = input('expect-exit-code');
  const timeout = input('timeout', { default: '120' });
  return {
    tag: input('tag', { required: true }),
    vmlinuxId: input('vmlinux-id'),
    mem: int('mem', input('mem', { default: '256' }), 64, 1 << 20),
    cpu: int('cpu', input('cpu', { default: '1' }), 1, 64),
    ...getVmInputs(true),
    ports: listInput('ports'),
    env: listInput('env'),
    waitTcp: listInput('wait-tcp').map((p) => parseProbePort(p, "input 'wait-tcp'")),
    waitHttp: listInput('wait-http'),
    waitHttpStatus: int('wait-http-status', input('wait-http-status', { default: '200' }), 100, 599),
    waitHttpBody: input('wait-http-body'),
    expectExitCode: exit ? int('expect-exit-code', exit, 0, 255) : undefined,
    timeoutMs: int('timeout', timeout, 1, 3600) * 1000,
    // Default: timeout, at least 120 s (the CLI's --boot-timeout), so a short probe deadline never makes the boot's shorter.
    bootTimeoutMs: int('boot-timeout', input('boot-timeout', { default: String(Math.max(120, Number(timeout) || 0)) }), 1, 3600) * 1000,
    accel: input('accel', { choices: ACCELS, default: 'auto' }),
    summary: summaryInput(),
  };
}

/** When the smoke test fails, the VM's serial log goes up as an artifact (where the runner offers artifacts). */
async function uploadSerialLog(id: string, serialLog: string): Promise<void> {
  if (!process.env.ACTIONS_RUNTIME_TOKEN || !process.env.ACTIONS_RESULTS_URL) {
    core.info('no artifact service here (ACTIONS_RUNTIME_TOKEN, ACTIONS_RESULTS_URL): the serial log is not uploaded');
    return;
  }
  try {
    const r = await uploadArtifact(`firebuild-serial-${id}`, [serialLog], path.dirname(serialLog));
    core.info(`serial log uploaded as artifact firebuild-serial-${id} (${r.size ?? 0} bytes)`);
  } catch (err) {
    core.warning(`could not upload the serial log: ${(err as Error).message}`);
  }
}

/** Where a failed VM's serial log is kept: RUNNER_TEMP outlives the VM (it is emptied after the job). */
function keptLogPath(id: string): string {
  return path.join(process.env.RUNNER_TEMP || os.tmpdir(), `firebuild-serial-${id}.log`);
}

/** The serial log folded into the step's log: the whole boot, for the reader the annotation sent here. */
function foldSerialLog(id: string, text: string): void {
  // A runaway guest can write megabytes: the log shows the end, the artifact holds all of it.
  const shown = text.length > SERIAL_FOLD_MAX ? `[... ${text.length - SERIAL_FOLD_MAX} characters before this: see the artifact]\n${text.slice(-SERIAL_FOLD_MAX)}` : text;
  core.startGroup(`Serial log of VM ${id}`);
  core.info(shown.replace(/\r/g, '') || '(empty)');
  core.endGroup();
}

/**
 * A failed smoke test's serial log, wherever it failed: kept in RUNNER_TEMP (the `serial-log` output names
 * the copy, for a later `if: failure()` step), folded into the log, uploaded as an artifact.
 */
async function reportSerialLog(id: string, text: string): Promise<void> {
  const kept = keptLogPath(id);
  try {
    await fsp.writeFile(kept, text);
    core.setOutput('serial-log', kept);
  } catch (err) {
    core.warning(`could not keep the serial log: ${(err as Error).message}`);
    return foldSerialLog(id, text);
  }
  foldSerialLog(id, text);
  await uploadSerialLog(id, kept);
}

const SERIAL_FOLD_MAX = 256 * 1024;

/** `8080/tcp` -> `127.0.0.1:40123`: the host side each published guest port got (auto ports made concrete). */
function portsOutput(ports: VmState['network']['ports']): string {
  const out: Record<string, string> = {};
  for (const p of ports) out[`${p.guestPort}/${p.proto}`] ??= `${p.hostAddr}:${p.hostPort}`;
  return JSON.stringify(out);
}

function probeLine(r: ProbeResult): string {
  const tries = `${r.attempts} ${r.attempts === 1 ? 'try' : 'tries'} in ${r.ms} ms`;
  if (!r.passed) return `failed: ${r.what}: ${tries} (last: ${r.lastFailure})`;
  return `passed: ${r.what}: ${tries}${r.firstFailure ? ` (first try: ${r.firstFailure})` : ''}`;
}

export async function run(): Promise<void> {
  const i = getInputs();
  const started = Date.now();
  const log = new ActionsLogger('smoke-test');
  const settings = await actionSettings();
  const storage = openStorage(settings);
  // One use case boots the VM and runs the probes; the hooks fold its log into the runner's groups
  // (a group never nests: one ends before the next starts).
  let grouped = false;
  const group = (title?: string): void => {
    if (grouped) core.endGroup();
    grouped = title !== undefined;
    if (title) core.startGroup(title);
  };
  group(`Boot ${i.tag}`);
  let result: SmokeResult;
  try {
    result = await smoke({
      from: i.tag, ...(i.vmlinuxId ? { vmlinuxId: i.vmlinuxId } : {}), memMib: i.mem, cpus: i.cpu, env: i.env, envFiles: [],
      ports: i.ports, accel: i.accel, bootTimeoutMs: i.bootTimeoutMs, machine: vmChoice(i),
      // Saved before the VM starts: the post step tears it down even if the boot, the probes or the job fail or are cancelled.
      onCreated: (id) => core.saveState(STATE_VMM_ID, id),
    }, {
      tcp: i.waitTcp,
      http: i.waitHttp.map((url) => ({ url, status: i.waitHttpStatus, ...(i.waitHttpBody ? { body: i.waitHttpBody } : {}) })),
      ...(i.expectExitCode !== undefined ? { exitCode: i.expectExitCode } : {}),
      timeoutMs: i.timeoutMs,
    }, { settings, storage }, log, {
      booted: (up) => {
        core.setOutput('vmm-id', up.id);
        core.setOutput('ip-address', hostReachableIp(up) ?? '');
        core.setOutput('ports', portsOutput(up.network.ports));
        core.setOutput('serial-log', up.serialLog);
        if (up.bootTimes) core.info(`booted in ${up.bootTimes.initStartedAt - up.bootTimes.vmmStartedAt} ms (VMM start to the init's start line)`);
        group('Probes');
      },
      probed: (r) => core.info(probeLine(r)),
      // Before the failed VM is removed with its run cache.
      failed: async (up) => {
        group();
        await reportSerialLog(up.id, await readSerialLog(up.serialLog));
      },
      // The VM outlives this step (later steps use it; the post step removes it): from here a cancel of this
      // process no longer tears it down. Until here (boot, probes) a SIGINT/SIGTERM does.
      handOver: true,
    });
  } catch (err) {
    // A boot that failed (a kernel panic, an init that never started, the boot deadline): the VM is gone,
    // its console came back with the error.
    if (err instanceof BootFailure) {
      group();
      await reportSerialLog(err.vmId ?? 'boot', err.console);
    }
    throw err;
  } finally {
    group();
  }
  const { vm } = result;
  core.setOutput('boot-ms', String(result.bootMs));
  core.setOutput('ready-ms', String(result.readyMs));
  log.info('smoke test passed', { tag: i.tag, id: vm.id, 'boot-ms': result.bootMs, 'ready-ms': result.readyMs });
  // Every probe passed (a failed one threw above): one row each, with its tries and time.
  const probes: Cell[][] = result.probes.map((r): Cell[] => [{ code: r.what }, r.passed ? 'passed' : 'failed', `${r.attempts} ${r.attempts === 1 ? 'try' : 'tries'}, ${formatDuration(r.ms)}`]);
  const ports = vm.network.ports.map((p) => `${p.hostAddr}:${p.hostPort} -> ${p.guestPort}/${p.proto}`);
  await writeSummary({
    title: `firebuild smoke test: ${i.tag}`,
    facts: [
      ['result', probes.length ? `passed: ${probes.length} probe${probes.length === 1 ? '' : 's'}` : 'booted (no probes)'],
      ['VM', { code: vm.id }], ['backend', vm.backend], ['accel', vm.accel], ['IP', hostReachableIp(vm) ?? '-'],
      ...(ports.length ? [['ports', ports.join(', ')] as [string, Cell]] : []),
      ['boot (VMM start to init)', formatDuration(result.bootMs)],
      ['ready (VMM start to probes passed)', formatDuration(result.readyMs)],
      ['time to pass', formatDuration(Date.now() - started)],
    ],
    tables: probes.length ? [{ title: 'Probes', header: ['probe', 'result', 'tries and time'], rows: probes }] : [],
  }, i.summary);
}

/**
 * The post step: tear the VM down; never fail the job (a problem is a warning). First what a main step
 * killed outright left (its recorded VMs and temp dirs, a VM mid-boot among them), then the VM it handed on.
 */
export async function post(): Promise<void> {
  await removeLeftOwned('smoke-test');
  const id = core.getState(STATE_VMM_ID);
  if (!id) return;
  try {
    const settings = await actionSettings();
    // Gone already (a failed probe removed it in the main step): nothing to do.
    if (!(await vmKill(settings, id, 10_000, new ActionsLogger('smoke-test'), { missingOk: true }))) return;
    core.info(`VM ${id} removed`);
  } catch (err) {
    core.warning(`could not remove VM ${id}: ${(err as Error).message}: run firebuild purge on the runner`);
  }
}
