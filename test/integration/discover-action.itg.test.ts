import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { annotations, runAction, type ActionRun } from '../helpers/runner.js';
import { factsOf, renderSummary, summaryTables } from '../helpers/summary-render.js';

/**
 * The bundled discover action (dist/discover) run as the runner runs it (INPUT_*, GITHUB_EVENT_NAME and
 * GITHUB_EVENT_PATH, real GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files) against real git repositories: a
 * monorepo of several services on one shared base built in the repository, a .dockerignore, pull request
 * and push events as GitHub writes them, a shallow clone (docs/discover.md, P133, P134, P136).
 */
let work: string;
let repo: string;
const sha = (dir: string, ref = 'HEAD'): string => git(dir, 'rev-parse', ref).trim();

function git(dir: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', '-c', 'commit.gpgsign=false', '-c', 'init.defaultBranch=main', ...args], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function write(dir: string, files: Record<string, string>): void {
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
}

function commit(dir: string, msg: string): string {
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '--allow-empty', '-m', msg);
  return sha(dir);
}

/** The monorepo `shop`: no manifest, so every Dockerfile, tagged shop/<dir>:latest; api and web are FROM the base built here. */
const SHOP = {
  'base/Dockerfile': 'FROM alpine:3.19\nCOPY motd /etc/motd\n',
  'base/motd': 'welcome\n',
  'services/api/Dockerfile': 'FROM shop/base\nCOPY . /srv\nCMD ["/srv/main.sh"]\n',
  'services/api/main.sh': '#!/bin/sh\necho api\n',
  'services/api/README.md': 'the api\n',
  'services/api/.dockerignore': '*.md\ntests/\n',
  'services/web/Dockerfile': 'ARG BASE=shop/base:latest\nFROM ${BASE}\nCOPY index.html /srv/\n',
  'services/web/index.html': '<p>hi</p>\n',
  'services/worker/Dockerfile': 'FROM alpine:3.19\nCOPY run.sh /run.sh\n',
  'services/worker/run.sh': '#!/bin/sh\n',
  'docs/guide.md': 'docs\n',
};
const ALL = ['shop/base:latest', 'shop/services-api:latest', 'shop/services-web:latest', 'shop/services-worker:latest'];

