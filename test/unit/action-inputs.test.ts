import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { REPO } from '../helpers/cli.js';

/**
 * Every action.yml and its code agree (as codeql-action checks): each input the code reads is declared,
 * each declared input is read, and runs.main/post point at the bundled files for node24.
 */
const ACTIONS: Record<string, string[]> = {
  '.': ['src/actions/build-rootfs/impl.ts', 'src/actions/build-inputs.ts', 'src/actions/vm-inputs.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
  'build-rootfs': ['src/actions/build-rootfs/impl.ts', 'src/actions/build-inputs.ts', 'src/actions/vm-inputs.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
  'build-baseos': ['src/actions/build-baseos/impl.ts', 'src/actions/build-inputs.ts', 'src/actions/summary.ts'],
  'smoke-test': ['src/actions/smoke-test/impl.ts', 'src/actions/vm-inputs.ts', 'src/actions/summary.ts'],
  publish: ['src/actions/publish/impl.ts', 'src/actions/summary.ts'],
  discover: ['src/actions/discover/impl.ts', 'src/actions/summary.ts'],
  setup: ['src/actions/setup/impl.ts', 'src/actions/setup/host.ts', 'src/actions/common.ts', 'src/actions/summary.ts'],
};

test('every action folder is checked', () => {
  const dirs = fs.readdirSync(REPO).filter((d) => d !== 'node_modules' && fs.existsSync(path.join(REPO, d, 'action.yml')));
  expect(dirs.sort()).toEqual(Object.keys(ACTIONS).filter((d) => d !== '.').sort());
});

function inputsRead(files: string[]): string[] {
  const names = new Set<string>();
  for (const f of files) {
    const src = fs.readFileSync(path.join(REPO, f), 'utf8');
    // aliasInput('name', 'alias', ...) reads both.
    for (const m of src.matchAll(/\b(?:input|listInput|boolInput|aliasInput)\('([a-z0-9-]+)'(?:, '([a-z0-9-]+)')?/g)) for (const n of m.slice(1)) if (n) names.add(n);
  }
  return [...names].sort();
}

describe('action.yml files', () => {
  test.each(Object.entries(ACTIONS))('%s: declared inputs are exactly the inputs read', (name, files) => {
    const yml = parseYaml(fs.readFileSync(path.join(REPO, name, 'action.yml'), 'utf8')) as { inputs: Record<string, unknown>; runs: { using: string; main: string; post?: string } };
    expect(Object.keys(yml.inputs).sort()).toEqual(inputsRead(files));
    expect(yml.runs.using).toBe('node24');
    expect(yml.runs.main).toBe(name === '.' ? 'dist/build-rootfs/index.js' : `../dist/${name}/index.js`);
    expect(fs.existsSync(path.join(REPO, name, yml.runs.main))).toBe(true);
    if (yml.runs.post) expect(fs.existsSync(path.join(REPO, name, yml.runs.post))).toBe(true);
  });

  test('the checker itself sees a read that is not declared', () => {
    expect(inputsRead(['src/actions/publish/impl.ts'])).toContain('oci-ref');
  });
});

/**
 * One name per concept (docker/build-push-action's where it has one): the inputs as the runner passes
 * them (INPUT_<NAME>), read by the actions' own getInputs; warnings as the runner sees them (stdout).
 */
describe('input names and aliases', () => {
  let out = '';
  const saved = { ...process.env };
  const write = process.stdout.write.bind(process.stdout);
  beforeEach(() => {
    out = '';
    for (const k of Object.keys(process.env)) if (k.startsWith('INPUT_')) delete process.env[k];
    process.stdout.write = ((s: string | Uint8Array) => ((out += String(s)), true)) as typeof process.stdout.write;
  });
  afterEach(() => {
    process.stdout.write = write;
    process.env = { ...saved };
  });
  const set = (inputs: Record<string, string>): void => {
    for (const [k, v] of Object.entries(inputs)) process.env[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v;
  };

  test('build-rootfs: file is dockerfile, tags is a list after tag, labels, no-cache, pull, vmlinux-id', async () => {
    const { getInputs } = await import('../../src/actions/build-rootfs/impl.js');
    set({ file: './Dockerfile', tag: 'acme/web:1.0', tags: 'acme/web:latest\nacme/web:1.0, acme/web:1', labels: 'org.opencontainers.image.title=web\na=b=c', 'no-cache': 'true', pull: 'true', 'vmlinux-id': 'k1' });
    const i = getInputs();
    expect(i).toMatchObject({ dockerfile: './Dockerfile', tag: 'acme/web:1.0', moreTags: ['acme/web:latest', 'acme/web:1'], labels: { 'org.opencontainers.image.title': 'web', a: 'b=c' }, noCache: true, pull: true, vmlinuxId: 'k1' });
    expect(out).not.toContain('::warning');
  });

  test('build-rootfs: tags alone names the image; neither is one error; a bad tag or label names the input', async () => {
    const { getInputs } = await import('../../src/actions/build-rootfs/impl.js');
    set({ dockerfile: './Dockerfile', tags: 'acme/web:2,acme/web:latest' });
    expect(getInputs()).toMatchObject({ tag: 'acme/web:2', moreTags: ['acme/web:latest'] });
    delete process.env.INPUT_TAGS;
    expect(() => getInputs()).toThrow("input 'tag' (or 'tags') is required");
    set({ tags: 'Acme/Web:1' });
    expect(() => getInputs()).toThrow("input 'tags' has 'Acme/Web:1'");
    set({ tag: 'acme/web', tags: '' });
    expect(() => getInputs()).toThrow("input 'tag' has 'acme/web'");
    delete process.env.INPUT_TAG;
    set({ tags: 'acme/web:1', labels: 'novalue' });
    expect(() => getInputs()).toThrow("input 'labels' has 'novalue'");
  });

  test("build-rootfs and build-baseos: secrets, secret-files and secret-envs as docker/build-push-action's; every value masked first", async () => {
    for (const action of ['build-rootfs', 'build-baseos']) {
      out = '';
      const { getInputs } = await import(`../../src/actions/${action}/impl.js`) as typeof import('../../src/actions/build-rootfs/impl.js');
      process.env.FB_TEST_TOKEN = 'env-value-1234';
      set({ dockerfile: './Dockerfile', tag: 'acme/web:1', secrets: 'tok=v4lue=with=eq\n"multi=first line\nsecond line"', 'secret-files': 'npmrc=/home/runner/.npmrc', 'secret-envs': 'gh=FB_TEST_TOKEN' });
      const i = getInputs();
      expect(i.secrets.map((x) => ({ id: x.id, kind: x.kind, ...(x.kind === 'value' ? { v: x.value.bytes().toString() } : x.kind === 'file' ? { path: x.path } : { env: x.env }) }))).toEqual([
        { id: 'tok', kind: 'value', v: 'v4lue=with=eq' },
        { id: 'multi', kind: 'value', v: 'first line\nsecond line' },
        { id: 'npmrc', kind: 'file', path: '/home/runner/.npmrc' },
        { id: 'gh', kind: 'env', env: 'FB_TEST_TOKEN' },
      ]);
      const masks = out.split('\n').filter((l) => l.startsWith('::add-mask::'));
      expect(masks).toEqual(['::add-mask::v4lue=with=eq', '::add-mask::first line%0Asecond line', '::add-mask::first line', '::add-mask::second line', '::add-mask::env-value-1234']);
      // Nothing else printed a value.
      expect(out.split('\n').filter((l) => !l.startsWith('::add-mask::') && /v4lue|second line|env-value/.test(l))).toEqual([]);
      set({ secrets: 'not-an-assignment' });
      expect(() => getInputs()).toThrow("input 'secrets' line 1 is not id=value");
      delete process.env.INPUT_SECRETS;
    }
  });

  test("build-rootfs and build-baseos: ssh as docker/build-push-action's (default is $SSH_AUTH_SOCK, ID=SOCKET), one a line", async () => {
    for (const action of ['build-rootfs', 'build-baseos']) {
      const { getInputs } = await import(`../../src/actions/${action}/impl.js`) as typeof import('../../src/actions/build-rootfs/impl.js');
      const saved = process.env.SSH_AUTH_SOCK;
      process.env.SSH_AUTH_SOCK = '/tmp/agent.sock';
      try {
        set({ dockerfile: './Dockerfile', tag: 'acme/web:1', ssh: 'default\ndeploy=/run/deploy-agent.sock' });
        expect(getInputs().sshAgents).toEqual([{ id: 'default', socket: '/tmp/agent.sock' }, { id: 'deploy', socket: '/run/deploy-agent.sock' }]);
        delete process.env.SSH_AUTH_SOCK;
        set({ ssh: 'default' });
        expect(() => getInputs()).toThrow("input 'ssh' default: SSH_AUTH_SOCK is not set");
      } finally {
        if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
        else process.env.SSH_AUTH_SOCK = saved;
        delete process.env.INPUT_SSH;
      }
    }
  });

  test('dockerfile and file given with different values is one error; the same value is fine', async () => {
    const { getInputs } = await import('../../src/actions/build-baseos/impl.js');
    set({ dockerfile: 'a/Dockerfile', file: 'b/Dockerfile' });
    expect(() => getInputs()).toThrow("inputs 'dockerfile' and 'file' name the same thing and differ");
    set({ file: 'a/Dockerfile' });
    expect(getInputs().dockerfile).toBe('a/Dockerfile');
    delete process.env.INPUT_DOCKERFILE;
    delete process.env.INPUT_FILE;
    expect(() => getInputs()).toThrow("input 'dockerfile' is required");
  });

  test('setup: backend and vmlinux-id are the names; vmm and kernel-id still work, with one warning each', async () => {
    const { getInputs } = await import('../../src/actions/setup/impl.js');
    set({ backend: 'qemu', 'vmlinux-id': 'k2' });
    expect(getInputs()).toMatchObject({ vmm: 'qemu', kernelId: 'k2' });
    expect(out).not.toContain('::warning');
    delete process.env.INPUT_BACKEND;
    delete process.env['INPUT_VMLINUX-ID'];
    set({ vmm: 'firecracker', 'kernel-id': 'old' });
    expect(getInputs()).toMatchObject({ vmm: 'firecracker', kernelId: 'old' });
    expect(out.match(/::warning::.*/g)).toEqual([
      "::warning::input 'kernel-id' is deprecated: use 'vmlinux-id' (the same value)",
      "::warning::input 'vmm' is deprecated: use 'backend' (the same value)",
    ]);
    set({ backend: 'qemu' });
    expect(() => getInputs()).toThrow("inputs 'backend' and 'vmm' name the same thing and differ ('qemu', 'firecracker'): keep 'backend'");
    delete process.env.INPUT_BACKEND;
    delete process.env.INPUT_VMM;
    delete process.env['INPUT_KERNEL-ID'];
    expect(getInputs()).toMatchObject({ vmm: 'auto', kernelId: 'default' });
    set({ vmm: 'kvm' });
    expect(() => getInputs()).toThrow("input 'vmm' is 'kvm': use one of auto, qemu, firecracker");
  });

  test("publish: github-token defaults to the job's token in action.yml", () => {
    const yml = parseYaml(fs.readFileSync(path.join(REPO, 'publish', 'action.yml'), 'utf8')) as { inputs: Record<string, { default?: string }> };
    expect(yml.inputs['github-token']?.default).toBe('${{ github.token }}');
  });

  test('an input with an alias has no default in action.yml (the runner would always pass it)', () => {
    for (const [dir, pairs] of [['setup', [['backend', 'vmm'], ['vmlinux-id', 'kernel-id']]], ['build-rootfs', [['dockerfile', 'file']]], ['.', [['dockerfile', 'file']]], ['build-baseos', [['dockerfile', 'file']]]] as const) {
      const yml = parseYaml(fs.readFileSync(path.join(REPO, dir, 'action.yml'), 'utf8')) as { inputs: Record<string, { default?: string; required?: boolean }> };
      for (const pair of pairs) for (const n of pair) expect([dir, n, yml.inputs[n]?.default, yml.inputs[n]?.required]).toEqual([dir, n, undefined, false]);
    }
  });
});
