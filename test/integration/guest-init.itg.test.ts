import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { effectiveCommand, mergeEnv, type RunConfig } from '../../src/guest/run-config.js';
import { SecretValue } from '../../src/util/secrets.js';
import { INIT_PATH, makeConfigDisk, prepareRootfs } from '../../src/guest/prepare.js';
import { Ext4Reader } from '../../src/rootfs/debugfs.js';
import type { ImageMetadata } from '../../src/store/metadata.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { qemuArgv, resolveAccel } from '../../src/vmm/qemu.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { debianCloudKernel } from '../helpers/vm.js';

/**
 * The guest init in real VMs: images built by firebuild from Dockerfiles, a per-VM copy with the init
 * placed by debugfs, the run configuration on a config disk, booted by QEMU (TCG here).
 */
let work: string;
let env: NodeJS.ProcessEnv;
const log = new MemoryLogger();

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

const built = new Map<string, { rootfs: string; meta: ImageMetadata }>();
async function build(name: string, dockerfile: string, files: Record<string, string | Buffer> = {}): Promise<{ rootfs: string; meta: ImageMetadata }> {
  if (built.has(name)) return built.get(name)!;
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  for (const [f, c] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), c, { mode: 0o755 });
  const r = await runCli(['rootfs', '--engine', 'docker', '--dockerfile', path.join(dir, 'Dockerfile'), '--tag', `test/${name}:1`, '--free-space', '16M'], { env });
  expect(r.stderr).not.toMatch(/^error/m);
  const out = JSON.parse(r.stdout) as { rootfs: string; metadata: string };
  const img = { rootfs: out.rootfs, meta: JSON.parse(fs.readFileSync(out.metadata, 'utf8')) as ImageMetadata };
  built.set(name, img);
  return img;
}

async function boot(kind: InitKind, name: string, img: { rootfs: string; meta: ImageMetadata }, extraEnv: string[] = [], command?: string[], extra: Partial<RunConfig> = {}): Promise<string> {
  const dir = path.join(work, `${name}-${kind}-vm`);
  fs.mkdirSync(dir);
  const copy = path.join(dir, 'rootfs.ext4');
  await prepareRootfs(img.rootfs, copy, { FIREBUILD_GUEST_INIT: kind });
  // The init placed is the one asked for: the compiled ELF, or the busybox shell script.
  const init = (await new Ext4Reader(copy).readFile(INIT_PATH)).subarray(0, 4).toString('latin1');
  expect(init).toBe(kind === 'compiled' ? '\x7fELF' : '#!/.');
  const config = path.join(dir, 'config.ext4');
  await makeConfigDisk({
    hostname: `vm-${name}`,
    net: { mode: 'none' },
    env: mergeEnv(img.meta.config.env, extraEnv),
    command: effectiveCommand(img.meta.config, command),
    user: img.meta.config.user,
    workdir: img.meta.config.workingDir,
    stopSignal: img.meta.config.stopSignal,
    ...extra,
  }, config, log);
  const k = debianCloudKernel();
  const serialLog = path.join(dir, 'serial.log');
  const argv = qemuArgv({
    kernel: k.kernel,
    initrd: k.initrd,
    append: `console=ttyS0 root=/dev/vda rw init=${INIT_PATH} quiet`,
    rootfs: copy,
    disks: [config],
    memMib: 256,
    cpus: 1,
    accel: (await resolveAccel('auto')).accel,
    serialLog,
  });
  const qemu = spawn('qemu-system-x86_64', argv, { stdio: 'ignore' });
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 120_000);
  await new Promise((r) => qemu.on('close', r));
  clearTimeout(timer);
  return fs.readFileSync(serialLog, 'utf8');
}

type InitKind = 'compiled' | 'shell';
// The compiled init (guest/init.c, built by npm run build where a C compiler exists) and the shell
// fallback (guest/firebuild-init.sh) must behave the same.
const kinds: InitKind[] = fs.existsSync(path.resolve('guest/build/firebuild-init')) ? ['compiled', 'shell'] : ['shell'];

