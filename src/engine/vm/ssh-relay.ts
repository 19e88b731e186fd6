import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import type { GuestChannel } from '../../vmm/backend.js';
import type { Logger } from '../../util/logger.js';

/**
 * The host side of a forwarded ssh agent (RUN --mount=type=ssh): a unix socket the VMM connects to (QEMU's
 * virtio-serial chardev) or Firecracker's vsock hands the guest's connections to. On every connection the
 * guest sends agent messages, each one frame (uint32 length, big-endian, then the body whose first byte is
 * the message type), and reads one frame back per message, in order. The guest is untrusted:
 *  - a frame is at most MAX_FRAME bytes; a bigger (or empty) one is read past without being kept and
 *    answered SSH_AGENT_FAILURE, as is an agent's answer that would be bigger;
 *  - only SSH2_AGENTC_REQUEST_IDENTITIES (11) and SSH2_AGENTC_SIGN_REQUEST (13) reach the agent; every
 *    other message (add or remove identities, lock, unlock, extensions) is answered SSH_AGENT_FAILURE (5);
 *  - the agent's socket is the one the host named (`--ssh ID=SOCKET`): nothing from the guest is a path;
 *  - logs name the agent by its id only.
 * Each forwarded message opens its own connection to the agent, so no state of the agent's carries over.
 */

export const MAX_FRAME = 256 * 1024;
export const SSH_AGENT_FAILURE = 5;
export const SSH2_AGENTC_REQUEST_IDENTITIES = 11;
export const SSH2_AGENTC_SIGN_REQUEST = 13;
const FORWARDED = new Set([SSH2_AGENTC_REQUEST_IDENTITIES, SSH2_AGENTC_SIGN_REQUEST]);
/** How long the agent may take to answer one message (a key added with ssh-add -c asks the user first). */
const AGENT_TIMEOUT_MS = 60_000;

const FAILURE = Buffer.from([0, 0, 0, 1, SSH_AGENT_FAILURE]);

/** Reads exact byte counts from a socket, with its flow control (nothing is read ahead beyond a chunk). */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  constructor(sock: net.Socket) {
    this.it = (sock as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  private async more(): Promise<boolean> {
    const r = await this.it.next();
    if (r.done) return false;
    this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : r.value;
    return true;
  }

  /** `n` bytes, or undefined at the end of the stream. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) if (!(await this.more())) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Drop `n` bytes without keeping them; false at the end of the stream. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    for (;;) {
      const take = Math.min(left, this.buf.length);
      this.buf = this.buf.subarray(take);
      left -= take;
      if (left === 0) return true;
      if (!(await this.more())) return false;
    }
  }
}

/** One message to the agent and its one answer (a whole frame), or FAILURE. */
function askAgent(socketPath: string, frame: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    let got: Buffer = Buffer.alloc(0);
    let done = false;
    const finish = (b: Buffer): void => {
      if (done) return;
      done = true;
      c.destroy();
      resolve(b);
    };
    c.setTimeout(AGENT_TIMEOUT_MS, () => finish(FAILURE));
    c.on('error', () => finish(FAILURE));
    c.on('close', () => finish(FAILURE));
    c.on('connect', () => c.write(frame));
    c.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < 4) return;
      const len = got.readUInt32BE(0);
      if (len === 0 || len > MAX_FRAME) return finish(FAILURE);
      if (got.length >= 4 + len) finish(got.subarray(0, 4 + len));
    });
  });
}

/** A forwarded agent's host relay: one GuestChannel, listening where the backend says. */
export class SshAgentRelay implements GuestChannel {
  readonly name: string;
  readonly vsockPort: number;
  private readonly servers: net.Server[] = [];
  private readonly conns = new Set<net.Socket>();
  private readonly paths: string[] = [];
  /** What the relay did, for the log at the end and the tests. */
  readonly counts = { forwarded: 0, refused: 0 };

  constructor(
    readonly id: string,
    private readonly agentSocket: string,
    channel: { name: string; vsockPort: number },
    private readonly log: Logger,
  ) {
    this.name = channel.name;
    this.vsockPort = channel.vsockPort;
  }

  async listen(socketPath: string, owner?: { uid: number; gid: number }): Promise<void> {
    await fsp.rm(socketPath, { force: true });
    const srv = net.createServer((c) => this.serve(c));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(socketPath, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    srv.on('error', (err) => this.log.debug(`ssh agent '${this.id}': relay error`, { error: err.message }));
    this.servers.push(srv);
    this.paths.push(socketPath);
    // Only the VMM (this user, or the jail's) connects.
    await fsp.chmod(socketPath, 0o600);
    if (owner) await fsp.chown(socketPath, owner.uid, owner.gid);
  }

  private serve(c: net.Socket): void {
    this.conns.add(c);
    c.on('close', () => this.conns.delete(c));
    c.on('error', () => undefined);
    void this.loop(c).catch(() => undefined).finally(() => c.destroy());
  }

  private async loop(c: net.Socket): Promise<void> {
    const r = new ByteReader(c);
    for (;;) {
      const head = await r.read(4);
      if (!head) return;
      const len = head.readUInt32BE(0);
      let answer: Buffer = FAILURE;
      if (len === 0 || len > MAX_FRAME) {
        this.counts.refused++;
        this.log.debug(`ssh agent '${this.id}': a message of ${len} bytes refused (at most ${MAX_FRAME})`);
        if (!(await r.skip(len))) return;
      } else {
        const body = await r.read(len);
        if (!body) return;
        const type = body[0]!;
        if (FORWARDED.has(type)) {
          this.counts.forwarded++;
          answer = await askAgent(this.agentSocket, Buffer.concat([head, body]));
        } else {
          this.counts.refused++;
          this.log.debug(`ssh agent '${this.id}': message type ${type} refused (only listing keys and signing are forwarded)`);
        }
      }
      if (c.destroyed) return;
      if (!c.write(answer)) await new Promise((res) => {
        c.once('drain', res);
        c.once('close', res);
      });
    }
  }

  /** Stop listening, drop every connection, remove the sockets. */
  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await Promise.all(this.servers.splice(0).map((s) => new Promise((res) => s.close(res))));
    for (const p of this.paths.splice(0)) await fsp.rm(p, { force: true }).catch(() => undefined);
  }
}
