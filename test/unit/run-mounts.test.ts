import { describe, expect, test } from '@jest/globals';
import type { Step } from '../../src/dockerfile/plan-schema.js';
import { parseRunMount, parseTmpfsSize, runMounts, stepNetwork } from '../../src/engine/vm/mounts.js';
import { renderMounts } from '../../src/guest/run-config.js';
import { qemuArgv } from '../../src/vmm/qemu.js';
import { apiRequests, configFile, type FirecrackerVm } from '../../src/vmm/firecracker.js';
import { bodyDefinition, validate } from '../helpers/firecracker-schema.js';

/** RUN --mount=type=cache|bind|tmpfs and RUN --network as the vm engine reads them (BuildKit's options and defaults). */
const where = { file: '/ctx/Dockerfile', line: 7 };
const stages = [{ index: 0, name: 'build' }, { index: 1, name: 'tools' }, { index: 2 }];
const parse = (m: Record<string, string>, current = 2): ReturnType<typeof parseRunMount> => parseRunMount(m, stages, current, where);
const step = (mounts: Record<string, string>[], over: Partial<Step> = {}): Step => ({ file: where.file, line: where.line, keyword: 'RUN', original: 'RUN x', command: ['x'], mounts, ...over });

describe('RUN --mount=type=cache', () => {
  test('defaults: id is the target, shared, rw, mode 0755, uid/gid 0, no seed', () => {
    expect(parse({ type: 'cache', target: '/root/.cache' })).toEqual({ type: 'cache', id: '/root/.cache', target: '/root/.cache', readonly: false, sharing: 'shared', source: '/', mode: 0o755, uid: 0, gid: 0 });
  });
  test('every option: id, dst, ro, sharing, from a stage by name or index or an image, source, mode, uid, gid', () => {
    expect(parse({ type: 'cache', id: 'apt', dst: 'var/cache', readonly: 'true', sharing: 'locked', from: 'build', source: 'seed/dir', mode: '0700', uid: '100', gid: '101' })).toEqual({
      type: 'cache', id: 'apt', target: 'var/cache', readonly: true, sharing: 'locked', from: { kind: 'stage', stage: 0 }, source: '/seed/dir', mode: 0o700, uid: 100, gid: 101,
    });
    expect(parse({ type: 'cache', target: '/c', from: '1', sharing: 'private' })).toMatchObject({ from: { kind: 'stage', stage: 1 }, sharing: 'private' });
    expect(parse({ type: 'cache', target: '/c', from: 'alpine:3.20' })).toMatchObject({ from: { kind: 'image', ref: 'alpine:3.20' } });
  });
  test.each([
    [{ type: 'cache', target: '/c', sharing: 'exclusive' }, 'sharing=exclusive is not shared, private or locked'],
    [{ type: 'cache', target: '/c', size: '1g' }, "does not take 'size'"],
    [{ type: 'cache' }, 'needs target=PATH'],
    [{ type: 'cache', target: '/c', mode: '0999' }, 'mode=0999 is not an octal mode'],
    [{ type: 'cache', target: '/c', uid: '-1' }, 'uid=-1 is not a number'],
    [{ type: 'cache', target: '/c', ro: 'maybe' }, 'ro=maybe is not true or false'],
    [{ type: 'cache', target: '/c', from: 'nosuchstage' }, 'from=nosuchstage names no stage (stages: build, tools)'],
    [{ type: 'cache', target: '/c', from: 'tools' }, 'is this stage itself'],
    [{ type: 'cache', target: '/c', source: 'x' }, 'source needs from='],
  ] as [Record<string, string>, string][])('%j: one line', (m, msg) => {
    const current = m.from === 'tools' ? 1 : 2;
    expect(() => parse(m, current)).toThrow(msg);
    try {
      parse(m, current);
    } catch (err) {
      expect((err as Error).message).not.toContain('\n');
      expect(err).toMatchObject({ file: where.file, line: where.line });
    }
  });
});