describe.each(kinds)('firebuild init (%s)', (kind) => {
  test('runs CMD with the image ENV plus --env, as USER in WORKDIR, sets the hostname, reports the exit code and powers off', async () => {
    const img = await build('env', [
      'FROM debian:bookworm-slim',
      'RUN useradd --create-home app',
      'WORKDIR /srv/data',
      'USER app',
      'ENV FROM_IMAGE=image-value',
      'CMD ["sh", "-c", "echo RESULT user=$(id -un) pwd=$(pwd) env=$FROM_IMAGE,$FROM_FLAG host=$(hostname); ls -l /etc/profile.d/run-env.sh; exit 3"]',
      '',
    ].join('\n'));
    // The stored image is never booted read-write: the init is only in the copy.
    expect((await new Ext4Reader(img.rootfs).list()).some((e) => e.path.startsWith('/.firebuild'))).toBe(false);
    expect(kinds[0]).toBe(process.env.FIREBUILD_TEST_EXPECT_SHELL_ONLY ? 'shell' : 'compiled');
    const console = await boot(kind, 'env', img, ['FROM_FLAG=flag value']);
    expect(console).toContain('RESULT user=app pwd=/srv/data env=image-value,flag value host=vm-env');
    expect(console).toMatch(/^-rw------- .* \/etc\/profile\.d\/run-env\.sh/m);
    expect(console).toMatch(/^FIREBUILD-EXIT code=3\r?$/m);
    expect(console).toMatch(/reboot: Power down/);
  });

  test('USER by number runs as that user, with its home and groups from /etc/passwd and /etc/group', async () => {
    const img = await build('numeric', [
      'FROM debian:bookworm-slim',
      'RUN groupadd -g 2345 extra && useradd -u 1234 -m -G extra numeric',
      'USER 1234',
      'CMD ["sh", "-c", "echo RESULT $(id -un) $(id -u) home=$HOME groups=$(id -Gn)"]',
      '',
    ].join('\n'));
    const console = await boot(kind, 'numeric', img);
    expect(console).toContain('RESULT numeric 1234 home=/home/numeric groups=numeric extra');
    expect(console).toMatch(/^FIREBUILD-EXIT code=0\r?$/m);
  });

  test('a build step\'s secrets: bound read-only at their targets with the mode and owner asked (a missing mount point made), in the variable asked, exactly; the command never sees the config disk', async () => {
    const img = await build('numeric', [
      'FROM debian:bookworm-slim',
      'RUN groupadd -g 2345 extra && useradd -u 1234 -m -G extra numeric',
      'USER 1234',
      'CMD ["sh", "-c", "echo RESULT $(id -un) $(id -u) home=$HOME groups=$(id -Gn)"]',
      '',
    ].join('\n'));
    const script = [
      'for f in /run/secrets/a /deep/er/b; do echo "STAT $f $(stat -c "%a %u %g" $f) $(od -An -tx1 $f)"; done',
      'echo "ENV [$TOKEN_ENV]"',
      'if (echo x > /run/secrets/a) 2>/dev/null; then echo "WRITE rw"; else echo "WRITE ro"; fi',
      'echo "CONFIG [$(ls -A /.firebuild/config)] STAGE [$(ls -A /dev | grep firebuild)]"',
    ].join('; ');
    const console = await boot(kind, 'secrets', img, [], ['sh', '-c', script], {
      build: true,
      user: '',
      secrets: [
        { value: new SecretValue('one\n\n'), target: '/run/secrets/a', mode: 0o400, uid: 0, gid: 0 },
        { value: new SecretValue('two'), target: '/deep/er/b', mode: 0o440, uid: 1234, gid: 2345, env: 'TOKEN_ENV' },
      ],
    });
    expect(console).toMatch(/^STAT \/run\/secrets\/a 400 0 0 +6f 6e 65 0a 0a\s*$/m);
    expect(console).toMatch(/^STAT \/deep\/er\/b 440 1234 2345 +74 77 6f\s*$/m);
    expect(console).toMatch(/^ENV \[two\]\r?$/m);
    expect(console).toMatch(/^WRITE ro\r?$/m);
    expect(console).toMatch(/^CONFIG \[\] STAGE \[\]\r?$/m);
    expect(console).toMatch(/^FIREBUILD-EXIT code=0\r?$/m);
  });

  test('works in an image with no shell at all; a command after -- replaces CMD', async () => {
    // The only file: a static busybox, called as itself (no /bin/sh, no libc).
    const img = await build('noshell', 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT ["/busybox"]\nCMD ["echo", "from CMD"]\n', { busybox: fs.readFileSync('/bin/busybox') });
    const console = await boot(kind, 'noshell', img, [], ['echo', 'no shell in this image']);
    expect(console).toContain('no shell in this image');
    expect(console).not.toContain('from CMD');
    expect(console).toMatch(/^FIREBUILD-EXIT code=0\r?$/m);
  });
});
