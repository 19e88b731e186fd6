import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expectJsonResult, runCli, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll, killVmmProcessesUnder, vmmProcessesUnder } from '../helpers/vm.js';
import { annotations, cancelAsRunner, runnerFiles, runPost, startAction } from '../helpers/runner.js';

/**
 * A cancelled job, as the runner cancels it: SIGINT to the step, SIGTERM 7.5 s later, SIGKILL 2.5 s after
 * that; then the post steps run. The bundled actions (dist/) must leave nothing on the host: no VMM
 * process, no run cache entry, no cgroup, no build work directory, no tag.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const BASE = 'fbtest/cancelbase:1';
/** An image whose command never ends (CMD sleep 600): its VM runs until something stops it. */
const SLEEPER = 'fbtest/sleeper:1';
const runCache = (): string => path.join(work, 'home', 'run');
/** The file's own TMPDIR: the build's work directory is made there. */
const buildTmp = (): string => path.join(work, 'tmp');
const listing = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

const vmmProcesses = (): number[] => vmmProcessesUnder(work);

/** The cgroups of these VM ids, wherever cgroup2 is mounted. */
function cgroups(ids: string[]): string[] {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup2').map((f) => f[1]!);
  return ids.flatMap((id) => mounts.map((m) => path.join(m, 'firebuild', id))).filter((d) => fs.existsSync(d));
}

async function until(what: string, cond: () => boolean, ended: () => boolean, output: () => string): Promise<void> {
  while (!cond()) {
    if (ended()) throw new Error(`the step ended before ${what}:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  work = await tempDir('firebuild-actcancel-');
  fs.mkdirSync(buildTmp());
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: buildTmp() };
  expect(await importTestKernel(env)).toBe(0);
  // The base (no RUN: nothing boots here), and the image smoke-test boots.
  const base = path.join(work, 'base');
  fs.mkdirSync(base);
  fs.writeFileSync(path.join(base, 'Dockerfile'), `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile'), '--tag', BASE, '--free-space', '32M'], { env }));
  fs.writeFileSync(path.join(base, 'Dockerfile.sleeper'), `FROM ${BASE}\nCMD ["sleep", "600"]\n`);
  expectJsonResult(await runCli(['rootfs', '--engine', 'vm', '--dockerfile', path.join(base, 'Dockerfile.sleeper'), '--tag', SLEEPER, '--free-space', '32M'], { env }));
}, 10 * 60_000);

afterAll(async () => {
  killVmmProcessesUnder(work);
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('a job cancelled as the runner cancels it leaves nothing', () => {
  test('smoke-test, cancelled mid-boot, then its post step', async () => {
    const files = await runnerFiles();
    const main = startAction('smoke-test/index.js', { tag: SLEEPER, network: 'none', 'expect-exit-code': '0', timeout: '600' }, files, env);
    const ended = (): boolean => main.child.exitCode !== null || main.child.signalCode !== null;
    await until('it saved the VM id', () => fs.readFileSync(files.state, 'utf8').includes('vmm-id'), ended, main.output);
    const sent = await cancelAsRunner(main);
    const r = await main.done;
    // The first signal was enough: the step tore its VM down and exited 130.
    expect({ sent, code: r.code }).toEqual({ sent: ['SIGINT'], code: 130 });
    const id = r.state['vmm-id']!;
    expect(id).toMatch(/^[a-z0-9]{20}$/);
    const post = await runPost('smoke-test/post/index.js', r.state, env);
    expect({ code: post.code, errors: annotations(post.stdout) }).toEqual({ code: 0, errors: [] });
    expect({ vmm: vmmProcesses(), runCache: listing(runCache()), cgroups: cgroups([id]) }).toEqual({ vmm: [], runCache: [], cgroups: [] });
  }, 5 * 60_000);

  test('build-rootfs (engine vm), cancelled while a RUN runs', async () => {
    const dir = path.join(work, 'ctx');
    fs.mkdirSync(dir, { recursive: true });
    // The marker is computed by the shell: the step's own log line (its instruction) does not contain it.
    fs.writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE}\nRUN echo "marker-$((40 + 2))" && sleep 600\n`);
    const files = await runnerFiles();
    const main = startAction('build-rootfs/index.js', { dockerfile: path.join(dir, 'Dockerfile'), tag: 'fbtest/cancelled:1', engine: 'vm', 'step-cache': 'false' }, files, env);
    const ended = (): boolean => main.child.exitCode !== null || main.child.signalCode !== null;
    await until('its RUN ran', () => main.output().includes('marker-42'), ended, main.output);
    const ids = listing(runCache());
    // The test sees what it asserts on: the RUN's VM runs, registered, with its work directory.
    expect({ vms: ids.length, vmm: vmmProcesses().length > 0, work: listing(buildTmp()).some((n) => n.startsWith('firebuild-vmbuild-')) }).toEqual({ vms: 1, vmm: true, work: true });
    const sent = await cancelAsRunner(main);
    const r = await main.done;
    expect({ sent, code: r.code }).toEqual({ sent: ['SIGINT'], code: 130 });
    const tags = await runCli(['image', 'ls', '--json'], { env });
    expect({
      vmm: vmmProcesses(), runCache: listing(runCache()), cgroups: cgroups(ids),
      tmp: listing(buildTmp()).filter((n) => n.startsWith('firebuild-')),
      tag: (JSON.parse(tags.stdout) as { tag: string }[]).filter((t) => t.tag === 'fbtest/cancelled:1'),
    }).toEqual({ vmm: [], runCache: [], cgroups: [], tmp: [], tag: [] });
  }, 10 * 60_000);
});