describe('RUN --mount=type=bind and type=tmpfs', () => {
  test('bind defaults: the build context, its root, read-only; rw and from', () => {
    expect(parse({ type: 'bind', target: '/src' })).toEqual({ type: 'bind', target: '/src', from: { kind: 'context' }, source: '/', readwrite: false });
    expect(parse({ target: '/src', source: 'a/../b', rw: 'true' })).toEqual({ type: 'bind', target: '/src', from: { kind: 'context' }, source: '/b', readwrite: true });
    expect(parse({ type: 'bind', target: '/t', from: 'build', src: '/opt', readwrite: '1' })).toMatchObject({ from: { kind: 'stage', stage: 0 }, source: '/opt', readwrite: true });
    expect(() => parse({ type: 'bind', target: '/t', id: 'x' })).toThrow("RUN --mount=type=bind does not take 'id'");
    expect(() => parse({ type: 'bind', target: '/t', rw: 'true', ro: 'true' })).toThrow('rw and ro contradict');
  });
  test('tmpfs: size in bytes or with a suffix; nothing else', () => {
    expect(parse({ type: 'tmpfs', target: '/scratch', size: '64m' })).toEqual({ type: 'tmpfs', target: '/scratch', size: 64 * 1024 ** 2 });
    expect(parseTmpfsSize('4096', where)).toBe(4096);
    expect(parseTmpfsSize('1G', where)).toBe(1024 ** 3);
    expect(() => parseTmpfsSize('lots', where)).toThrow('size=lots is not a size');
    expect(() => parse({ type: 'tmpfs', target: '/t', mode: '0700' })).toThrow("does not take 'mode'");
  });
  test('targets: relative ones under the WORKDIR (as BuildKit); /, /proc, /sys, /.firebuild and duplicates refused', () => {
    expect(runMounts(step([{ type: 'tmpfs', target: 'tmp' }, { type: 'secret', id: 's' }]), stages, 2, '/srv').map((m) => m.target)).toEqual(['/srv/tmp']);
    expect(() => runMounts(step([{ type: 'cache', target: '/proc/x' }]), stages, 2, '/')).toThrow('is under /proc, which the build VM mounts itself');
    expect(() => runMounts(step([{ type: 'tmpfs', target: '../sys' }]), stages, 2, '/srv')).toThrow('under /sys');
    expect(() => runMounts(step([{ type: 'bind', target: '/.firebuild/x' }]), stages, 2, '/')).toThrow('under /.firebuild');
    expect(() => runMounts(step([{ type: 'cache', target: '/' }]), stages, 2, '/')).toThrow('the target is the root directory');
    expect(() => runMounts(step([{ type: 'cache', target: '/c' }, { type: 'tmpfs', target: '/c/' }]), stages, 2, '/')).toThrow('two mounts have the target /c');
  });
});

describe('RUN --network', () => {
  test('default and none are taken; host is refused saying why; anything else is one line', () => {
    expect(stepNetwork(step([]))).toBe('default');
    expect(stepNetwork(step([], { network: 'default' }))).toBe('default');
    expect(stepNetwork(step([], { network: 'none' }))).toBe('none');
    expect(() => stepNetwork(step([], { network: 'host' }))).toThrow("RUN --network=host is refused by the vm engine: a build VM never shares the host's network");
    expect(() => stepNetwork(step([], { network: 'bridge' }))).toThrow('RUN --network=bridge is not a network mode: use default or none');
  });
});

describe('the mounts reach the guest and the VMM', () => {
  test('mounts.nul and mounts.sh carry kind, device, source, target, ro|rw and size|file', () => {
    const r = renderMounts([{ kind: 'ext4', dev: 'vdc', source: '/', target: '/cache', ro: false }, { kind: 'tmpfs', target: "/t'x", ro: false, size: 1024 }, { kind: 'ext4', dev: 'vdd', source: '/a.txt', target: '/a', ro: true, file: true }]);
    expect(r.nul.toString().split('\0')).toEqual(['ext4', 'vdc', '/', '/cache', 'rw', '0', 'tmpfs', '', '/', "/t'x", 'rw', '1024', 'ext4', 'vdd', '/a.txt', '/a', 'ro', 'file', '']);
    expect(r.sh).toBe("fb_mount 'ext4' 'vdc' '/' '/cache' 'rw' '0'\nfb_mount 'tmpfs' '' '/' '/t'\\''x' 'rw' '1024'\nfb_mount 'ext4' 'vdd' '/a.txt' '/a' 'ro' 'file'\n");
    expect(() => renderMounts([{ kind: 'tmpfs', target: '/a\nb', ro: false }])).toThrow('NUL or line break');
  });
  test('QEMU: the drives after the config disk, read-only or writable with the error policy', () => {
    const argv = qemuArgv({ kernel: 'k', append: '', rootfs: 'r', disks: ['cfg'], drives: [{ path: '/c,1.ext4', readOnly: false }, { path: '/b.ext4', readOnly: true }], memMib: 256, cpus: 1, accel: 'tcg', serialLog: 's' });
    const drives = argv.filter((_a, i) => argv[i - 1] === '-drive');
    expect(drives).toEqual([
      'id=root,file=r,format=raw,if=none,cache=unsafe,werror=report,rerror=report',
      'id=disk0,file=cfg,format=raw,if=none,readonly=on,rerror=report',
      'id=mnt0,file=/c,,1.ext4,format=raw,if=none,cache=unsafe,werror=report,rerror=report',
      'id=mnt1,file=/b.ext4,format=raw,if=none,readonly=on,rerror=report',
    ]);
  });
  test('Firecracker: the mount drives validate against the vendored API schema (config file and API bodies)', () => {
    const vm: FirecrackerVm = { kernel: '/vmlinux', bootArgs: 'console=ttyS0', rootfs: '/rootfs.ext4', vcpus: 1, memMib: 128, drives: [{ id: 'disk0', path: '/disk0.ext4', readOnly: true }, { id: 'mount0', path: '/mount0.ext4', readOnly: false }, { id: 'mount1', path: '/mount1.ext4', readOnly: true }] };
    expect(validate('FullVmConfiguration', configFile(vm))).toBeNull();
    const drives = apiRequests(vm).filter((r) => r.path.startsWith('/drives/'));
    expect(drives.map((r) => r.path)).toEqual(['/drives/rootfs', '/drives/disk0', '/drives/mount0', '/drives/mount1']);
    for (const r of drives) {
      expect(validate(r.definition, r.body)).toBeNull();
      expect(bodyDefinition(r.method, r.path)).toBe(r.definition);
    }
  });
});
