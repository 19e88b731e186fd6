import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { lines, runCli, snapshot, tempDir } from '../helpers/cli.js';
import { makeBareRepo, serveDir, serveGit, type Served } from '../helpers/servers.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

let work: string;
let env: NodeJS.ProcessEnv;
let web: Served;
let gitd: Served;
let repo: { dir: string; shas: string[] };
let closedPort: number;

const APP_V1 = 'FROM debian:bookworm-slim\nCOPY app.txt /app/\nCOPY conf /etc/app/\nCMD ["cat", "/app/app.txt"]\n';
const APP_V2 = 'FROM debian:bookworm-slim\nCOPY app.txt /srv/\n';

beforeAll(async () => {
  work = await tempDir();
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  // Files for the http source.
  const site = path.join(work, 'site');
  fs.mkdirSync(path.join(site, 'app', 'dir'), { recursive: true });
  fs.writeFileSync(path.join(site, 'app', 'Dockerfile'), 'FROM debian:bookworm-slim\nCOPY hello.txt /hello.txt\nADD notes.txt /notes.txt\n');
  fs.writeFileSync(path.join(site, 'app', 'hello.txt'), 'hello over http\n');
  fs.writeFileSync(path.join(site, 'app', 'notes.txt'), 'notes\n');
  fs.writeFileSync(path.join(site, 'app', 'Missing.Dockerfile'), 'FROM scratch\nCOPY nope.txt /\n');
  fs.writeFileSync(path.join(site, 'app', 'Dir.Dockerfile'), 'FROM scratch\nCOPY dir /d\n');
  fs.writeFileSync(path.join(site, 'app', 'Ignored.Dockerfile'), 'FROM scratch\nCOPY notes.txt /\n');
  fs.writeFileSync(path.join(site, 'app', 'Ignored.Dockerfile.dockerignore'), 'notes.txt\n');
  fs.writeFileSync(path.join(site, 'payload.bin'), 'payload');
  web = await serveDir(site);
  // A bare repository served over smart HTTP.
  const gitRoot = path.join(work, 'git');
  fs.mkdirSync(gitRoot);
  repo = makeBareRepo(gitRoot, 'repo', [
    { files: { 'app/Dockerfile': APP_V1, 'app/app.txt': 'v1\n', 'app/conf/a.conf': 'a=1\n', 'app/.dockerignore': 'conf/*.bak\n', 'app/conf/x.bak': 'ignored' }, tag: 'v1' },
    { files: { 'app/Dockerfile': APP_V2, 'app/app.txt': 'v2\n' }, branch: 'next' },
  ]);
  gitd = await serveGit(gitRoot);
  // A port nothing listens on: bind one, then close it.
  const probe = net.createServer();
  closedPort = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as net.AddressInfo).port)));
  await new Promise((r) => probe.close(r));
});
afterAll(async () => {
  await web?.close();
  await gitd?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- plans are read as loose JSON here
async function plan(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ code: number; plan: any; stderr: string }> {
  const r = await runCli(['rootfs', '--plan', ...args], { env: { ...env, ...extraEnv } });
  return { code: r.code, plan: r.code === 0 ? JSON.parse(r.stdout) : undefined, stderr: r.stderr };
}

describe('git sources', () => {
  test('git+http://127.0.0.1:PORT/repo.git:/app/Dockerfile#v1 plans with digests of the COPY resources', async () => {
    const r = await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile#v1`]);
    expect(r.stderr).toContain('fetching git source');
    expect(r.code).toBe(0);
    expect(r.plan.source).toMatchObject({ kind: 'git', commit: repo.shas[0], dockerfile: `${gitd.url}/repo.git:/app/Dockerfile` });
    const copies = r.plan.stages[0].steps.filter((s: { keyword: string }) => s.keyword === 'COPY');
    expect(copies[0].resources).toEqual([{ source: 'app.txt', kind: 'file', path: 'app.txt', sha256: sha('v1\n'), size: 3, mode: 0o644 }]);
    expect(copies[1].resources[0]).toMatchObject({ source: 'conf', kind: 'dir', files: 1 }); // x.bak excluded by the repo's .dockerignore
    expect(copies[1].resources[0].sha256).toMatch(/^[a-f0-9]{64}$/);
  });

  test('the default branch without a fragment, a branch, and a full commit id', async () => {
    const def = await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile`]);
    expect(def.plan.source.commit).toBe(repo.shas[0]);
    const next = await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile#next`]);
    expect(next.plan.source.commit).toBe(repo.shas[1]);
    expect(next.plan.stages[0].steps[0].resources[0].sha256).toBe(sha('v2\n'));
    const byId = await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile#${repo.shas[1]}`]);
    expect(byId.code).toBe(0);
    expect(byId.plan.source.commit).toBe(repo.shas[1]);
  });

  test('checkouts are cached by URL and commit: a second plan fetches nothing', async () => {
    await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile#v1`]);
    const before = gitd.requests.filter((q) => q.method === 'POST').length;
    const again = await plan(['--dockerfile', `git+${gitd.url}/repo.git:/app/Dockerfile#v1`]);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toContain('fetching git source');
    expect(gitd.requests.filter((q) => q.method === 'POST').length).toBe(before + 1); // ls-remote only
  });

  test.each<[string, () => string, RegExp]>([
    ['a ref that does not exist', () => `git+${gitd.url}/repo.git:/app/Dockerfile#v9`, /git ref 'v9' does not exist in .* \(branches and tags: .*v1/],
    ['a URL without the :/path part', () => `git+${gitd.url}/repo.git#v1`, /has no :\/path part: write git\+http.*repo\.git:\/path\/to\/Dockerfile#v1/],
    ['a Dockerfile path missing after checkout', () => `git+${gitd.url}/repo.git:/nope/Dockerfile#v1`, /Dockerfile \/nope\/Dockerfile not found in .* at [0-9a-f]{12} \(v1\)/],
    ['a repository that does not exist', () => `git+${gitd.url}/nope.git:/Dockerfile`, /cannot read git repository/],
  ])('%s: one line, exit 2, no temp clone left', async (_n, src, want) => {
    const cache = path.join(work, 'home', 'cache');
    const before = snapshot(cache).filter((p) => !p.includes('.lock'));
    const r = await plan(['--dockerfile', src()]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr).filter((l) => l.startsWith('error:'))).toHaveLength(1);
    expect(r.stderr).toMatch(want);
    const after = snapshot(cache).filter((p) => !p.includes('.lock'));
    expect(after.filter((p) => p.includes('.tmp-'))).toEqual([]);
    if (!/not found in/.test(want.source)) expect(after).toEqual(before);
  });
});

describe('http(s) sources', () => {
  test('the context is the URL without the file name; resources are fetched with HEAD and GET', async () => {
    const r = await plan(['--dockerfile', `${web.url}/app/Dockerfile`]);
    expect(r.code).toBe(0);
    expect(r.plan.source).toMatchObject({ kind: 'http', context: `${web.url}/app/` });
    const res = r.plan.stages[0].steps.map((s: { resources: unknown[] }) => s.resources[0]);
    expect(res[0]).toEqual({ source: 'hello.txt', kind: 'file', path: 'hello.txt', url: `${web.url}/app/hello.txt`, sha256: sha('hello over http\n'), size: 16 });
    expect(res[1]).toMatchObject({ source: 'notes.txt', sha256: sha('notes\n') });
    expect(res[0].mode).toBeUndefined(); // modes are not carried over http
    expect(web.requests).toEqual(expect.arrayContaining([{ method: 'HEAD', path: '/app/hello.txt' }, { method: 'GET', path: '/app/hello.txt' }]));
  });

  test('ADD of a URL is fetched and digested (not extracted)', async () => {
    // The test server is on 127.0.0.1, a host-only address ADD URLs may only reach when allowed (net/host-only.ts).
    const r = await plan(['--dockerfile', `FROM scratch\nADD ${web.url}/payload.bin /p\n`], { FIREBUILD_ALLOW_HOST_URLS: '1' });
    expect(r.code).toBe(0);
    expect(r.plan.stages[0].steps[0].resources[0]).toEqual({ source: `${web.url}/payload.bin`, kind: 'url', url: `${web.url}/payload.bin`, sha256: sha('payload'), size: 7 });
  });

  test.each<[string, () => string[], RegExp]>([
    ['HTTP 404', () => ['--dockerfile', `${web.url}/app/Nope.Dockerfile`], /^error: HTTP 404 Not Found for GET http:\/\/127\.0\.0\.1:\d+\/app\/Nope\.Dockerfile/],
    ['an unreachable host', () => ['--dockerfile', `http://127.0.0.1:${closedPort}/Dockerfile`], /^error: cannot reach 127\.0\.0\.1:\d+ .*ECONNREFUSED/],
    ['a directory source', () => ['--dockerfile', `${web.url}/app/`], /is a directory, not a Dockerfile/],
    ['a directory listing', () => ['--dockerfile', `${web.url}/app`], /returned an HTML page/],
    ['a COPY source that is missing', () => ['--dockerfile', `${web.url}/app/Missing.Dockerfile`], /^error: .*Missing\.Dockerfile:2: HTTP 404 Not Found for HEAD .*\/app\/nope\.txt/],
    ['a COPY of a directory', () => ['--dockerfile', `${web.url}/app/Dir.Dockerfile`], /Dir\.Dockerfile:2: COPY source dir is a directory or a wildcard, which an http\(s\) context cannot list/],
    ['a source excluded by <Dockerfile>.dockerignore', () => ['--dockerfile', `${web.url}/app/Ignored.Dockerfile`], /COPY source notes\.txt is excluded by .*Ignored\.Dockerfile\.dockerignore/],
    ['ADD of a URL that is missing', () => ['--dockerfile', `FROM scratch\nADD ${web.url}/nope /x\n`], /^error: Dockerfile:2: ADD http.*\/nope: HTTP 404/],
  ])('%s: one line, exit 2', async (_n, args, want) => {
    const r = await plan(args(), { FIREBUILD_ALLOW_HOST_URLS: '1' });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(want);
  });
});

describe('local and literal sources', () => {
  test('a local path: the context is its directory, or --context', async () => {
    const dir = path.join(work, 'local');
    fs.mkdirSync(path.join(dir, 'ctx'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nCOPY f /f\n');
    fs.writeFileSync(path.join(dir, 'f'), 'beside');
    fs.writeFileSync(path.join(dir, 'ctx', 'f'), 'in ctx');
    const a = await plan(['--dockerfile', path.join(dir, 'Dockerfile')]);
    expect(a.plan.stages[0].steps[0].resources[0].sha256).toBe(sha('beside'));
    const b = await plan(['--dockerfile', path.join(dir, 'Dockerfile'), '--context', path.join(dir, 'ctx')]);
    expect(b.plan.source.context).toBe(path.join(dir, 'ctx'));
    expect(b.plan.stages[0].steps[0].resources[0].sha256).toBe(sha('in ctx'));
    const c = await plan(['--dockerfile', dir]); // a directory holding a Dockerfile
    expect(c.code).toBe(0);
  });

  test('literal text, with and without --context', async () => {
    const ok = await plan(['--dockerfile', 'FROM scratch\nLABEL a=b\n']);
    expect(ok.plan.source).toEqual({ kind: 'literal', ref: '<literal>', dockerfile: 'Dockerfile' });
    const noCtx = await plan(['--dockerfile', 'FROM scratch\nCOPY x /x\n']);
    expect(noCtx.code).toBe(2);
    expect(noCtx.stderr).toMatch(/^error: Dockerfile:2: COPY x needs a build context, and a literal Dockerfile has none: pass --context DIR/);
  });

  test('ARG V=1 before FROM and ${V:-x} in a stage resolve as Docker does', async () => {
    const r = await plan(['--dockerfile', 'ARG V=1\nFROM scratch\nLABEL before=${V:-x}\nARG V\nLABEL after=${V:-x}\n']);
    expect(r.plan.stages[0].config.labels).toEqual({ before: 'x', after: '1' });
  });

  test('a missing Dockerfile path is a clear error', async () => {
    const r = await plan(['--dockerfile', path.join(work, 'nope', 'Dockerfile')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: Dockerfile .*nope\/Dockerfile not found/);
  });
});
