import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, expectJsonResult, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { ext4Tree, type Tree, changedPaths, ext4Cat } from '../helpers/trees.js';
import { importTestKernel, vmmProcessesUnder } from '../helpers/vm.js';

/**
 * RUN --mount=type=ssh with the vm engine (QEMU, TCG): a real ssh-agent on the host, started by the test
 * with a fresh key; the build VM reaches it through the guest init's relay (a unix socket at the target),
 * a virtio-serial port and the host relay, which forwards only listing keys and signing. The base is the
 * suite's offline Debian (no network for apt) with the host's own ssh-add and libcrypto copied in (the
 * host is Debian bookworm as the base is).
 */
let work: string;
let env: NodeJS.ProcessEnv;
let agentSock: string;
let agentPid: number | undefined;
let fingerprint: string;
let keyFile: string;
const BASE = 'fbtest/sshbase:1';

function writeCtx(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  const dir = path.join(work, 'ctx', name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile);
  for (const [n, from] of Object.entries(files)) fs.copyFileSync(from, path.join(dir, n));
  return path.join(dir, 'Dockerfile');
}

const vmBuild = (dockerfile: string, tag: string, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
  runCli(['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', tag, '--accel', 'tcg', ...extra], { env: { ...env, ...extraEnv } });

/** The host agent's keys, as `ssh-add -l` lists them. */
const hostKeys = (): string => execFileSync('ssh-add', ['-l'], { env: { ...process.env, SSH_AUTH_SOCK: agentSock }, encoding: 'utf8' });

async function inspect(tag: string): Promise<string> {
  const r = await runCli(['image', 'inspect', tag], { env });
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { rootfs: string }).rootfs;
}

const cat = ext4Cat;
const changed = (after: Tree, before: Tree): string[] => changedPaths(after, before);

/** Every socket file under `dir`. */
function socketsUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.existsSync(d) ? fs.readdirSync(d, { withFileTypes: true }) : []) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSocket() && p !== agentSock) out.push(p);
    }
  };
  walk(dir);
  return out;
}

