import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { NoOperationTraceWriter, convertWorkflowTemplate, parseWorkflow } from '@actions/workflow-parser';
import { convertActionTemplate, parseAction } from '@actions/workflow-parser/actions/index';
import { parse as parseYaml } from 'yaml';
import { REPO } from '../helpers/cli.js';
import { discover } from '../../src/commands/discover.js';
import { MemoryLogger } from '../../src/util/logger.js';

/** The ready-made workflows and every action.yml, checked by GitHub's own workflow parser. */
const WORKFLOWS = fs.readdirSync(path.join(REPO, 'workflows')).filter((f) => f.endsWith('.yml'));
const ACTION_DIRS = ['.', ...fs.readdirSync(REPO).filter((d) => fs.existsSync(path.join(REPO, d, 'action.yml')) && d !== 'node_modules')];

describe('workflows/', () => {
  test.each(WORKFLOWS)('%s parses and converts without errors', async (file) => {
    const content = fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8');
    const parsed = parseWorkflow({ name: file, content }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    const template = await convertWorkflowTemplate(parsed.context, parsed.value!);
    expect((template.errors ?? []).map((e) => e.Message)).toEqual([]);
    expect(template.jobs.length).toBeGreaterThan(0);
  });

  test.each(['pr-smoke.yml', 'pr-smoke-hosted.yml'])('pull-request workflow %s follows the security model: pull_request (never pull_request_target), a warm-up on default-branch pushes, read-only token, no secrets', (file) => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { on: Record<string, { branches?: string[]; tags?: string[] }>; permissions: Record<string, string> };
    const text = fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8');
    expect(Object.keys(wf.on).sort()).toEqual(['pull_request', 'push']);
    // The warm-up: pushes to the default branch only (no tags: releases are release.yml's).
    expect(wf.on.push).toMatchObject({ branches: ['main'] });
    expect(wf.on.push?.tags).toBeUndefined();
    expect(wf.permissions).toEqual({ contents: 'read' });
    expect(text).not.toMatch(/\$\{\{\s*secrets\./);
  });

  test.each(WORKFLOWS)('%s: jobs of pull requests never push the registry step cache (cache-to); trusted jobs that do have packages: write', (file) => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { on: Record<string, unknown>; jobs: Record<string, { if?: string; permissions?: Record<string, string>; steps?: { uses?: string; with?: Record<string, string> }[] }> };
    for (const [name, job] of Object.entries(wf.jobs)) {
      const pushes = (job.steps ?? []).some((st) => st.uses?.includes('/build-rootfs@') && st.with?.['cache-to']);
      const forPullRequests = /github\.event_name == 'pull_request'/.test(job.if ?? '') || (Object.keys(wf.on).length === 1 && 'pull_request' in wf.on);
      if (forPullRequests) expect([file, name, pushes]).toEqual([file, name, false]);
      if (pushes) expect([file, name, job.permissions?.packages]).toEqual([file, name, 'write']);
    }
  });

  test.each(WORKFLOWS)('%s never runs on pull_request_target', (file) => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { on: Record<string, unknown> };
    expect(Object.keys(wf.on)).not.toContain('pull_request_target');
    expect(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')).not.toMatch(/^\s*pull_request_target\s*:/m);
  });

  test('self-hosted jobs are split into pools: pull requests on firebuild-pr, trusted jobs (release, warm-up) on firebuild-release, never both, never the shared label', () => {
    const pools: Record<string, string[]> = {};
    for (const file of WORKFLOWS) {
      const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { on: Record<string, unknown>; jobs: Record<string, { if?: string; 'runs-on': string | string[] }> };
      for (const [name, job] of Object.entries(wf.jobs)) {
        const labels = ([] as string[]).concat(job['runs-on']);
        if (!labels.includes('self-hosted')) continue;
        expect([file, name, labels.includes('firebuild')]).toEqual([file, name, false]);
        const pool = labels.filter((l) => /^firebuild-/.test(l));
        expect([file, name, pool.length]).toEqual([file, name, 1]);
        // A job on the PR pool runs only for pull requests; every other event's job is trusted.
        // (`github.event_name == 'pull_request'`, alone or as the first of conditions joined by && only.)
        const prOnly = /^github\.event_name == 'pull_request'( && [^|]*)?$/.test(job.if ?? '') || (Object.keys(wf.on).length === 1 && 'pull_request' in wf.on);
        expect([file, name, pool[0]]).toEqual([file, name, prOnly ? 'firebuild-pr' : 'firebuild-release']);
        (pools[pool[0]!] ??= []).push(`${file}:${name}`);
      }
    }
    expect(pools).toEqual({ 'firebuild-pr': ['pr-smoke.yml:smoke'], 'firebuild-release': ['pr-smoke.yml:warm-up', 'release.yml:release'] });
  });

  /** A job's pool check (its first step), run by bash as the runner would, with the marker at `marker`. */
  function poolCheck(file: string, job: string, marker: string | undefined): { status: number | null; errors: string[] } {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { jobs: Record<string, { steps: { name?: string; run?: string }[] }> };
    const first = wf.jobs[job]!.steps[0]!;
    expect(first.name).toBe('Refuse the PR pool');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-'));
    try {
      const pool = path.join(dir, 'pool');
      if (marker !== undefined) fs.writeFileSync(pool, `${marker}\n`);
      expect(first.run).toContain('/etc/firebuild/pool');
      const r = spawnSync('bash', ['-e', '-c', first.run!.replaceAll('/etc/firebuild/pool', pool)], { env: { PATH: process.env.PATH, RUNNER_NAME: 'runner-7' }, encoding: 'utf8' });
      return { status: r.status, errors: r.stdout.split('\n').filter((l) => l.startsWith('::error')) };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  test.each([['release.yml', 'release'], ['pr-smoke.yml', 'warm-up']])('%s (%s) refuses to run on the PR pool, or on a runner of no pool, with one annotation', (file, job) => {
    expect(poolCheck(file, job, 'release')).toEqual({ status: 0, errors: [] });
    for (const marker of ['pr', undefined, '']) {
      const r = poolCheck(file, job, marker);
      expect([marker, r.status, r.errors.length]).toEqual([marker, 1, 1]);
      expect(r.errors[0]).toMatch(/^::error title=firebuild pool::runner runner-7 is in pool '(pr|none)', not the release pool: .*--pool release/);
    }
  });

  test('release.yml lower-cases the owner and repository before they become tags and registry references', async () => {
    const { parseTag } = await import('../../src/store/tag.js');
    const { normalizeRef } = await import('../../src/oci/reference.js');
    const text = fs.readFileSync(path.join(REPO, 'workflows', 'release.yml'), 'utf8');
    const wf = parseYaml(text) as { jobs: Record<string, { steps: { id?: string; uses?: string; run?: string; env?: Record<string, string>; with?: Record<string, string> }[] }> };
    const steps = wf.jobs.release!.steps;
    // No tag or reference is made of the raw names.
    for (const st of steps.filter((x) => x.uses)) {
      for (const k of ['tag', 'tags', 'oci-ref']) expect([k, st.with?.[k] ?? '']).not.toEqual([k, expect.stringMatching(/github\.(repository|repository_owner|event\.repository\.name|actor)\b/)]);
    }
    // The names step, run as the runner would for an owner and repository with upper-case letters.
    const names = steps.find((x) => x.id === 'names')!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'names-'));
    const out = path.join(dir, 'output');
    fs.writeFileSync(out, '');
    const r = spawnSync('bash', ['-e', '-c', names.run!], { env: { PATH: process.env.PATH, GITHUB_OUTPUT: out, REPOSITORY: 'Acme-Corp/WebApp', NAME: 'WebApp', VERSION: 'v1.2.0-RC1' }, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const o = Object.fromEntries(fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => l.split('=') as [string, string]));
    fs.rmSync(dir, { recursive: true, force: true });
    expect(o).toEqual({ repository: 'acme-corp/webapp', name: 'webapp', version: 'v1.2.0-RC1' });
    // What the build and publish steps then get parses as a firebuild tag and an OCI reference.
    // The slug comes from the discover job's matrix (acme/web:1 -> acme-web).
    const expand = (s: string): string => s.replace(/\$\{\{\s*steps\.names\.outputs\.(\w+)\s*\}\}/g, (_m, k: string) => o[k] ?? '').replace(/\$\{\{\s*matrix\.slug\s*\}\}/g, 'acme-web');
    const build = steps.find((x) => x.uses?.includes('/build-rootfs@'))!;
    const publish = steps.find((x) => x.uses?.includes('/publish@'))!;
    expect(parseTag(expand(build.with!.tags!))).toEqual({ org: 'webapp', name: 'acme-web', version: 'v1.2.0-RC1' });
    expect(normalizeRef(expand(publish.with!['oci-ref']!)).full).toBe('ghcr.io/acme-corp/webapp/acme-web:v1.2.0-RC1');
  });

  test('the hosted variant runs on ubuntu-24.04 and has setup prepare the host for KVM', () => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', 'pr-smoke-hosted.yml'), 'utf8')) as { jobs: Record<string, { 'runs-on': unknown; steps: { uses?: string; with?: Record<string, string> }[] }> };
    for (const job of Object.values(wf.jobs)) expect(job['runs-on']).toBe('ubuntu-24.04');
    const job = Object.values(wf.jobs).find((j) => j.steps.some((st) => st.uses?.includes('/setup@')));
    expect(job!.steps.find((st) => st.uses?.includes('/setup@'))?.with).toMatchObject({ 'install-packages': 'true', 'enable-kvm': 'true', accel: 'kvm' });
  });

  test('the release workflow grants what provenance needs and asks publish to attest', () => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', 'release.yml'), 'utf8')) as { permissions: Record<string, string>; jobs: Record<string, { steps: { uses?: string; with?: Record<string, string> }[] }> };
    expect(wf.permissions).toMatchObject({ 'id-token': 'write', attestations: 'write' });
    const steps = Object.values(wf.jobs).flatMap((j) => j.steps);
    expect(steps.map((st) => /firebuild\/firebuild\/([a-z-]+)@/.exec(st.uses ?? '')?.[1]).filter(Boolean)).toEqual(['discover', 'setup', 'build-rootfs', 'smoke-test', 'publish']);
    // Release assets (the same file names for every image) only for a repository of one image.
    expect(steps.find((st) => st.uses?.includes('/publish@'))?.with).toMatchObject({ attest: 'true', targets: "${{ needs.discover.outputs.count == '1' && 'oci,release,artifact' || 'oci,artifact' }}" });
    expect(steps.find((st) => st.uses?.includes('/discover@'))?.with).toEqual({ all: 'true' });
  });

  test('the workflows use only inputs the actions declare', () => {
    for (const file of WORKFLOWS) {
      const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { jobs: Record<string, { steps: { uses?: string; with?: Record<string, string> }[] }> };
      for (const job of Object.values(wf.jobs)) {
        for (const step of job.steps) {
          const m = /^firebuild\/firebuild\/([a-z-]+)@/.exec(step.uses ?? '');
          if (!m) continue;
          const action = parseYaml(fs.readFileSync(path.join(REPO, m[1] as string, 'action.yml'), 'utf8')) as { inputs: Record<string, { required?: boolean }> };
          for (const k of Object.keys(step.with ?? {})) expect([file, m[1], k, k in action.inputs]).toEqual([file, m[1], k, true]);
          for (const [k, v] of Object.entries(action.inputs)) if (v.required) expect([file, m[1], k, k in (step.with ?? {})]).toEqual([file, m[1], k, true]);
        }
      }
    }
  });
});

