import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildxArgv } from '../../src/engine/buildx.js';
import { buildkitOnly } from '../../src/commands/build.js';
import { vmUnsupported } from '../../src/engine/vm/plan.js';
import { parseSshMount, sshEnv, sshMounts, stepSshAgents } from '../../src/engine/vm/ssh.js';
import { MAX_FRAME, SshAgentRelay } from '../../src/engine/vm/ssh-relay.js';
import type { Step } from '../../src/dockerfile/plan-schema.js';
import { renderSshAgents } from '../../src/guest/run-config.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { checkSshAgents, parseSshFlag, sshAgentsById } from '../../src/util/ssh-agent.js';

/**
 * RUN --mount=type=ssh: the `--ssh` flag as docker build takes it, the mount as BuildKit reads it, and the
 * host relay against a real ssh-agent (started here with a fresh key): it forwards listing keys and
 * signing, and answers SSH_AGENT_FAILURE to everything else and to frames out of bounds.
 */
const where = { file: 'Dockerfile', line: 3 };
const msg = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};
const amsg = async (f: () => Promise<unknown>): Promise<string> => {
  try {
    await f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};
const step = (mounts: Record<string, string>[], env?: string[]): Step => ({ keyword: 'RUN', file: 'Dockerfile', line: 3, original: 'RUN x', args: ['x'], mounts, ...(env ? { env } : {}) } as unknown as Step);

let dir: string;
let agentSock: string;
let agentPid = 0;
let keyFile: string;
const agentEnv = (): NodeJS.ProcessEnv => ({ ...process.env, SSH_AUTH_SOCK: agentSock });

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-ssh-unit-'));
  agentSock = path.join(dir, 'agent.sock');
  const out = execFileSync('ssh-agent', ['-a', agentSock, '-s'], { encoding: 'utf8' });
  agentPid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)?.[1]);
  keyFile = path.join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fbunit', '-f', keyFile]);
  execFileSync('ssh-add', ['-q', keyFile], { env: agentEnv(), stdio: 'ignore' });
});

afterAll(() => {
  if (agentPid) process.kill(agentPid);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--ssh', () => {
  test('default and an id alone are $SSH_AUTH_SOCK; ID=SOCKET names one; bad specs are one line', () => {
    expect(parseSshFlag('default', { SSH_AUTH_SOCK: '/tmp/a.sock' })).toEqual({ id: 'default', socket: '/tmp/a.sock' });
    expect(parseSshFlag('gh', { SSH_AUTH_SOCK: '/tmp/a.sock' })).toEqual({ id: 'gh', socket: '/tmp/a.sock' });
    expect(parseSshFlag('deploy=/run/d.sock', {})).toEqual({ id: 'deploy', socket: '/run/d.sock' });
    expect(parseSshFlag('default=/run/d.sock', {})).toEqual({ id: 'default', socket: '/run/d.sock' });
    expect(msg(() => parseSshFlag('default', {}))).toBe('--ssh default: SSH_AUTH_SOCK is not set: start an ssh agent (eval $(ssh-agent); ssh-add) or give default=SOCKET_PATH');
    expect(msg(() => parseSshFlag('a b=/x', {}))).toBe("malformed --ssh: 'a b' is not a valid ssh id: use letters, digits, '_', '.' and '-'");
    expect(msg(() => parseSshFlag('k=/a.key,/b.key', {}))).toContain('give one agent socket per id');
    expect(sshAgentsById([{ id: 'a', socket: '/1' }, { id: 'a', socket: '/2' }]).get('a')?.socket).toBe('/2');
  });

  test('checked before the build: a key file is refused saying to use ssh-add; a missing socket names the id, never the path', async () => {
    await expect(checkSshAgents([{ id: 'default', socket: agentSock }])).resolves.toBeUndefined();
    const k = await amsg(() => checkSshAgents([{ id: 'deploy', socket: keyFile }]));
    expect(k).toBe("--ssh deploy: a key file is not an ssh agent: load it into an agent with ssh-add and pass the agent's socket (deploy=$SSH_AUTH_SOCK)");
    const m = await amsg(() => checkSshAgents([{ id: 'gone', socket: path.join(dir, 'nope.sock') }]));
    expect(m).toContain('--ssh gone: the agent socket cannot be reached (ENOENT)');
    expect(m).not.toContain(dir);
    expect(await amsg(() => checkSshAgents([{ id: 'd', socket: dir }]))).toContain('--ssh d: not a unix socket');
  });

  test('buildx gets --ssh ID=SOCKET; the classic builder refuses the ssh mount by name; the vm engine takes it', () => {
    const argv = buildxArgv({ dockerfile: 'Dockerfile', buildArgs: {}, labels: {}, sshAgents: [{ id: 'default', socket: '/tmp/a.sock' }] });
    expect(argv.slice(argv.indexOf('--ssh'), argv.indexOf('--ssh') + 2)).toEqual(['--ssh', 'default=/tmp/a.sock']);
    expect(buildkitOnly(step([{ type: 'ssh' }]))).toBe('RUN --mount=type=ssh');
    expect(vmUnsupported(step([{ type: 'ssh' }, { type: 'secret', id: 'x' }]))).toBeUndefined();
    expect(vmUnsupported(step([{ type: 'ssh' }, { type: 'cache', target: '/c' }]))).toBeUndefined();
  });
});