beforeAll(async () => {
  work = await tempDir('firebuild-ssh-');
  fs.mkdirSync(path.join(work, 'tmp'));
  agentSock = path.join(work, 'agent.sock');
  const out = execFileSync('ssh-agent', ['-a', agentSock, '-s'], { encoding: 'utf8' });
  agentPid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)?.[1]);
  keyFile = path.join(work, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fbtest', '-f', keyFile]);
  execFileSync('ssh-add', ['-q', keyFile], { env: { ...process.env, SSH_AUTH_SOCK: agentSock }, stdio: 'ignore' });
  fingerprint = execFileSync('ssh-keygen', ['-lf', `${keyFile}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  env = { FIREBUILD_HOME: path.join(work, 'home'), TMPDIR: path.join(work, 'tmp'), FIREBUILD_DOCKER_IO_REGISTRY: '127.0.0.1:1', FIREBUILD_REGISTRY_MIRRORS: '' };
  expect(await importTestKernel(env)).toBe(0);
  const base = writeCtx('base', [
    `FROM ${process.env.FIREBUILD_TEST_BASE_IMAGE ?? 'debian:bookworm-slim'}`,
    'COPY ssh-add /usr/bin/ssh-add',
    'COPY libcrypto.so.3 /usr/lib/x86_64-linux-gnu/libcrypto.so.3',
    '',
  ].join('\n'), { 'ssh-add': '/usr/bin/ssh-add', 'libcrypto.so.3': fs.realpathSync('/usr/lib/x86_64-linux-gnu/libcrypto.so.3') });
  expectJsonResult(await runCli(['baseos', '--dockerfile', base, '--tag', BASE, '--free-space', '64M'], { env }));
}, 10 * 60_000);

afterAll(() => {
  if (agentPid) {
    try {
      process.kill(agentPid);
    } catch {
      // gone already
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

describe('RUN --mount=type=ssh with the vm engine', () => {
  test("ssh-add -l lists the host's key; ssh-add -D is refused (the key stays); mode/uid/gid and a target of the Dockerfile's; with a secret mount; a mount not given is skipped; the image keeps no socket or stub", async () => {
    const secret = path.join(work, 'tok.txt');
    fs.writeFileSync(secret, 'fbtest-ssh-secret\n');
    const dockerfile = writeCtx('uses', [
      `FROM ${BASE}`,
      `RUN --mount=type=ssh sh -c 'ssh-add -l > /listed; echo "$SSH_AUTH_SOCK" > /sock.env; stat -c "%a %u %g %F" "$SSH_AUTH_SOCK" > /sock.stat'`,
      `RUN --mount=type=ssh sh -c 'if ssh-add -D >/dev/null 2>&1; then echo removed; else echo refused; fi > /remove; ssh-add -l > /listed.after'`,
      'WORKDIR /srv',
      `RUN --mount=type=ssh,id=other,target=agent/ssh.sock,mode=0660,uid=1,gid=2 --mount=type=secret,id=tok sh -c 'ssh-add -l > /listed2; echo "$SSH_AUTH_SOCK" > /sock2.env; stat -c "%a %u %g" /srv/agent/ssh.sock > /sock2.stat; cat /run/secrets/tok > /tok'`,
      `RUN --mount=type=ssh,id=absent sh -c 'echo "$SSH_AUTH_SOCK"; if [ -e /run/buildkit/ssh_agent.0 ]; then echo present; else echo skipped; fi' > /absent`,
      '',
    ].join('\n'));
    const r = await vmBuild(dockerfile, 'fbtest/ssh:1', ['--ssh', 'default', '--ssh', `other=${agentSock}`, '--secret', `id=tok,src=${secret}`], { SSH_AUTH_SOCK: agentSock });
    expectJsonResult(r);
    const rootfs = await inspect('fbtest/ssh:1');
    expect(await cat(rootfs, '/listed')).toContain(fingerprint);
    expect(await cat(rootfs, '/sock.env')).toBe('/run/buildkit/ssh_agent.0\n');
    expect(await cat(rootfs, '/sock.stat')).toBe('600 0 0 socket\n');
    // The relay refused the removal: the guest still lists the key, and so does the host agent.
    expect(await cat(rootfs, '/remove')).toBe('refused\n');
    expect(await cat(rootfs, '/listed.after')).toContain(fingerprint);
    expect(hostKeys()).toContain(fingerprint);
    expect(await cat(rootfs, '/listed2')).toContain(fingerprint);
    expect(await cat(rootfs, '/sock2.env')).toBe('/srv/agent/ssh.sock\n');
    expect(await cat(rootfs, '/sock2.stat')).toBe('660 1 2\n');
    expect(await cat(rootfs, '/tok')).toBe('fbtest-ssh-secret\n');
    expect(await cat(rootfs, '/absent')).toBe('/run/buildkit/ssh_agent.0\nskipped\n');
    expect(r.stderr).toContain("ssh agent 'absent' not given: its mount is skipped");

    // The image is the base plus the RUNs' files: no socket, no /run/buildkit, no /srv/agent.
    const base = await inspect(BASE);
    expect(changed(await ext4Tree(rootfs), await ext4Tree(base))).toEqual(['/absent', '/listed', '/listed.after', '/listed2', '/remove', '/sock.env', '/sock.stat', '/sock2.env', '/sock2.stat', '/tok']);
    // The agent's path is in no log, the metadata or the image; no relay socket is left anywhere of the build's.
    expect(r.stdout + r.stderr).not.toContain(agentSock);
    expect(fs.readFileSync(path.join(path.dirname(rootfs), 'metadata.json'), 'utf8')).not.toContain(agentSock);
    expect(socketsUnder(work)).toEqual([]);
    expect(fs.readdirSync(path.join(work, 'tmp'))).toEqual([]);
  }, 15 * 60_000);

  test('one RUN with a secret, an ssh agent, a cache, binds from the context and a stage, and a tmpfs: each works, the secret exactly', async () => {
    const secret = path.join(work, 'all.txt');
    fs.writeFileSync(secret, 'fbtest-all-mounts-secret\n');
    const dockerfile = writeCtx('all', [
      `FROM ${BASE} AS stage`,
      'RUN mkdir -p /out && echo from-stage > /out/s.txt',
      `FROM ${BASE}`,
      'RUN --mount=type=secret,id=tok --mount=type=ssh --mount=type=cache,id=fbtest-all,target=/cache --mount=type=bind,target=/ctx --mount=type=bind,from=stage,source=/out,target=/stage --mount=type=tmpfs,target=/scratch ' +
        `sh -c 'cat /run/secrets/tok > /tok; ssh-add -l > /listed; cat /ctx/hello.txt > /ctx.out; cat /stage/s.txt > /stage.out; echo warm > /cache/w; cat /cache/w > /cache.out; echo t > /scratch/t && cat /scratch/t > /tmpfs.out'`,
      '',
    ].join('\n'));
    fs.writeFileSync(path.join(path.dirname(dockerfile), 'hello.txt'), 'from-context\n');
    const r = await vmBuild(dockerfile, 'fbtest/ssh-all:1', ['--ssh', 'default', '--secret', `id=tok,src=${secret}`], { SSH_AUTH_SOCK: agentSock });
    expectJsonResult(r);
    const rootfs = await inspect('fbtest/ssh-all:1');
    expect(await cat(rootfs, '/tok')).toBe('fbtest-all-mounts-secret\n');
    expect(await cat(rootfs, '/listed')).toContain(fingerprint);
    expect(await cat(rootfs, '/ctx.out')).toBe('from-context\n');
    expect(await cat(rootfs, '/stage.out')).toBe('from-stage\n');
    expect(await cat(rootfs, '/cache.out')).toBe('warm\n');
    expect(await cat(rootfs, '/tmpfs.out')).toBe('t\n');
    // The mounts' contents stay out of the image.
    expect(await cat(rootfs, '/cache/w')).toBe('<missing>');
    expect(await cat(rootfs, '/scratch/t')).toBe('<missing>');
    expect(await cat(rootfs, '/run/secrets/tok')).toBe('<missing>');
    expect(socketsUnder(work)).toEqual([]);
    expect(fs.readdirSync(path.join(work, 'tmp'))).toEqual([]);
  }, 15 * 60_000);

  test('a required ssh mount without --ssh fails in one line naming the id and the flag; a key file is refused in one line', async () => {
    const dockerfile = writeCtx('required', `FROM ${BASE}\nRUN --mount=type=ssh,id=deploy,required=true true\n`);
    const r = await vmBuild(dockerfile, 'fbtest/ssh-req:1');
    expect(r.code).not.toBe(0);
    const errs = r.stderr.split('\n').filter((l) => /error/i.test(l));
    expect(errs).toHaveLength(1);
    expect(errs[0]).toContain("the ssh agent 'deploy' is required (required=true) and was not given: pass --ssh deploy=SOCKET");

    const k = await vmBuild(dockerfile, 'fbtest/ssh-req:1', ['--ssh', `deploy=${keyFile}`]);
    expect(k.code).not.toBe(0);
    expect(k.stderr).toContain('--ssh deploy: a key file is not an ssh agent: load it into an agent with ssh-add');
    expect(k.stderr).not.toContain(keyFile);
    expect(socketsUnder(work)).toEqual([]);
  }, 5 * 60_000);

  test('a cancel (SIGINT) while a RUN uses the agent stops its VM and leaves no relay socket, VMM or temp dir', async () => {
    const dockerfile = writeCtx('cancel', `FROM ${BASE}\nRUN --mount=type=ssh sh -c 'ssh-add -l >/dev/null && echo "marker-$((40 + 2))" && sleep 600'\n`);
    const child = spawn(BIN, ['rootfs', '--engine', 'vm', '--dockerfile', dockerfile, '--tag', 'fbtest/ssh-cancel:1', '--accel', 'tcg', '--ssh', 'default'], {
      env: { ...process.env, FIREBUILD_LOG_LEVEL: 'info', ...env, SSH_AUTH_SOCK: agentSock },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.resume();
    let stderr = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('marker-42')) resolve();
      });
      void exited.then(() => reject(new Error(`the build exited before its RUN ran:\n${stderr}`)));
    });
    // The relay's socket exists while the RUN runs (the test sees what it asserts on).
    expect(socketsUnder(work).length).toBeGreaterThan(0);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(vmmProcessesUnder(work)).toEqual([]);
    expect(socketsUnder(work)).toEqual([]);
    expect(fs.readdirSync(path.join(work, 'tmp'))).toEqual([]);
    expect(hostKeys()).toContain(fingerprint);
  }, 5 * 60_000);

  test('the shell init refuses an ssh mount in one line', async () => {
    const dockerfile = writeCtx('shell', `FROM ${BASE}\nRUN --mount=type=ssh ssh-add -l\n`);
    const r = await vmBuild(dockerfile, 'fbtest/ssh-shell:1', ['--ssh', 'default', '--no-cache'], { SSH_AUTH_SOCK: agentSock, FIREBUILD_GUEST_INIT: 'shell' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("RUN --mount=type=ssh needs firebuild's compiled guest init");
    expect(socketsUnder(work)).toEqual([]);
  }, 5 * 60_000);
});
