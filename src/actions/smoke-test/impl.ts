import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as core from '@actions/core';
import { smoke } from '../../commands/smoke.js';
import { vmKill } from '../../commands/vm.js';
import { openStorage } from '../../profile/settings.js';
import type { VmState } from '../../runtime/state.js';
import { UserError } from '../../util/errors.js';
import { ActionsLogger, actionSettings, input, listInput, uploadArtifact } from '../common.js';
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
  waitTcp: number[];
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
    waitTcp: listInput('wait-tcp').map((p) => int('wait-tcp', p, 1, 65535)),
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
  if (!process.env.ACTIONS_RUNTIME_TOKEN || !process.env.ACTIONS_RESULTS_URL) return;
  try {
    const r = await uploadArtifact(`firebuild-serial-${id}`, [serialLog], path.dirname(serialLog));
    core.info(`serial log uploaded as artifact firebuild-serial-${id} (${r.size ?? 0} bytes)`);
  } catch (err) {
    core.warning(`could not upload the serial log: ${(err as Error).message}`);
  }
}

/** A copy of a failed VM's serial log that outlives the VM (RUNNER_TEMP is emptied after the job). */
async function keepSerialLog(id: string, serialLog: string): Promise<string> {
  const kept = path.join(process.env.RUNNER_TEMP || os.tmpdir(), `firebuild-serial-${id}.log`);
  try {
    await fsp.copyFile(serialLog, kept);
    core.setOutput('serial-log', kept);
    return kept;
  } catch (err) {
    core.warning(`could not keep the serial log: ${(err as Error).message}`);
    return serialLog;
  }
}

export async function run(): Promise<void> {
  const i = getInputs();
  const started = Date.now();
  const log = new ActionsLogger('smoke-test');
  const settings = await actionSettings();
  const storage = openStorage(settings);
  // One use case boots the VM and runs the probes; the hooks fold its log into the runner's two groups.
  core.startGroup(`Boot ${i.tag}`);
  let vm: VmState;
  try {
    vm = await smoke({
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
        core.setOutput('ip-address', up.network.ip ?? '');
        core.setOutput('serial-log', up.serialLog);
        core.endGroup();
        core.startGroup('Probes');
      },
      // Before the failed VM is removed with its run cache: its serial log is kept in RUNNER_TEMP (the
      // `serial-log` output names the copy, for a later `if: failure()` step) and uploaded as an artifact.
      failed: async (up) => uploadSerialLog(up.id, await keepSerialLog(up.id, up.serialLog)),
      // The VM outlives this step (later steps use it; the post step removes it): from here a cancel of this
      // process no longer tears it down. Until here (boot, probes) a SIGINT/SIGTERM does.
      handOver: true,
    });
  } finally {
    core.endGroup();
  }
  // Every probe passed (a failed one threw above): one row each, what was expected of it.
  const probes: Cell[][] = [
    ...i.waitTcp.map((p): Cell[] => [`TCP 127.0.0.1:${p}`, 'accepts connections', 'passed']),
    ...i.waitHttp.map((u): Cell[] => [{ code: `GET ${u}` }, `status ${i.waitHttpStatus}${i.waitHttpBody ? `, body has "${i.waitHttpBody}"` : ''}`, 'passed']),
    ...(i.expectExitCode !== undefined ? [['exit code', String(i.expectExitCode), 'passed'] as Cell[]] : []),
  ];
  log.info('smoke test passed', { tag: i.tag, id: vm.id });
  await writeSummary({
    title: `firebuild smoke test: ${i.tag}`,
    facts: [
      ['result', probes.length ? `passed: ${probes.length} probe${probes.length === 1 ? '' : 's'}` : 'booted (no probes)'],
      ['VM', { code: vm.id }], ['backend', vm.backend], ['accel', vm.accel], ['IP', vm.network.ip ?? '-'],
      ...(i.ports.length ? [['ports', i.ports.join(', ')] as [string, Cell]] : []),
      ['time to pass', formatDuration(Date.now() - started)],
    ],
    tables: probes.length ? [{ title: 'Probes', header: ['probe', 'expected', 'result'], rows: probes }] : [],
  }, i.summary);
}

/** The post step: tear the VM down; never fail the job (a problem is a warning). */
export async function post(): Promise<void> {
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