describe('RUN --mount=type=ssh, as BuildKit reads it', () => {
  test('defaults: id default, target /run/buildkit/ssh_agent.<n> counting the ssh mounts, 0600 root, not required', () => {
    expect(parseSshMount({ type: 'ssh' }, 0, where)).toEqual({ id: 'default', target: '/run/buildkit/ssh_agent.0', required: false, mode: 0o600, uid: 0, gid: 0 });
    const ms = sshMounts(step([{ type: 'ssh' }, { type: 'secret', id: 's' }, { type: 'ssh', id: 'gh' }]), '/');
    expect(ms.map((m) => [m.id, m.target])).toEqual([['default', '/run/buildkit/ssh_agent.0'], ['gh', '/run/buildkit/ssh_agent.1']]);
  });

  test('target, dst and destination; relative to the WORKDIR; mode, uid, gid, required', () => {
    expect(parseSshMount({ type: 'ssh', id: 'gh', dst: '/s.sock', mode: '0660', uid: '1000', gid: '5', required: 'true' }, 0, where)).toEqual({ id: 'gh', target: '/s.sock', required: true, mode: 0o660, uid: 1000, gid: 5 });
    expect(parseSshMount({ type: 'ssh', destination: '/d.sock' }, 0, where).target).toBe('/d.sock');
    expect(sshMounts(step([{ type: 'ssh', target: 'agent.sock' }]), '/srv')[0]!.target).toBe('/srv/agent.sock');
  });

  test('bad options are one line at the RUN', () => {
    expect(msg(() => parseSshMount({ type: 'ssh', src: '/x' }, 0, where))).toBe("RUN --mount=type=ssh does not take 'src': use id, target, required, mode, uid or gid");
    expect(msg(() => parseSshMount({ type: 'ssh', mode: '999' }, 0, where))).toContain('mode=999 is not an octal mode');
    expect(msg(() => parseSshMount({ type: 'ssh', required: 'maybe' }, 0, where))).toContain('required=maybe is not true or false');
    expect(msg(() => parseSshMount({ type: 'ssh', id: '../x' }, 0, where))).toContain('is not a valid ssh id');
    expect(msg(() => sshMounts(step([{ type: 'ssh', target: '/proc/x' }]), '/'))).toContain('is under /proc');
    expect(msg(() => sshMounts(step([{ type: 'ssh', target: '/' }]), '/'))).toContain('the target is the root directory');
  });

  test("SSH_AUTH_SOCK is the first mount's target unless the step sets it", () => {
    const ms = sshMounts(step([{ type: 'ssh', target: '/a.sock' }, { type: 'ssh' }]), '/');
    expect(sshEnv(ms, ['PATH=/bin'])).toEqual(['PATH=/bin', 'SSH_AUTH_SOCK=/a.sock']);
    expect(sshEnv(ms, ['SSH_AUTH_SOCK=/mine'])).toEqual(['SSH_AUTH_SOCK=/mine']);
    expect(sshEnv([], ['PATH=/bin'])).toEqual(['PATH=/bin']);
  });

  test('an agent not given: skipped with an info line, or one line when required; channels count the forwarded ones', async () => {
    const log = new MemoryLogger();
    const ms = sshMounts(step([{ type: 'ssh', id: 'absent' }, { type: 'ssh', target: '/b.sock', mode: '0640' }]), '/');
    const got = await stepSshAgents(ms, sshAgentsById([{ id: 'default', socket: agentSock }]), 'RUN at Dockerfile:3', where, log);
    expect(got).toEqual([{ guest: { channel: 0, target: '/b.sock', mode: 0o640, uid: 0, gid: 0 }, agent: { id: 'default', socket: agentSock } }]);
    expect(log.entries.map((e) => e.message)).toContain("RUN at Dockerfile:3: ssh agent 'absent' not given: its mount is skipped");
    const req = sshMounts(step([{ type: 'ssh', id: 'deploy', required: 'true' }]), '/');
    expect(await amsg(() => stepSshAgents(req, new Map(), 'RUN at Dockerfile:3', where, log))).toBe("RUN at Dockerfile:3: the ssh agent 'deploy' is required (required=true) and was not given: pass --ssh deploy=SOCKET (the socket of an ssh agent, e.g. deploy=$SSH_AUTH_SOCK), or in build-rootfs the input ssh");
  });

  test('the guest init gets the channel, target, octal mode, uid and gid; never a host path', () => {
    const r = renderSshAgents([{ channel: 0, target: '/run/buildkit/ssh_agent.0', mode: 0o600, uid: 0, gid: 0 }]);
    expect(r.nul.toString()).toBe('0\0/run/buildkit/ssh_agent.0\x000600\x000\x000\0');
    expect(r.sh).toBe("fb_ssh_agent '0' '/run/buildkit/ssh_agent.0' '0600' '0' '0'\n");
  });
});

