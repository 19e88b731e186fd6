import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv';
import { parse as parseYaml } from 'yaml';
import { apiRequests, configFile, jailerArgv, jailRoot, stopRequest, type FirecrackerVm } from '../../src/vmm/firecracker.js';
import { jailerSocketPath } from '../../src/vmm/jail-paths.js';

/**
 * No Firecracker binary can run here: every config file and API body is checked against the official
 * API schema (../shared/reference/firecracker/firecracker.yaml), with unknown properties made errors so a
 * misspelled field fails.
 */
const SCHEMA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared', 'reference', 'firecracker', 'firecracker.yaml');
const swagger = parseYaml(fs.readFileSync(SCHEMA, 'utf8')) as { definitions: Record<string, unknown>; paths: Record<string, Record<string, { parameters?: { in: string; schema?: { $ref?: string } }[] }>> };

function closed(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(closed);
  if (node && typeof node === 'object') {
    const o = Object.fromEntries(Object.entries(node as Record<string, unknown>).map(([k, v]) => [k, closed(v)]));
    if (o.type === 'object' && o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
    return o;
  }
  return node;
}
const definitions = closed(swagger.definitions) as Record<string, unknown>;
const Ajv = ((AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule) as unknown as new (o: object) => { compile(s: object): ((d: unknown) => boolean) & { errors?: unknown } };
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const validators = new Map<string, ReturnType<typeof ajv.compile>>();
function validate(definition: string, body: unknown): unknown {
  let v = validators.get(definition);
  if (!v) {
    v = ajv.compile({ definitions, $ref: `#/definitions/${definition}` });
    validators.set(definition, v);
  }
  return v(body) ? null : v.errors;
}

const vms: [string, FirecrackerVm][] = [
  ['minimal', { kernel: '/vmlinux', bootArgs: 'console=ttyS0 reboot=k panic=1', rootfs: '/rootfs.ext4', vcpus: 1, memMib: 128 }],
  ['full', {
    kernel: 'vmlinux', initrd: 'initrd', bootArgs: 'console=ttyS0 init=/.firebuild/init', rootfs: 'rootfs.ext4',
    drives: [{ id: 'config', path: 'config.img', readOnly: true }], vcpus: 2, memMib: 512,
    network: [{ ifaceId: 'eth0', tap: 'fb0abc', mac: '02:fc:00:00:00:01' }], mmds: true, logPath: 'fc.log', metricsPath: 'fc.metrics',
  }],
];

describe('Firecracker config files validate as FullVmConfiguration', () => {
  test.each(vms)('%s', (_n, vm) => {
    const cfg = configFile(vm);
    expect(validate('FullVmConfiguration', cfg)).toBeNull();
    expect(cfg['boot-source']).toMatchObject({ kernel_image_path: vm.kernel, boot_args: vm.bootArgs });
  });

  test("Firecracker's own example validates, and a misspelled field does not", () => {
    const example = JSON.parse(fs.readFileSync(path.join(path.dirname(SCHEMA), 'vm_config.example.json'), 'utf8'));
    // The example spells optional objects as null, which the schema leaves untyped: drop them.
    const cleaned = JSON.parse(JSON.stringify(example, (_k, v) => (v === null ? undefined : v)));
    expect(validate('FullVmConfiguration', cleaned)).toBeNull();
    const bad = configFile(vms[0]![1]) as { 'boot-source': Record<string, unknown> };
    bad['boot-source'] = { kernel_image: '/vmlinux' };
    expect(validate('FullVmConfiguration', bad)).not.toBeNull();
  });
});

describe('Firecracker API requests validate against their definitions and paths', () => {
  test.each(vms)('%s', (_n, vm) => {
    const reqs = apiRequests(vm, { firebuild: { name: 'vm1' } });
    expect(reqs.at(-1)?.body).toEqual({ action_type: 'InstanceStart' });
    for (const r of [...reqs, stopRequest()]) {
      expect({ path: r.path, errors: validate(r.definition, r.body) }).toEqual({ path: r.path, errors: null });
      // The path exists in the API with that method and takes that definition as its body.
      const template = Object.keys(swagger.paths).find((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(r.path));
      expect(template).toBeDefined();
      const op = swagger.paths[template as string]?.[r.method.toLowerCase()];
      expect(op).toBeDefined();
      const bodyRef = op?.parameters?.find((p) => p.in === 'body')?.schema?.$ref;
      expect(bodyRef).toBe(`#/definitions/${r.definition}`);
    }
  });
});

describe('jailer argv', () => {
  const base = { jailer: '/usr/bin/jailer', firecracker: '/usr/bin/firecracker', id: 'abc123', uid: 1000, gid: 1000, chrootBase: '/srv/jailer' };
  test.each<[string, Parameters<typeof jailerArgv>[0], string[]]>([
    ['config file, daemonized, with netns and a parent cgroup', { ...base, netns: '/var/run/netns/fb-abc123', parentCgroup: 'firebuild', daemonize: true, configFile: '/config.json' },
      ['--id', 'abc123', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--chroot-base-dir', '/srv/jailer', '--netns', '/var/run/netns/fb-abc123', '--cgroup-version', '2', '--parent-cgroup', 'firebuild', '--daemonize', '--new-pid-ns', '--', '--config-file', '/config.json']],
    ['API socket, foreground', { ...base, apiSock: '/run/firecracker.socket' },
      ['--id', 'abc123', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--chroot-base-dir', '/srv/jailer', '--cgroup-version', '2', '--', '--api-sock', '/run/firecracker.socket']],
  ])('%s', (_n, o, argv) => expect(jailerArgv(o)).toEqual(argv));

  test('ids the jailer would refuse are refused first', () => {
    expect(() => jailerArgv({ ...base, id: 'bad/id' })).toThrow(/must be 1-64/);
  });

  test('the jail root and API socket path agree with the profile check', () => {
    expect(jailRoot('/srv/jailer', '/usr/bin/firecracker', 'abc')).toBe('/srv/jailer/firecracker/abc/root');
    expect(jailerSocketPath('/srv/jailer', '/usr/bin/firecracker', 'abc')).toBe(`${jailRoot('/srv/jailer', '/usr/bin/firecracker', 'abc')}/run/firecracker.socket`);
  });
});
