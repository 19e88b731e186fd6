import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { lines, runCli, tempDir, expectJsonResult } from '../helpers/cli.js';
import { KERNEL_CACHE as CACHE } from '../helpers/global-setup.js';
import { killAll } from '../helpers/vm.js';

/**
 * `firebuild kernel build` from Debian's linux-source-6.1 (allnoconfig + firebuild's fragment), then the
 * example service booted with that vmlinux (no initrd, 128 MiB) under QEMU TCG. The integration global
 * setup built the same kernel into the same cache (/var/cache/firebuild-test/kernel, keyed by source and
 * fragment), so here `kernel build` only repeats make's up-to-date check: the suite builds one kernel.
 */
let work: string;
let env: NodeJS.ProcessEnv;
const runCache = (): string => path.join(work, 'home', 'run');
const errorLines = (s: string): string[] => lines(s).filter((l) => l.startsWith('error:'));

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
});
afterAll(async () => {
  await killAll(runCache(), env);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('firebuild kernel build', () => {
  test('builds an ELF vmlinux from linux-source-6.1 and the example service boots on it (128 MiB, no initrd), reachable on its port', async () => {
    const k = await runCli(['kernel', 'build', '--id', 'fc61', '--version', '6.1', '--cache-dir', CACHE], { env });
    expect({ code: k.code, errors: errorLines(k.stderr) }).toEqual({ code: 0, errors: [] });
    const ls = JSON.parse((await runCli(['kernel', 'ls', '--json'], { env })).stdout) as { id: string; metadata: { format: string; initrd?: unknown; source: string } }[];
    expect(ls).toEqual([expect.objectContaining({ id: 'fc61', metadata: expect.objectContaining({ format: 'elf', source: expect.stringContaining('linux-source-6.1') }) })]);
    expect(ls[0]!.metadata.initrd).toBeUndefined();

    expect((await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.resolve('examples/hello/Dockerfile'), '--tag', 'examples/hello:1', '--free-space', '32M'], { env })).code).toBe(0);
    const srv = net.createServer();
    const port = await new Promise<number>((resolve) => srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)));
    await new Promise((r) => srv.close(r));
    const url = `http://127.0.0.1:${port}/cgi-bin/index.cgi`;
    const r = await runCli(['run', '--from', 'examples/hello:1', '--vmlinux-id', 'fc61', '--mem', '128', '--name', 'ownkernel', '--port', `127.0.0.1:${port}:8080`, '--env', 'GREETING=built', '--daemonize', '--wait-http', url], { env });
    expectJsonResult(r);
    expect(await (await fetch(url)).text()).toBe('built from ownkernel\n');
    const vm = JSON.parse(r.stdout) as { 'vmm-id': string };
    expect((await runCli(['kill', '--vmm-id', vm['vmm-id']], { env })).code).toBe(0);
    // The guest really runs the built kernel.
    const u = await runCli(['run', '--from', 'examples/hello:1', '--vmlinux-id', 'fc61', '--mem', '128', '--network', 'none', '--', 'uname', '-r'], { env });
    expect(u.code).toBe(0);
    expect(u.stdout).toMatch(/^6\.1\.\d+$/m);
    expect(fs.readdirSync(runCache())).toEqual([]);
  }, 20 * 60_000);

  test('an extra fragment is merged over firebuild\'s; an option the source cannot enable is one error line and stores nothing', async () => {
    const frag = path.join(work, 'extra.config');
    fs.writeFileSync(frag, 'CONFIG_FIREBUILD_NO_SUCH_OPTION=y\n');
    const r = await runCli(['kernel', 'build', '--id', 'extra', '--fragment', frag, '--version', '6.1', '--cache-dir', CACHE], { env });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(/^error: the kernel configuration cannot enable CONFIG_FIREBUILD_NO_SUCH_OPTION \(unmet dependencies in this source\): fix the fragment \(.*firebuild\.config, .*extra\.config\)$/)]);
    const missing = await runCli(['kernel', 'build', '--id', 'extra', '--fragment', path.join(work, 'nope.config'), '--version', '6.1', '--cache-dir', CACHE], { env });
    expect(missing.code).toBe(2);
    expect(errorLines(missing.stderr)).toEqual([expect.stringMatching(/^error: cannot read the kernel config fragment .*nope\.config: ENOENT$/)]);
    const ls = JSON.parse((await runCli(['kernel', 'ls', '--json'], { env })).stdout) as { id: string }[];
    expect(ls.map((k) => k.id)).not.toContain('extra');
  });

  test.each([
    ['not a source tree', ['--source', '/tmp'], /^error: \/tmp is not a Linux source tree/],
    ['no such source package', ['--version', '9.9'], /^error: \/usr\/src\/linux-source-9\.9\.tar\.xz not found: install Debian's linux-source-9\.9 package/],
    ['both sources', ['--source', '/tmp', '--version', '6.1'], /^error: give --source DIR or --version V, not both/],
  ])('bad input: %s is one line, exit 2, no kernel stored', async (_n, flags, want) => {
    const r = await runCli(['kernel', 'build', '--id', 'bad', ...flags, '--cache-dir', path.join(work, 'cache')], { env });
    expect(r.code).toBe(2);
    expect(errorLines(r.stderr)).toEqual([expect.stringMatching(want)]);
    const ls = JSON.parse((await runCli(['kernel', 'ls', '--json'], { env })).stdout) as { id: string }[];
    expect(ls.map((k) => k.id)).not.toContain('bad');
  });
});