beforeAll(async () => {
  work = await tempDir('firebuild-discover-action-');
  repo = path.join(work, 'shop');
  fs.mkdirSync(repo);
  write(repo, SHOP);
  git(repo, 'init', '-q');
  commit(repo, 'first');
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

/** The action on `dir` (the workspace) for an event: its payload written where GITHUB_EVENT_PATH says. */
async function discover(dir: string, event: { name: string; payload?: unknown } | undefined, inputs: Record<string, string> = {}): Promise<ActionRun & { matrix?: { include: Record<string, unknown>[] } }> {
  let eventPath = '';
  if (event?.payload !== undefined) {
    eventPath = path.join(work, `event-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(eventPath, JSON.stringify(event.payload));
  }
  const r = await runAction('discover/index.js', inputs, { GITHUB_WORKSPACE: dir, GITHUB_EVENT_NAME: event?.name ?? '', GITHUB_EVENT_PATH: eventPath });
  return { ...r, ...(r.outputs.matrix !== undefined ? { matrix: JSON.parse(r.outputs.matrix) as { include: Record<string, unknown>[] } } : {}) };
}

const tagsOf = (r: { matrix?: { include: Record<string, unknown>[] } }): unknown[] => (r.matrix?.include ?? []).map((e) => e.tag);

/** A pull request: a branch off main with `files` changed, checked out as actions/checkout does (the merge commit). */
function pullRequest(branch: string, files: Record<string, string>): { base: string; head: string; payload: unknown } {
  git(repo, 'checkout', '-q', '-b', branch, 'main');
  write(repo, files);
  const head = commit(repo, branch);
  const base = sha(repo, 'main');
  git(repo, 'checkout', '-q', '--detach', 'main');
  git(repo, 'merge', '-q', '--no-ff', '-m', `Merge ${head} into ${base}`, branch);
  return { base, head, payload: { action: 'synchronize', number: 7, pull_request: { number: 7, base: { ref: 'main', sha: base }, head: { ref: branch, sha: head } } } };
}

describe('the discover action, run as the runner runs it', () => {
  test('a pull request changing the shared base: the base and the services built FROM it, as a matrix; the summary says why for every image', async () => {
    const pr = pullRequest('base-change', { 'base/motd': 'hello\n', 'services/api/README.md': 'ignored by the .dockerignore\n' });
    const r = await discover(repo, { name: 'pull_request', payload: pr.payload });
    expect({ code: r.code, errors: annotations(r.stdout), warnings: annotations(r.stdout, 'warning') }).toEqual({ code: 0, errors: [], warnings: [] });
    expect(tagsOf(r)).toEqual(['shop/base:latest', 'shop/services-api:latest', 'shop/services-web:latest']);
    expect({ count: r.outputs.count, any: r.outputs.any }).toEqual({ count: '3', any: 'true' });
    // Usable as strategy.matrix as is: {"include": [...]}, every key a job reads.
    expect(Object.keys(r.matrix!)).toEqual(['include']);
    expect(r.matrix!.include[1]).toEqual({ tag: 'shop/services-api:latest', slug: 'shop-services-api', dockerfile: 'services/api/Dockerfile', context: 'services/api', 'build-args': {}, 'build-args-list': '', smoke: null });
    // The summary as GitHub renders it: the change, and a row per image with why.
    expect(renderSummary(r.summary)).toMatch(/^<h3>firebuild discover: 3 image\(s\) to build<\/h3>/);
    const [facts, images] = summaryTables(r.summary);
    expect(factsOf(facts!)).toEqual({
      repository: repo,
      'images from': 'every Dockerfile (no firebuild.yml)',
      change: `${pr.base.slice(0, 12)}...${pr.head.slice(0, 12)} (the pull request's base.sha and head.sha): 2 file(s) changed`,
      affected: '3 of 4 image(s)',
    });
    expect(images!.rows).toEqual([
      ['image', 'Dockerfile', 'context', 'affected', 'why'],
      ['shop/base:latest', 'base/Dockerfile', 'base', 'yes', 'base/motd of its context changed'],
      ['shop/services-api:latest', 'services/api/Dockerfile', 'services/api', 'yes', 'its base shop/base:latest is affected'],
      ['shop/services-web:latest', 'services/web/Dockerfile', 'services/web', 'yes', 'its base shop/base:latest is affected'],
      ['shop/services-worker:latest', 'services/worker/Dockerfile', 'services/worker', 'no', 'nothing it reads changed'],
    ]);
  });

  test('a pull request touching only files no image sends: any false, count 0, an empty include; summary false writes none', async () => {
    const pr = pullRequest('docs-only', { 'docs/guide.md': 'more docs\n', 'services/api/tests/t.sh': 'excluded\n', 'services/api/NOTES.md': 'excluded\n' });
    const r = await discover(repo, { name: 'pull_request', payload: pr.payload });
    expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
    expect(r.outputs).toEqual({ matrix: '{"include":[]}', count: '0', any: 'false' });
    expect(renderSummary(r.summary)).toMatch(/^<h3>firebuild discover: nothing to build<\/h3>/);
    const quiet = await discover(repo, { name: 'pull_request', payload: pr.payload }, { summary: 'false' });
    expect({ code: quiet.code, summary: quiet.summary, any: quiet.outputs.any }).toEqual({ code: 0, summary: '', any: 'false' });
  });

  test("a push: before...after; a new branch (before 000...), a force push and workflow_dispatch: every image; inputs base/head beat the event", async () => {
    git(repo, 'checkout', '-q', 'main');
    const before = sha(repo);
    write(repo, { 'services/worker/run.sh': '#!/bin/sh\necho work\n' });
    const after = commit(repo, 'worker');
    const push = await discover(repo, { name: 'push', payload: { ref: 'refs/heads/main', before, after } });
    expect({ code: push.code, errors: annotations(push.stdout), tags: tagsOf(push) }).toEqual({ code: 0, errors: [], tags: ['shop/services-worker:latest'] });
    expect(factsOf(summaryTables(push.summary)[0]!).change).toBe(`${before.slice(0, 12)}...${after.slice(0, 12)} (the push's before and after): 1 file(s) changed`);
    const created = await discover(repo, { name: 'push', payload: { ref: 'refs/heads/topic', before: '0'.repeat(40), after } });
    expect({ code: created.code, tags: tagsOf(created), count: created.outputs.count }).toEqual({ code: 0, tags: ALL, count: '4' });
    expect(factsOf(summaryTables(created.summary)[0]!).change).toBe('push creating refs/heads/topic: every image');
    // A force push: before is gone from a full clone; nothing to compare with, so every image, with a warning.
    const forced = await discover(repo, { name: 'push', payload: { ref: 'refs/heads/main', before: 'e'.repeat(40), after } });
    expect({ code: forced.code, errors: annotations(forced.stdout), warnings: annotations(forced.stdout, 'warning'), tags: tagsOf(forced) }).toEqual({
      code: 0, errors: [], warnings: [`::warning::the push's before commit eeeeeeeeeeee is not in the repository (a force push?): every image is affected`], tags: ALL,
    });
    const dispatch = await discover(repo, { name: 'workflow_dispatch', payload: { inputs: {} } });
    expect({ code: dispatch.code, tags: tagsOf(dispatch) }).toEqual({ code: 0, tags: ALL });
    // Inputs: base...head given, path given (the workspace is elsewhere).
    const given = await runAction('discover/index.js', { path: repo, base: before, head: after }, { GITHUB_WORKSPACE: work, GITHUB_EVENT_NAME: 'workflow_dispatch', GITHUB_EVENT_PATH: '' });
    expect({ code: given.code, matrix: JSON.parse(given.outputs.matrix ?? '{}') as unknown }).toEqual({ code: 0, matrix: { include: [expect.objectContaining({ tag: 'shop/services-worker:latest' })] } });
  });

  test('a manifest: its images with build args as lines and smoke settings; an unknown key or a missing Dockerfile is one annotation and no output', async () => {
    const dir = path.join(work, 'manifest');
    fs.mkdirSync(dir);
    write(dir, {
      'firebuild.yml': 'images:\n  - tag: acme/api:1\n    context: api\n    build-args: { VERSION: 1.2 }\n    smoke: { ports: "auto:8080", wait-http: "http://127.0.0.1:auto:8080/" }\n  - tag: acme/api:2\n    context: api\n',
      'api/Dockerfile': 'FROM alpine\n',
    });
    git(dir, 'init', '-q');
    commit(dir, 'first');
    const ok = await discover(dir, undefined, { all: 'true' });
    expect({ code: ok.code, errors: annotations(ok.stdout) }).toEqual({ code: 0, errors: [] });
    expect(ok.matrix!.include).toEqual([
      { tag: 'acme/api:1', slug: 'acme-api-1', dockerfile: 'api/Dockerfile', context: 'api', 'build-args': { VERSION: '1.2' }, 'build-args-list': 'VERSION=1.2', smoke: { ports: 'auto:8080', 'wait-http': 'http://127.0.0.1:auto:8080/' } },
      { tag: 'acme/api:2', slug: 'acme-api-2', dockerfile: 'api/Dockerfile', context: 'api', 'build-args': {}, 'build-args-list': '', smoke: null },
    ]);
    expect(factsOf(summaryTables(ok.summary)[0]!)).toMatchObject({ 'images from': 'firebuild.yml', change: 'input all: every image' });
    for (const [manifest, error] of [
      ['images:\n  - tag: acme/api:1\n    contxt: api\n', "::error::firebuild.yml: image acme/api:1: unknown key 'contxt': an image takes tag, dockerfile, context, build-args, smoke"],
      ['images:\n  - tag: acme/api:1\n    context: api\n    dockerfile: api/Dockerfile.prod\n', '::error::firebuild.yml: image acme/api:1: dockerfile api/Dockerfile.prod does not exist: fix the dockerfile key or add the file'],
    ] as const) {
      write(dir, { 'firebuild.yml': manifest });
      const bad = await discover(dir, undefined, { all: 'true' });
      expect({ code: bad.code, errors: annotations(bad.stdout), outputs: bad.outputs, summary: bad.summary }).toEqual({ code: 1, errors: [error], outputs: {}, summary: '' });
    }
  });

  test("a shallow clone without the pull request's base: one annotation asking for fetch-depth: 0, no output; the same clone deepened works", async () => {
    const pr = pullRequest('shallow', { 'services/web/index.html': '<p>new</p>\n' });
    // actions/checkout's default: the merge commit alone (depth 1), without either parent.
    git(repo, 'branch', '-f', 'merged', 'HEAD');
    // Named shop too: without a manifest the tags come from the directory's name.
    const clone = path.join(work, 'clone', 'shop');
    execFileSync('git', ['clone', '-q', '--depth', '1', '--branch', 'merged', `file://${repo}`, clone], { stdio: 'ignore' });
    const r = await discover(clone, { name: 'pull_request', payload: pr.payload });
    expect({ code: r.code, errors: annotations(r.stdout), outputs: r.outputs, summary: r.summary }).toEqual({
      code: 1,
      errors: [`::error::the base commit ${pr.base.slice(0, 12)} and the head commit ${pr.head.slice(0, 12)} (the pull request's base.sha and head.sha) are not in the shallow clone at ${clone}: check out with actions/checkout's fetch-depth: 0 (or fetch the history before this step)`],
      outputs: {},
      summary: '',
    });
    // What fetch-depth: 0 gives: the whole history.
    git(clone, 'fetch', '-q', '--unshallow', 'origin', 'main');
    const full = await discover(clone, { name: 'pull_request', payload: pr.payload });
    expect({ code: full.code, errors: annotations(full.stdout), tags: tagsOf(full) }).toEqual({ code: 0, errors: [], tags: ['shop/services-web:latest'] });
  });

  test('bad inputs and events are one annotation: a ref that is an option, a path that is no directory, an event commit that is not a sha', async () => {
    const cases: [Record<string, string>, { name: string; payload?: unknown } | undefined, string][] = [
      [{ base: '--output=/tmp/x' }, undefined, "::error::input 'base' is '--output=/tmp/x', not a git ref: give a branch, tag or commit"],
      [{ path: path.join(work, 'nope') }, undefined, `::error::input 'path' (${path.join(work, 'nope')}) is not a directory: give the repository's directory (the checkout)`],
      [{}, { name: 'pull_request', payload: { pull_request: { base: { sha: 'main' }, head: { sha: 'f'.repeat(40) } } } }, `::error::the event's pull_request.base.sha is "main", not a commit: give inputs base and head, or all: true`],
    ];
    for (const [inputs, event, error] of cases) {
      const r = await discover(repo, event, inputs);
      expect({ code: r.code, errors: annotations(r.stdout), outputs: r.outputs }).toEqual({ code: 1, errors: [error], outputs: {} });
    }
  });
});
