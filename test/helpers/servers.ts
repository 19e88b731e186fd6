import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export interface Served {
  url: string;
  port: number;
  requests: { method: string; path: string }[];
  close(): Promise<void>;
}

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** Serves `dir` over HTTP on 127.0.0.1 (GET/HEAD, 404s, an HTML listing for directories). */
export async function serveDir(dir: string): Promise<Served> {
  const requests: Served['requests'] = [];
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requests.push({ method: req.method ?? '', path: p });
    const file = path.join(dir, path.normalize(p));
    if (!file.startsWith(dir)) {
      res.writeHead(403).end();
      return;
    }
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (!st) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (st.isDirectory()) {
      const body = `<html><body>${fs.readdirSync(file).map((n) => `<a href="${n}">${n}</a>`).join('\n')}</body></html>`;
      res.writeHead(200, { 'content-type': 'text/html' }).end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, port, requests, close: () => new Promise((r) => server.close(() => r())) };
}

/** Serves bare repositories under `root` with git's smart HTTP protocol (`git http-backend` as CGI). */
export async function serveGit(root: string): Promise<Served> {
  const requests: Served['requests'] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    requests.push({ method: req.method ?? '', path: u.pathname });
    const child = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: u.pathname,
        QUERY_STRING: u.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        HTTP_CONTENT_ENCODING: req.headers['content-encoding'] ?? '',
        GIT_PROTOCOL: (req.headers['git-protocol'] as string | undefined) ?? '',
        REMOTE_ADDR: '127.0.0.1',
        REMOTE_USER: 'test',
      },
    });
    req.pipe(child.stdin);
    let head = Buffer.alloc(0);
    let headerDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headerDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      headerDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString().split('\r\n')) {
        const i = line.indexOf(':');
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
        else res.setHeader(k, v);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    child.stdout.on('end', () => res.end());
    child.on('error', () => res.writeHead(500).end());
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, port, requests, close: () => new Promise((r) => server.close(() => r())) };
}

/** A bare repository `<root>/<name>.git` made from commits of file maps; tags name commits. */
export function makeBareRepo(root: string, name: string, commits: { files: Record<string, string>; tag?: string; branch?: string }[]): { dir: string; shas: string[] } {
  const work = path.join(root, `${name}.work`);
  fs.mkdirSync(work, { recursive: true });
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: work, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } }).trim();
  git('init', '-q', '-b', 'main');
  const shas: string[] = [];
  for (const c of commits) {
    if (c.branch) git('checkout', '-q', '-B', c.branch);
    for (const [f, content] of Object.entries(c.files)) {
      fs.mkdirSync(path.dirname(path.join(work, f)), { recursive: true });
      fs.writeFileSync(path.join(work, f), content);
    }
    git('add', '-A');
    git('commit', '-q', '-m', `commit ${shas.length}`);
    shas.push(git('rev-parse', 'HEAD'));
    if (c.tag) git('tag', '-a', c.tag, '-m', c.tag);
  }
  git('checkout', '-q', 'main');
  const dir = path.join(root, `${name}.git`);
  execFileSync('git', ['clone', '-q', '--bare', work, dir]);
  fs.rmSync(work, { recursive: true, force: true });
  return { dir, shas };
}

export interface Throttled {
  /** The TCP port it listens on (0 when it listens on a unix socket). */
  port: number;
  /** Bytes passed on so far: `up` from the clients to the target, `down` back. */
  bytes: { up: number; down: number };
  /** The first 64 KiB each connection's target sent back, as text (e.g. to read an id from a JSON answer). */
  heads: string[];
  close(): Promise<void>;
}

/**
 * A slow path to a server: a TCP (or, with `listen`, a unix socket) proxy that passes the bytes of every
 * connection on, in both directions, at about `bytesPerSecond` each, to `target` (a host and port, or a unix
 * socket: the Docker engine's). Raw bytes, no HTTP parsing: what the client sends (its Host header too)
 * reaches the target unchanged, so a registry's upload locations point back through the proxy.
 */
export async function throttledProxy(target: net.NetConnectOpts, o: { bytesPerSecond: number; listen?: string }): Promise<Throttled> {
  const bytes = { up: 0, down: 0 };
  const heads: string[] = [];
  const sockets = new Set<net.Socket>();
  const slowPipe = (from: net.Socket, to: net.Socket, dir: 'up' | 'down', onChunk?: (c: Buffer) => void): void => {
    from.on('data', (c: Buffer) => {
      bytes[dir] += c.length;
      onChunk?.(c);
      to.write(c);
      from.pause();
      setTimeout(() => from.resume(), Math.ceil((c.length * 1000) / o.bytesPerSecond));
    });
    from.on('end', () => to.end());
  };
  const server = net.createServer((client) => {
    const up = net.connect(target);
    sockets.add(client).add(up);
    const head = heads.push('') - 1;
    slowPipe(client, up, 'up');
    slowPipe(up, client, 'down', (c) => {
      if (heads[head]!.length < 64 << 10) heads[head] += c.toString('latin1');
    });
    for (const [a, b] of [[client, up], [up, client]] as const) {
      a.on('error', () => b.destroy());
      // Ended, not destroyed: what is still buffered for the other side reaches it.
      a.on('close', () => {
        sockets.delete(a);
        b.end();
      });
    }
  });
  await new Promise<void>((resolve) => (o.listen ? server.listen(o.listen, resolve) : server.listen(0, '127.0.0.1', resolve)));
  const port = o.listen ? 0 : (server.address() as AddressInfo).port;
  return {
    port, bytes, heads,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

export interface Registry {
  addr: string;
  storage: string;
  stop(): Promise<void>;
}

/**
 * A docker-registry (distribution) of the test's own on `addr`, its storage in `storage` (so a test can
 * corrupt a blob as a disk would), deletes enabled; with `htpasswd` (a file of user:bcrypt lines) it asks
 * for Basic credentials. Answers before this returns.
 */
export async function startRegistry(addr: string, storage: string, o: { htpasswd?: string; confDir?: string } = {}): Promise<Registry> {
  const conf = path.join(o.confDir ?? storage, `registry-${addr.replace(/[^0-9]/g, '-')}.yml`);
  fs.mkdirSync(path.dirname(conf), { recursive: true });
  fs.writeFileSync(conf, [
    'version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${storage}`, '  delete:', '    enabled: true',
    ...(o.htpasswd ? ['auth:', '  htpasswd:', '    realm: firebuild-test', `    path: ${o.htpasswd}`] : []),
    'http:', `  addr: ${addr}`, '',
  ].join('\n'));
  const child = spawn('docker-registry', ['serve', conf], { stdio: 'ignore' });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  for (let i = 0; i < 100; i++) {
    if (await fetch(`http://${addr}/v2/`).then((r) => r.status === (o.htpasswd ? 401 : 200)).catch(() => false)) return { addr, storage, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`docker-registry on ${addr} did not start`);
}
