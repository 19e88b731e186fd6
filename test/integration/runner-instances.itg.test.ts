import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { runCli, tempDir } from '../helpers/cli.js';
import { importTestKernel, killAll, vmmProcessesUnder } from '../helpers/vm.js';
import { annotations, runAction, runPost, type ActionRun } from '../helpers/runner.js';
import { cgroup2Mount } from '../../src/runtime/cgroup.js';

/**
 * Two runner instances on one host (runner-setup --instances 2), each configured by its environment alone
 * as its runner's .env sets it (FIREBUILD_HOME, FIREBUILD_PORT_RANGE, FIREBUILD_CGROUP_PARENT,
 * FIREBUILD_SHARED_KERNELS, FIREBUILD_PROFILE_CONF_DIR), run the bundled build-rootfs and smoke-test at the
 * same time, as the runner runs them, with the same image tag and the same published port: both pass, each
 * store holds its image, the VMs get ports of their own instance's range, cgroups under their own subtree
 * and states in their own run cache, both boot the one shared kernel, and nothing is left afterwards.
 * QEMU (TCG) with isolated user-mode networking: no CNI.
 */
let work: string;
let cgroupRoot: string | undefined;
const parentOf = (i: number): string => `firebuild-itg-${path.basename(work)}/runner-${i}`.replace(/[^A-Za-z0-9_./-]/g, '-');
const RANGES = [[25100, 25149], [25150, 25199]] as const;
const instanceEnv = (i: number): NodeJS.ProcessEnv => ({
  FIREBUILD_HOME: path.join(work, `instance-${i}`),
  FIREBUILD_PROFILE_CONF_DIR: path.join(work, `instance-${i}`, 'profiles'),
  FIREBUILD_PORT_RANGE: `${RANGES[i - 1]![0]}-${RANGES[i - 1]![1]}`,
  FIREBUILD_CGROUP_PARENT: parentOf(i),
  FIREBUILD_SHARED_KERNELS: path.join(work, 'shared', 'kernels'),
});
const runCacheOf = (i: number): string => path.join(work, `instance-${i}`, 'run');
/** VM directories of a run cache (its entries but the build work dirs' and temporaries). */
const vmDirs = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((d) => /^[a-z0-9]{20}$/.test(d)) : []);
const cgroupsUnder = (i: number): string[] => {
  const d = path.join(cgroupRoot!, parentOf(i));
  return fs.existsSync(d) ? fs.readdirSync(d).filter((n) => fs.statSync(path.join(d, n)).isDirectory()) : [];
};