/**
 * The templates' discover job and the matrix jobs it drives (P135): the wiring, and the matrix keys they
 * read, checked against the entries `firebuild discover` makes for a real repository and the inputs the
 * actions parse from them.
 */
describe('workflows/: the discover job drives the build and smoke-test matrix', () => {
  interface Step { id?: string; name?: string; uses?: string; run?: string; with?: Record<string, string | number | boolean> }
  interface Job { needs?: string | string[]; if?: string; outputs?: Record<string, string>; strategy?: { matrix?: unknown; 'fail-fast'?: boolean }; steps: Step[] }
  const load = (file: string): { jobs: Record<string, Job> } => parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { jobs: Record<string, Job> };
  const actionYml = (dir: string): { inputs: Record<string, unknown>; outputs: Record<string, unknown> } => parseYaml(fs.readFileSync(path.join(REPO, dir, 'action.yml'), 'utf8')) as { inputs: Record<string, unknown>; outputs: Record<string, unknown> };

  test.each(WORKFLOWS)('%s: one discover job (history fetched unless all); every other job needs it, takes fromJSON(needs.discover.outputs.matrix) and runs only when any is true', (file) => {
    const wf = load(file);
    const text = fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8');
    expect(Object.entries(wf.jobs).filter(([, j]) => j.steps.some((st) => /^firebuild\/firebuild\/discover@/.test(st.uses ?? ''))).map(([n]) => n)).toEqual(['discover']);
    const dj = wf.jobs.discover!;
    const step = dj.steps.find((st) => st.uses?.includes('/discover@'))!;
    expect(step.id).toBe('discover');
    const declared = Object.keys(actionYml('discover').outputs);
    expect(Object.keys(dj.outputs ?? {})).toEqual(expect.arrayContaining(['matrix', 'any']));
    for (const [k, v] of Object.entries(dj.outputs ?? {})) expect([k, declared.includes(k), v]).toEqual([k, true, `\${{ steps.discover.outputs.${k} }}`]);
    for (const m of text.matchAll(/needs\.discover\.outputs\.([a-z-]+)/g)) expect(Object.keys(dj.outputs ?? {})).toContain(m[1]);
    // The change is a git range: the checkout before it holds the history (all: every image, no history read).
    const checkout = dj.steps.findIndex((st) => st.uses?.startsWith('actions/checkout@'));
    expect(checkout).toBeGreaterThanOrEqual(0);
    expect(checkout).toBeLessThan(dj.steps.indexOf(step));
    expect(dj.steps[checkout]!.with?.['persist-credentials']).toBe(false);
    if (step.with?.all !== 'true') expect(dj.steps[checkout]!.with?.['fetch-depth']).toBe(0);
    const others = Object.entries(wf.jobs).filter(([n]) => n !== 'discover');
    expect(others.length).toBeGreaterThan(0);
    for (const [name, job] of others) {
      expect([name, job.needs]).toEqual([name, 'discover']);
      expect([name, job.strategy?.matrix]).toEqual([name, '${{ fromJSON(needs.discover.outputs.matrix) }}']);
      // One image failing does not cancel the others.
      expect([name, job.strategy?.['fail-fast']]).toEqual([name, false]);
      // An empty include is an invalid matrix: the job is skipped when nothing is affected.
      expect([name, job.if]).toEqual([name, expect.stringMatching(/(^|&& )needs\.discover\.outputs\.any == 'true'$/)]);
    }
  });

  /**
   * `${{ expr }}` of the templates' kind, as GitHub evaluates it: literals 'x', context paths (a.b-c), format(),
   * `&&` and `||` giving an operand (not a boolean); a missing property is null, which is '' in a string.
   */
  function interpolate(s: string, ctx: Record<string, unknown>): string {
    return s.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_m, expr: string) => {
      const tokens = expr.match(/'[^']*'|\|\||&&|[(),]|[A-Za-z_][A-Za-z0-9_.-]*/g) ?? [];
      let at = 0;
      const truthy = (v: unknown): boolean => v !== undefined && v !== null && v !== '' && v !== false && v !== 0;
      const term = (): unknown => {
        const t = tokens[at++] ?? '';
        if (t.startsWith("'")) return t.slice(1, -1);
        if (t === 'format') {
          at++; // (
          const args: unknown[] = [or()];
          while (tokens[at] === ',') {
            at++;
            args.push(or());
          }
          at++; // )
          return String(args[0]).replace(/\{(\d+)\}/g, (_x, n: string) => String(args[Number(n) + 1] ?? ''));
        }
        if (!/^[A-Za-z_]/.test(t)) throw new Error(`unexpected ${t} in ${expr}`);
        return t.split('.').reduce<unknown>((o, k) => (o === null || typeof o !== 'object' ? null : (o as Record<string, unknown>)[k] ?? null), ctx);
      };
      const and = (): unknown => {
        let v = term();
        while (tokens[at] === '&&') {
          at++;
          const r = term();
          v = truthy(v) ? r : v;
        }
        return v;
      };
      const or = (): unknown => {
        let v = and();
        while (tokens[at] === '||') {
          at++;
          const r = and();
          v = truthy(v) ? v : r;
        }
        return v;
      };
      const v = or();
      if (at !== tokens.length) throw new Error(`not evaluated here: ${expr}`);
      return v === null || v === undefined ? '' : String(v);
    });
  }

  test.each(WORKFLOWS)("%s: the matrix keys it reads are discover's; smoke.<key> goes to smoke-test's input <key>; the build and smoke inputs made from real entries parse", async (file) => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'wf-discover-'));
    const saved = { ...process.env };
    try {
      const dir = path.join(parent, 'repo');
      const files: Record<string, string> = {
        'firebuild.yml': ['images:', '  - tag: acme/base:1', '    context: base', '  - tag: acme/web:1', '    context: web', '    build-args: { VERSION: 1.2 }', '    smoke:', '      ports: auto:8080', '      wait-http: http://127.0.0.1:auto:8080/', '      timeout: 60'].join('\n'),
        'base/Dockerfile': 'FROM alpine\n',
        'web/Dockerfile': 'FROM acme/base:1\n',
      };
      for (const [f, t] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
        fs.writeFileSync(path.join(dir, f), t);
      }
      const { include } = await discover({ dir, all: true }, new MemoryLogger());
      expect(include.map((e) => e.tag)).toEqual(['acme/base:1', 'acme/web:1']);
      const text = fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8');
      const smokeInputs = Object.keys(actionYml('smoke-test').inputs);
      const refs = [...text.matchAll(/\bmatrix\.([a-z-]+)(?:\.([a-z-]+))?/g)];
      expect(refs.length).toBeGreaterThan(0);
      for (const m of refs) {
        expect([m[0], m[1] as string in include[1]!]).toEqual([m[0], true]);
        if (m[1] === 'smoke') expect([m[0], smokeInputs.includes(m[2] ?? '')]).toEqual([m[0], true]);
      }
      const wf = load(file);
      const { getInputs: buildInputs } = await import('../../src/actions/build-rootfs/impl.js');
      const { getInputs: smokeInputsOf } = await import('../../src/actions/smoke-test/impl.js');
      let checked = 0;
      for (const job of Object.values(wf.jobs).filter((j) => j.strategy?.matrix)) {
        for (const entry of include) {
          const ctx = { matrix: entry, github: { event: { pull_request: { number: 12 } }, run_attempt: '1', run_number: '7' }, steps: { names: { outputs: { name: 'webapp', version: 'v1.2.0' } }, build: { outputs: { tag: 'x/y:1' } } } };
          for (const st of job.steps) {
            const action = /^firebuild\/firebuild\/(build-rootfs|smoke-test)@/.exec(st.uses ?? '')?.[1];
            if (!action) continue;
            for (const k of Object.keys(process.env)) if (k.startsWith('INPUT_')) delete process.env[k];
            for (const [k, v] of Object.entries(st.with ?? {})) {
              // smoke.<key> goes to the input of the same name.
              const sm = /matrix\.smoke\.([a-z-]+)/.exec(String(v));
              if (sm) expect([action, k]).toEqual([action, sm[1]]);
              process.env[`INPUT_${k.toUpperCase()}`] = interpolate(String(v), ctx);
            }
            if (action === 'build-rootfs') {
              const i = buildInputs();
              expect(fs.statSync(path.join(dir, i.dockerfile)).isFile()).toBe(true);
              expect(fs.statSync(path.join(dir, i.context)).isDirectory()).toBe(true);
              expect(i.buildArgs).toEqual(entry.tag === 'acme/web:1' ? ['VERSION=1.2'] : []);
              // A tag made of the slug parses (getInputs checks it) and names the image: pull requests and the
              // warm-up share the name (the step cache's key starts with it), a release names its version.
              expect(i.tag).toMatch(new RegExp(`^(pr|webapp)/${entry.slug}:(12-1|main-7|v1\\.2\\.0)$`));
            } else {
              const i = smokeInputsOf();
              expect(i.ports).toEqual(entry.tag === 'acme/web:1' ? ['auto:8080'] : []);
              expect(i.waitHttp).toEqual(entry.tag === 'acme/web:1' ? ['http://127.0.0.1:auto:8080/'] : []);
              expect(i.timeoutMs).toBe(entry.tag === 'acme/web:1' ? 60_000 : 180_000);
            }
            checked++;
          }
        }
      }
      expect(checked).toBeGreaterThanOrEqual(4);
    } finally {
      process.env = saved;
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('action.yml files', () => {
  test.each(ACTION_DIRS)('%s/action.yml parses as an action', (dir) => {
    const content = fs.readFileSync(path.join(REPO, dir, 'action.yml'), 'utf8');
    const parsed = parseAction({ name: `${dir}/action.yml`, content }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    const template = convertActionTemplate(parsed.context, parsed.value!);
    expect(template.runs).toMatchObject({ using: 'node24' });
  });
});

describe('.github/', () => {
  const GH = path.join(REPO, '.github');
  test.each(fs.readdirSync(path.join(GH, 'workflows')))('workflows/%s parses and converts without errors', async (file) => {
    const content = fs.readFileSync(path.join(GH, 'workflows', file), 'utf8');
    const parsed = parseWorkflow({ name: file, content }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    const template = await convertWorkflowTemplate(parsed.context, parsed.value!);
    expect((template.errors ?? []).map((e) => e.Message)).toEqual([]);
  });

  test('actionlint.yaml declares every self-hosted label the workflows use', () => {
    const conf = parseYaml(fs.readFileSync(path.join(GH, 'actionlint.yaml'), 'utf8')) as { 'self-hosted-runner': { labels: string[] } };
    const used = new Set<string>();
    for (const file of WORKFLOWS) {
      const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { jobs: Record<string, { 'runs-on': string | string[] }> };
      for (const job of Object.values(wf.jobs)) for (const l of ([] as string[]).concat(job['runs-on'])) if (!['self-hosted', 'linux', 'x64', 'arm64'].includes(l) && !l.startsWith('ubuntu-')) used.add(l);
    }
    expect([...used].sort()).toEqual(['firebuild-pr', 'firebuild-release', 'kvm']);
    for (const l of used) expect(conf['self-hosted-runner'].labels).toContain(l);
    // runner-setup's labels (its default and the pools') are declared too.
    expect(conf['self-hosted-runner'].labels).toEqual(expect.arrayContaining(['kvm', 'firebuild', 'firebuild-pr', 'firebuild-release']));
  });

  test('release-action.yml moves the major tag to a vX.Y.Z release (and refuses other tags), run by bash against a real remote', () => {
    const wf = parseYaml(fs.readFileSync(path.join(GH, 'workflows', 'release-action.yml'), 'utf8')) as { jobs: Record<string, { needs?: string; permissions?: Record<string, string>; steps: { name?: string; run?: string }[] }> };
    const move = wf.jobs['move-major-tag']!;
    expect(move.needs).toBe('check-dist');
    expect(move.permissions).toEqual({ contents: 'write' });
    const script = move.steps.find((s) => s.name === 'Move the major tag')!.run!;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'major-tag-'));
    const git = (cwd: string, ...args: string[]): string => {
      const r = spawnSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', '-c', 'init.defaultBranch=main', ...args], { cwd, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    try {
      const origin = path.join(dir, 'origin.git');
      const work = path.join(dir, 'work');
      git(dir, 'init', '-q', '--bare', origin);
      git(dir, 'init', '-q', work);
      git(work, 'remote', 'add', 'origin', origin);
      for (const [msg, tag] of [['one', 'v1.0.0'], ['two', 'v1.1.0'], ['three', 'v1.2.0-rc1']] as const) {
        git(work, 'commit', '-q', '--allow-empty', '-m', msg);
        git(work, 'tag', tag);
      }
      git(work, 'push', '-q', 'origin', 'main', '--tags');
      const run = (tag: string): { status: number | null; stdout: string } => spawnSync('bash', ['-e', '-c', script], { cwd: work, env: { PATH: process.env.PATH, HOME: dir, TAG: tag, GIT_CONFIG_NOSYSTEM: '1' }, encoding: 'utf8' });
      expect(run('v1.0.0').status).toBe(0);
      expect(git(origin, 'rev-parse', 'v1^{commit}')).toBe(git(origin, 'rev-parse', 'v1.0.0^{commit}'));
      const moved = run('v1.1.0');
      expect(moved.status).toBe(0);
      expect(moved.stdout).toMatch(/^::notice title=major tag::v1 -> v1\.1\.0/m);
      expect(git(origin, 'rev-parse', 'v1^{commit}')).toBe(git(origin, 'rev-parse', 'v1.1.0^{commit}'));
      const rc = run('v1.2.0-rc1');
      expect({ status: rc.status, errors: rc.stdout.split('\n').filter((l) => l.startsWith('::error')) }).toEqual({ status: 1, errors: ["::error title=major tag::release tag 'v1.2.0-rc1' is not vX.Y.Z: no major tag moved"] });
      expect(git(origin, 'rev-parse', 'v1^{commit}')).toBe(git(origin, 'rev-parse', 'v1.1.0^{commit}'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
