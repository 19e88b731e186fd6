import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll, killVmmProcessesUnder, vmmProcessesUnder } from '../helpers/vm.js';

/**
 * Cancel of `rootfs --engine vm` while a RUN runs: the runner cancels a job with SIGINT, then SIGTERM 7.5 s
 * later, then SIGKILL 2.5 s after that (a terminal's Ctrl-C is SIGINT). The RUN's command is untrusted: on
 * the first signal its build VM must stop, and nothing the build made may stay on the host (no VMM
 * process, no work directory with its GiB-sized disks, no run cache entry, no cgroup, no tag, no partial
 * step cache entry).
 */
let work: string;
let env: NodeJS.ProcessEnv;
const BASE = 'fbtest/cancelbase:1';
const runCache = (): string => path.join(work, 'home', 'run');
const stepCache = (): string => path.join(work, 'home', 'cache', 'vm-steps');
/** The file's own TMPDIR: the build's work directory is made there (other test files build in parallel). */
const buildTmp = (): string => path.join(work, 'tmp');

const vmmProcesses = (): number[] => vmmProcessesUnder(work);

function cgroupOf(id: string): string {
  return path.join('/sys/fs/cgroup/firebuild', id);
}

const listing = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

async function storedTags(): Promise<string[]> {
  const r = await runCli(['image', 'ls', '--json'], { env });
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  return (JSON.parse(r.stdout) as { tag: string }[]).map((i) => i.tag);
}

interface Cancelled {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** The build VMs registered while the RUN ran. */
  vmIds: string[];
  /** What the runner's sequence sent before the process exited. */
  sent: NodeJS.Signals[];
}

/**
 * Start a vm-engine build whose RUN prints a marker then sleeps; once the marker is in the output (the
 * RUN runs in its VM), send `signals` in turn, each `after` ms after the one before while the process lives.
 */
async function cancelMidRun(name: string, signals: { signal: NodeJS.Signals; after: number }[]): Promise<Cancelled> {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  // The marker is computed by the shell: the step's own log line (its instruction) does not contain it.
  const before = new Set(listing(runCache()));
  fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN echo "marker-$((40 + 2))-${name}" && sleep 600\n`);
  const child = spawn(BIN, ['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', `fbtest/cancel-${name}:1`, '--accel', 'tcg'], {
    env: { ...process.env, FIREBUILD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stdout.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => (done = true));
  const running = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`marker-42-${name}`)) resolve();
    });
    void exited.then(() => reject(new Error(`the build exited before its RUN ran:\n${stderr}`)));
  });
  await running;
  const vmIds = listing(runCache()).filter((id) => !before.has(id));
  // The test sees what it asserts on: the RUN's VMM is running and registered.
  expect(vmmProcesses().length).toBeGreaterThan(0);
  expect(vmIds.length).toBe(1);
  expect(listing(buildTmp()).some((n) => n.startsWith('firebuild-vmbuild-'))).toBe(true);
  const sent: NodeJS.Signals[] = [];
  for (const s of signals) {
    if (s.after) await Promise.race([exited, new Promise((r) => setTimeout(r, s.after))]);
    if (done) break;
    child.kill(s.signal);
    sent.push(s.signal);
  }
  const { code, signal } = await exited;
  return { code, signal, stderr, vmIds, sent };
}

/** What of the build is left on the host (all empty when nothing is). */
async function leftOnHost(c: Cancelled, tag: string): Promise<Record<string, unknown>> {
  return {
    vmmProcesses: vmmProcesses(),
    tmp: listing(buildTmp()),
    runCache: listing(runCache()),
    cgroups: c.vmIds.filter((id) => fs.existsSync(cgroupOf(id))),
    partialStepCache: listing(stepCache()).filter((n) => n.includes('.tmp-') || n.startsWith('.import-')),
    tag: (await storedTags()).filter((t) => t === tag),
  };
}
const NOTHING = { vmmProcesses: [], tmp: [], runCache: [], cgroups: [], partialStepCache: [], tag: [] };

beforeAll(async () => {
  work = await tempDir('firebuild-vmcancel-');
  fs.mkdirSync(buildTmp());
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: buildTmp() };
  expect(await importTestKernel(env)).toBe(0);
  // The base, converted once from the local Docker engine's image (no RUN: nothing boots here).
  const base = path.join(work, 'base');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '32M'], { env }));
}, 10 * 60_000);

afterAll(async () => {
  // Whatever failed: no VM of this file outlives it.
  killVmmProcessesUnder(work);
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('cancel of rootfs --engine vm mid-RUN', () => {
  test('SIGINT stops the build VM and removes everything the build made; exit 130', async () => {
    const c = await cancelMidRun('int', [{ signal: 'SIGINT', after: 0 }]);
    expect({ code: c.code, signal: c.signal, left: await leftOnHost(c, 'fbtest/cancel-int:1') }).toEqual({ code: 130, signal: null, left: NOTHING });
    expect(c.stderr).toMatch(/SIGINT received/);
  }, 10 * 60_000);

  test('SIGTERM does the same; exit 143', async () => {
    const c = await cancelMidRun('term', [{ signal: 'SIGTERM', after: 0 }]);
    expect({ code: c.code, signal: c.signal, left: await leftOnHost(c, 'fbtest/cancel-term:1') }).toEqual({ code: 143, signal: null, left: NOTHING });
  }, 10 * 60_000);

  test("the runner's sequence (SIGINT, 7.5 s, SIGTERM, 2.5 s, SIGKILL), then purge: nothing is left", async () => {
    const c = await cancelMidRun('runner', [{ signal: 'SIGINT', after: 0 }, { signal: 'SIGTERM', after: 7500 }, { signal: 'SIGKILL', after: 2500 }]);
    // Whichever signal ended it (SIGINT's cleanup is normally done within the grace, so the later ones find
    // the process gone), what a SIGKILL could have cut short is purge's to remove.
    const purge = await runCli(['purge'], { env });
    expect({
      first: c.sent[0],
      ended: c.code === 130 ? 'exit 130' : c.signal === 'SIGKILL' ? 'SIGKILL' : `exit ${c.code} signal ${c.signal}`,
      purge: { code: purge.code, stderr: purge.code ? purge.stderr : '' },
      left: await leftOnHost(c, 'fbtest/cancel-runner:1'),
    }).toEqual({ first: 'SIGINT', ended: c.signal === 'SIGKILL' ? 'SIGKILL' : 'exit 130', purge: { code: 0, stderr: '' }, left: NOTHING });
  }, 10 * 60_000);

  test('SIGKILL (no handler runs) leaves the build VM and its work dir; purge removes both', async () => {
    const c = await cancelMidRun('kill', [{ signal: 'SIGKILL', after: 0 }]);
    expect(c.signal).toBe('SIGKILL');
    // The test sees what purge has to do: the work dir of the killed build is still there.
    expect(listing(buildTmp()).some((n) => n.startsWith('firebuild-vmbuild-'))).toBe(true);
    const purge = await runCli(['purge'], { env });
    expect({ code: purge.code, left: await leftOnHost(c, 'fbtest/cancel-kill:1') }).toEqual({ code: 0, left: NOTHING });
  }, 10 * 60_000);
});
