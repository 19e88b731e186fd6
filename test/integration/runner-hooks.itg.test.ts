import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, REPO, expectJsonResult, runCli, runCommand, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll, killVmmProcessesUnder, vmmProcessesUnder } from '../helpers/vm.js';

/**
 * The job hooks runner-setup writes (ACTIONS_RUNNER_HOOK_JOB_STARTED / _COMPLETED), run as the runner
 * runs them, after a job that left a vm-engine build running (a step that escaped the runner's process
 * tree, or a cancel the runner did not finish): the hook must leave no VM, no VMM process, no work dir
 * and no VM state, and prune the per-PR images beyond the retention.
 */
let work: string;
let env: NodeJS.ProcessEnv;
let root: string;
const BASE = 'fbtest/hookbase:1';
const runCache = (): string => path.join(work, 'home', 'run');
const buildTmp = (): string => path.join(work, 'tmp');
const listing = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

async function storedTags(): Promise<string[]> {
  const r = await runCli(['image', 'ls', '--json'], { env });
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  return (JSON.parse(r.stdout) as { tag: string }[]).map((i) => i.tag).sort();
}

beforeAll(async () => {
  work = await tempDir('firebuild-runner-hooks-');
  fs.mkdirSync(buildTmp());
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: buildTmp() };
  // The hooks as runner-setup writes them (retention 2), the wrapper running this checkout.
  root = path.join(work, 'root');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  for (const f of ['passwd', 'group', 'shadow', 'gshadow']) if (fs.existsSync(`/etc/${f}`)) fs.copyFileSync(`/etc/${f}`, path.join(root, 'etc', f));
  const s = spawnSync('bash', [path.join(REPO, 'runner-setup', 'setup.sh'), '--root', root, '--skip-packages', '--skip-kernel', '--skip-install', '--skip-runner', '--allow-tcg', '--kvm-device', path.join(work, 'no-kvm'), '--pr-image-retention', '2'], { encoding: 'utf8' });
  expect({ status: s.status, stderr: s.stderr }).toEqual({ status: 0, stderr: '' });
  expect(await importTestKernel(env)).toBe(0);
  const base = path.join(work, 'base');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '32M'], { env }));
  // Per-PR images as workflows/pr-smoke.yml tags them (pr/app:<pr>-<attempt>), oldest first; tiny (FROM scratch, no VM).
  const pr = path.join(work, 'pr');
  fs.mkdirSync(pr);
  fs.writeFileSync(path.join(pr, 'f'), 'x\n');
  fs.writeFileSync(path.join(pr, 'Dockerfile'), 'FROM scratch\nCOPY f /f\n');
  for (const t of ['pr/app:11-1', 'pr/app:12-1', 'pr/app:12-2', 'pr/app:13-1', 'pr/api:7-1']) {
    expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(pr, 'Dockerfile'), '--context', pr, '--tag', t, '--free-space', '1M'], { env }));
  }
}, 10 * 60_000);

afterAll(async () => {
  killVmmProcessesUnder(work);
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('runner-setup job hooks', () => {
  test('job-completed after a job whose build VM still runs: no VM, no VMM, no work dir, no VM state; PR images pruned to the retention', async () => {
    const dir = path.join(work, 'job');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN echo "marker-$((40 + 2))" && sleep 600\n`);
    // The job's build, in a session of its own (as a step that escaped the runner's process tree).
    const child = spawn(BIN, ['rootfs', '--engine', 'vm', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', 'fbtest/leftover:1', '--accel', 'tcg'], {
      env: { ...process.env, FIREBUILD_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stderr = '';
    child.stdout.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('marker-42')) resolve();
      });
      void exited.then(() => reject(new Error(`the build exited before its RUN ran:\n${stderr}`)));
    });
    // The test sees what the hook has to remove: a running build VM, its state, its work dir.
    expect(vmmProcessesUnder(work).length).toBeGreaterThan(0);
    expect(listing(runCache()).length).toBe(1);
    expect(listing(buildTmp()).filter((n) => n.startsWith('firebuild-vmbuild-')).length).toBe(1);

    const hook = path.join(root, 'usr/local/libexec/firebuild/job-completed.sh');
    const started = Date.now();
    const h = await runCommand('bash', ['-e', hook], { env: { ...process.env, ...env } });
    const seconds = (Date.now() - started) / 1000;
    expect({ code: h.code, stderr: h.stderr.split('\n').filter((l) => /error|warn/i.test(l)) }).toEqual({ code: 0, stderr: [] });
    const build = await exited;
    expect({
      vmmProcesses: vmmProcessesUnder(work),
      workDirs: listing(buildTmp()),
      runCache: listing(runCache()),
      // The build was stopped, not left to run on: SIGTERM, its own cleanup, exit 143.
      build: build.code ?? build.signal,
      tags: await storedTags(),
    }).toEqual({
      vmmProcesses: [],
      workDirs: [],
      runCache: [],
      build: 143,
      // The 2 newest of each PR repository; everything else untouched.
      tags: [BASE, 'pr/api:7-1', 'pr/app:12-2', 'pr/app:13-1'],
    });
    // Bounded by the grace the hook gives a build (10 s) plus the teardown: the job's end is not held up for long.
    expect(seconds).toBeLessThan(60);

    // job-started on a clean host: nothing to do, exit 0, nothing removed.
    const again = await runCommand('bash', ['-e', path.join(root, 'usr/local/libexec/firebuild/job-started.sh')], { env: { ...process.env, ...env } });
    expect(again.code).toBe(0);
    expect(await storedTags()).toEqual([BASE, 'pr/api:7-1', 'pr/app:12-2', 'pr/app:13-1']);
  }, 10 * 60_000);

  test('purge --all removes every work dir of this user, ownerless or orphaned, however young', async () => {
    // A work dir whose owner is long gone, young (plain purge leaves a young ownerless one for a minute).
    const orphan = fs.mkdtempSync(path.join(buildTmp(), 'firebuild-vmbuild-'));
    fs.writeFileSync(path.join(orphan, 'owner.json'), JSON.stringify({ pid: 999999, startTime: '1', bootId: 'x' }));
    const bare = fs.mkdtempSync(path.join(buildTmp(), 'firebuild-vmbuild-'));
    const r = await runCli(['purge', '--all'], { env });
    expect({ code: r.code, workDirs: listing(buildTmp()) }).toEqual({ code: 0, workDirs: [] });
    expect(fs.existsSync(bare)).toBe(false);
  }, 120_000);
});
