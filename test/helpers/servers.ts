import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
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
