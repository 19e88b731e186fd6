import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expectJsonResult, lines, runCli, tempDir } from '../helpers/cli.js';
import { importTestKernel } from '../helpers/vm.js';

/**
 * Issue 12, item 11: a full host disk is one line naming the file system, never a hang until
 * --step-timeout (QEMU's default pauses the guest on ENOSPC) nor an internal error. Real parts: a small
 * tmpfs mounted here holds the build's work directory (TMPDIR) or the store; QEMU under TCG runs the RUN.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const mounts: string[] = [];
const BASE = 'fbtest/dfbase:1';

function smallTmpfs(name: string, size: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

function writeDockerfile(name: string, text: string): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), text);
  return path.join(dir, 'Dockerfile');
}

/** Processes whose command line mentions `p` (a QEMU left on the tmpfs). */
function processesUsing(p: string): string[] {
  return fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).flatMap((pid) => {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return cmd.includes(p) ? [`${pid} ${cmd.replace(/\0/g, ' ')}`] : [];
    } catch {
      return [];
    }
  });
}

beforeAll(async () => {
  work = await tempDir('firebuild-diskfull-');
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  expect(await importTestKernel(env)).toBe(0);
  const df = writeDockerfile('base', `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n`);
  expectJsonResult(await runCli(['baseos', '--dockerfile', df, '--tag', BASE, '--free-space', '64M'], { env }));
}, 10 * 60_000);

afterAll(() => {
  for (const m of mounts) execFileSync('umount', ['-l', m]);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('a full host disk', () => {
  test('a RUN that fills the file system of the build disk fails at once with one line naming it; nothing is left (no QEMU, no work dir, no VM)', async () => {
    // 256 MiB: the base's copy (about 140 MiB allocated) fits, the RUN's 400 MiB of random data does not.
    const small = smallTmpfs('small-run', '256m');
    const df = writeDockerfile('fill', `FROM ${BASE}\nRUN dd if=/dev/urandom of=/big bs=1M count=400 && echo wrote\n`);
    const t0 = Date.now();
    const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', df, '--tag', 't/fill:1', '--accel', 'tcg', '--step-timeout', '1800'], { env: { ...env, TMPDIR: small } });
    const seconds = (Date.now() - t0) / 1000;
    expect(r.code).toBe(2);
    const errors = lines(r.stderr).filter((l) => l.startsWith('error:'));
    expect(errors).toEqual([expect.stringMatching(new RegExp(`host disk is full: the build disk of RUN at Dockerfile:2 .* is on the tmpfs file system at ${small} .*TMPDIR`))]);
    expect(r.stderr).not.toMatch(/did not finish within/);
    // Far from the step timeout (30 min): the base's copy, a TCG boot on a busy host and the write.
    expect(seconds).toBeLessThan(240);
    expect(processesUsing(small)).toEqual([]);
    expect(fs.readdirSync(small)).toEqual([]);
    const vms = await runCli(['ls', '--json'], { env });
    expect(JSON.parse(vms.stdout)).toEqual([]);
  });

  test('preflight: a build whose base does not fit in the work directory is one line before anything runs', async () => {
    const small = smallTmpfs('small-copy', '64m');
    const df = writeDockerfile('nofit', `FROM ${BASE}\nRUN true\n`);
    const r = await runCli(['rootfs', '--engine', 'vm', '--dockerfile', df, '--tag', 't/nofit:1', '--accel', 'tcg'], { env: { ...env, TMPDIR: small } });
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('error:'))).toEqual([expect.stringMatching(new RegExp(`not enough disk space for the build's copy of .*rootfs\\.ext4: it needs about .* on the tmpfs file system at ${small} .*TMPDIR`))]);
    expect(r.stderr).not.toMatch(/VM starting/);
    expect(fs.readdirSync(small)).toEqual([]);
  });

  // Depends on the userspace ext4 writer (helpers w1/w2): it turns ENOSPC while writing the image into one UserError.
  test('conversion into a store on a full file system: exit 2 and one line about disk space, no internal error', async () => {
    const store = smallTmpfs('small-store', '64m');
    const df = writeDockerfile('conv', `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}\nRUN true\n`);
    const r = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', df, '--tag', 't/conv:1'], { env: { FIREBUILD_HOME: store, TMPDIR: store } });
    const errors = lines(r.stderr).filter((l) => l.startsWith('error:'));
    expect({ code: r.code, errors }).toEqual({ code: 2, errors: [expect.stringMatching(/disk|space/i)] });
    const tags = path.join(store, 'rootfs', 't');
    expect(fs.existsSync(tags) ? fs.readdirSync(tags).filter((n) => !n.startsWith('.')) : []).toEqual([]);
  });
});
