import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import { FRAGMENT, lostOptions, parseConfigFragment } from '../../src/commands/kernel-build.js';

describe('kernel config fragment', () => {
  test('the shipped fragment asks for what a Firecracker/QEMU microvm guest needs', () => {
    const f = parseConfigFragment(fs.readFileSync(FRAGMENT, 'utf8'));
    for (const k of ['CONFIG_VIRTIO_MMIO', 'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES', 'CONFIG_ACPI', 'CONFIG_PCI', 'CONFIG_IP_PNP', 'CONFIG_VIRTIO_VSOCKETS', 'CONFIG_EXT4_FS', 'CONFIG_SERIAL_8250_CONSOLE', 'CONFIG_PVH', 'CONFIG_VIRTIO_BLK', 'CONFIG_VIRTIO_NET']) expect([k, f.get(k)]).toEqual([k, 'y']);
    for (const k of ['CONFIG_MODULES', 'CONFIG_BLK_DEV_INITRD']) expect([k, f.get(k)]).toEqual([k, 'n']);
  });

  test('options the final .config lost are reported; values and unset lines parse', () => {
    const frag = parseConfigFragment('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D="x"\n');
    expect([...frag]).toEqual([['CONFIG_A', 'y'], ['CONFIG_B', 'n'], ['CONFIG_C', 'y'], ['CONFIG_D', '"x"']]);
    expect(lostOptions(frag, 'CONFIG_A=y\n# CONFIG_C is not set\n')).toEqual(['CONFIG_C']);
    expect(lostOptions(frag, 'CONFIG_A=y\nCONFIG_C=y\n')).toEqual([]);
  });
});