beforeAll(async () => {
  work = await tempDir('firebuild-instances-');
  cgroupRoot = await cgroup2Mount();
  // The shared kernel directory: one kernel, imported once, read by both instances (their own kernel dirs stay empty).
  expect(await importTestKernel({ FIREBUILD_HOME: path.join(work, 'shared') })).toBe(0);
});
afterAll(async () => {
  for (const i of [1, 2]) await killAll(runCacheOf(i), instanceEnv(i));
  if (cgroupRoot) {
    for (const d of [...[1, 2].map((i) => path.join(cgroupRoot!, parentOf(i))), path.join(cgroupRoot, path.dirname(parentOf(1)))]) {
      try {
        fs.rmdirSync(d);
      } catch {
        // already gone, or a VM cgroup was left (the test says so)
      }
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('two runner instances on one host', () => {
  test('build-rootfs and smoke-test run concurrently in both instances with the same tag and port: no collision, nothing left', async () => {
    expect(cgroupRoot).toBeDefined();
    // While the steps run, every VM cgroup seen under each instance's subtree (build VMs and the smoke VM).
    const seen: Set<string>[] = [new Set(), new Set()];
    const watch = setInterval(() => {
      for (const i of [1, 2]) for (const c of cgroupsUnder(i)) seen[i - 1]!.add(c);
    }, 100);
    let smokes: ActionRun[];
    try {
      const builds = await Promise.all([1, 2].map((i) => runAction('build-rootfs/index.js', { file: path.resolve('examples/hello/Dockerfile'), tags: 'examples/hello:ci', 'free-space': '32M' }, instanceEnv(i))));
      for (const b of builds) expect({ code: b.code, errors: annotations(b.stdout) }).toEqual({ code: 0, errors: [] });
      // Each store has its own image under the same tag; the kernels are the shared directory's.
      for (const i of [1, 2]) {
        const r = await runCli(['image', 'inspect', 'examples/hello:ci'], { env: instanceEnv(i) });
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({ path: expect.stringContaining(path.join(work, `instance-${i}`, 'rootfs')), metadata: { rootfs: { sha256: builds[i - 1]!.outputs.sha256 } } });
        const k = await runCli(['kernel', 'ls', '--json'], { env: instanceEnv(i) });
        expect(JSON.parse(k.stdout)).toEqual([expect.objectContaining({ id: 'default', path: path.join(work, 'shared', 'kernels', 'default') })]);
        expect(fs.readdirSync(path.join(work, `instance-${i}`, 'kernels')).filter((d) => !d.startsWith('.'))).toEqual([]);
      }
      // Both build posts: nothing to do after a normal end.
      for (const [k, b] of builds.entries()) expect((await runPost('build-rootfs/post/index.js', b.state, instanceEnv(k + 1))).code).toBe(0);

      smokes = await Promise.all([1, 2].map((i) => runAction('smoke-test/index.js', { tag: 'examples/hello:ci', ports: 'auto:8080', env: `GREETING=from-instance-${i}`, 'wait-http': 'http://127.0.0.1:auto:8080/cgi-bin/index.cgi', 'wait-http-body': `from-instance-${i}` }, instanceEnv(i))));
    } finally {
      clearInterval(watch);
    }
    for (const s of smokes) expect({ code: s.code, errors: annotations(s.stdout) }).toEqual({ code: 0, errors: [] });

    // The VMs are running now (the post step removes them): ports of their own range, their own run cache and cgroup subtree.
    for (const i of [1, 2]) {
      const s = smokes[i - 1]!;
      const id = s.outputs['vmm-id']!;
      const hostPort = (JSON.parse(s.outputs.ports!) as Record<string, string>)['8080/tcp']!;
      const port = Number(hostPort.split(':')[1]);
      expect([i, port >= RANGES[i - 1]![0] && port <= RANGES[i - 1]![1]]).toEqual([i, true]);
      expect(await get(`http://${hostPort}/cgi-bin/index.cgi`)).toMatchObject({ status: 200, body: expect.stringContaining(`from-instance-${i}`) });
      expect(vmDirs(runCacheOf(i))).toEqual([id]);
      const state = JSON.parse(fs.readFileSync(path.join(runCacheOf(i), id, 'state.json'), 'utf8')) as { cgroup?: string };
      expect(state.cgroup).toBe(path.join(cgroupRoot!, parentOf(i), id));
      expect(fs.readFileSync(path.join(state.cgroup!, 'cgroup.procs'), 'utf8').trim()).not.toBe('');
      expect(cgroupsUnder(i)).toEqual([id]);
      // Build VMs and the smoke VM lived under this instance's subtree, never the other's.
      expect(seen[i - 1]!.has(id)).toBe(true);
      expect(seen[i - 1]!.size).toBeGreaterThan(1);
    }
    expect([...seen[0]!].filter((c) => seen[1]!.has(c))).toEqual([]);
    expect(smokes[0]!.outputs['vmm-id']).not.toBe(smokes[1]!.outputs['vmm-id']);

    // The post steps, at the same time: every VM, cgroup and run cache entry goes, in both instances.
    const posts = await Promise.all([1, 2].map((i) => runPost('smoke-test/post/index.js', smokes[i - 1]!.state, instanceEnv(i))));
    for (const p of posts) expect({ code: p.code, errors: annotations(p.stdout), warnings: annotations(p.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
    for (const i of [1, 2]) {
      expect([i, vmDirs(runCacheOf(i))]).toEqual([i, []]);
      expect([i, cgroupsUnder(i)]).toEqual([i, []]);
    }
    expect(vmmProcessesUnder(work)).toEqual([]);
  }, 1_500_000);

  test('a fixed host port outside the instance range is refused in one line, and nothing is left', async () => {
    const r = await runAction('smoke-test/index.js', { tag: 'examples/hello:ci', ports: '127.0.0.1:8080:8080', 'wait-tcp': '8080' }, instanceEnv(2));
    expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 1, errors: [expect.stringMatching(/host port 8080 is outside the port range 25150-25199: publish auto:8080 \(a free port of the range\) or a host port in it$/)] });
    expect(vmDirs(runCacheOf(2))).toEqual([]);
    expect(cgroupsUnder(2)).toEqual([]);
  }, 120_000);
});