/** A client of the relay: send raw bytes, read `n` answer frames. */
async function exchange(sock: string, data: Buffer, n: number): Promise<Buffer[]> {
  const c = net.connect(sock);
  await new Promise<void>((res, rej) => c.once('connect', res).once('error', rej));
  const frames: Buffer[] = [];
  let buf = Buffer.alloc(0);
  const done = new Promise<void>((res, rej) => {
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        frames.push(buf.subarray(4, 4 + len));
        buf = buf.subarray(4 + len);
      }
      if (frames.length >= n) res();
    });
    c.on('error', rej);
    c.on('close', () => res());
  });
  c.write(data);
  await done;
  c.destroy();
  return frames;
}

const frame = (type: number, body: Buffer = Buffer.alloc(0)): Buffer => {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(1 + body.length, 0);
  h[4] = type;
  return Buffer.concat([h, body]);
};
const str = (b: Buffer | string): Buffer => {
  const x = Buffer.isBuffer(b) ? b : Buffer.from(b);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(x.length, 0);
  return Buffer.concat([h, x]);
};

describe('the host relay, against a real ssh-agent', () => {
  let relay: SshAgentRelay;
  let sock: string;
  const log = new MemoryLogger();
  const hostKeys = (): string => execFileSync('ssh-add', ['-l'], { env: agentEnv(), encoding: 'utf8' });

  beforeAll(async () => {
    relay = new SshAgentRelay('default', agentSock, { name: 'firebuild.ssh.0', vsockPort: 7300 }, log);
    sock = path.join(dir, 'relay.sock');
    await relay.listen(sock);
  });
  afterAll(async () => {
    await relay.close();
  });

  test('the socket is 0600; listing keys and signing are forwarded', async () => {
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const [ids] = await exchange(sock, frame(11), 1);
    expect(ids![0]).toBe(12); // SSH2_AGENT_IDENTITIES_ANSWER
    expect(ids!.readUInt32BE(1)).toBe(1);
    const blobLen = ids!.readUInt32BE(5);
    const blob = ids!.subarray(9, 9 + blobLen);
    const [sig] = await exchange(sock, frame(13, Buffer.concat([str(blob), str('data to sign'), Buffer.alloc(4)])), 1);
    expect(sig![0]).toBe(14); // SSH2_AGENT_SIGN_RESPONSE
  });

  test('everything else is SSH_AGENT_FAILURE and never reaches the agent: remove all, remove, add, lock, extension', async () => {
    // 19 remove all, 18 remove one, 17 add, 22 lock (passphrase "x"), 27 extension, 9 (ssh1-era) remove all.
    const reqs = [frame(19), frame(18, str('k')), frame(17, str('ssh-ed25519')), frame(22, str('x')), frame(27, str('session-bind@openssh.com')), frame(9)];
    const answers = await exchange(sock, Buffer.concat(reqs), reqs.length);
    expect(answers.map((a) => [...a])).toEqual(reqs.map(() => [5]));
    // The agent still holds its key and is not locked.
    expect(hostKeys()).toContain('fbunit');
  });

  test('frames out of bounds are answered SSH_AGENT_FAILURE without being kept, and the stream stays in step', async () => {
    const big = Buffer.alloc(4 + MAX_FRAME + 1);
    big.writeUInt32BE(MAX_FRAME + 1, 0);
    big[4] = 19;
    const empty = Buffer.alloc(4);
    const answers = await exchange(sock, Buffer.concat([big, empty, frame(11)]), 3);
    expect(answers.map((a) => a[0])).toEqual([5, 5, 12]);
    expect(hostKeys()).toContain('fbunit');
  });

  test('an agent that is gone is SSH_AGENT_FAILURE, not a hang; close removes the socket', async () => {
    const other = new SshAgentRelay('gone', path.join(dir, 'no-agent.sock'), { name: 'firebuild.ssh.1', vsockPort: 7301 }, log);
    const s = path.join(dir, 'relay2.sock');
    await other.listen(s);
    const [a] = await exchange(s, frame(11), 1);
    expect([...a!]).toEqual([5]);
    await other.close();
    expect(fs.existsSync(s)).toBe(false);
    // Only ids reach the log, never the agent's path.
    expect(JSON.stringify(log.entries)).not.toContain(agentSock);
  });
});
