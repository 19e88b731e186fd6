import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NoOperationTraceWriter, convertWorkflowTemplate, parseWorkflow } from '@actions/workflow-parser';
import { convertActionTemplate, parseAction } from '@actions/workflow-parser/actions/index';
import { parse as parseYaml } from 'yaml';
import { REPO } from '../helpers/cli.js';

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

  test.each(['pr-smoke.yml', 'pr-smoke-hosted.yml'])('pull-request workflow %s follows the security model: pull_request only, read-only token, no secrets', (file) => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8')) as { on: Record<string, unknown>; permissions: Record<string, string> };
    const text = fs.readFileSync(path.join(REPO, 'workflows', file), 'utf8');
    expect(Object.keys(wf.on)).toEqual(['pull_request']);
    expect(wf.permissions).toEqual({ contents: 'read' });
    expect(text).not.toMatch(/\$\{\{\s*secrets\./);
  });

  test('the hosted variant runs on ubuntu-24.04 and has setup prepare the host for KVM', () => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', 'pr-smoke-hosted.yml'), 'utf8')) as { jobs: Record<string, { 'runs-on': unknown; steps: { uses?: string; with?: Record<string, string> }[] }> };
    const [job] = Object.values(wf.jobs);
    expect(job!['runs-on']).toBe('ubuntu-24.04');
    expect(job!.steps.find((st) => st.uses?.includes('/setup@'))?.with).toMatchObject({ 'install-packages': 'true', 'enable-kvm': 'true', accel: 'kvm' });
  });

  test('the release workflow grants what provenance needs and asks publish to attest', () => {
    const wf = parseYaml(fs.readFileSync(path.join(REPO, 'workflows', 'release.yml'), 'utf8')) as { permissions: Record<string, string>; jobs: Record<string, { steps: { uses?: string; with?: Record<string, string> }[] }> };
    expect(wf.permissions).toMatchObject({ 'id-token': 'write', attestations: 'write' });
    const steps = Object.values(wf.jobs).flatMap((j) => j.steps);
    expect(steps.map((st) => /firebuild\/firebuild\/([a-z-]+)@/.exec(st.uses ?? '')?.[1]).filter(Boolean)).toEqual(['setup', 'build-rootfs', 'smoke-test', 'publish']);
    expect(steps.find((st) => st.uses?.includes('/publish@'))?.with).toMatchObject({ attest: 'true', targets: 'oci,release,artifact' });
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

describe('action.yml files', () => {
  test.each(ACTION_DIRS)('%s/action.yml parses as an action', (dir) => {
    const content = fs.readFileSync(path.join(REPO, dir, 'action.yml'), 'utf8');
    const parsed = parseAction({ name: `${dir}/action.yml`, content }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    const template = convertActionTemplate(parsed.context, parsed.value!);
    expect(template.runs).toMatchObject({ using: 'node24' });
  });
});
