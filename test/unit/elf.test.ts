import { expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import { isStaticElf } from '../../src/util/elf.js';

test('tells a static busybox from a dynamically linked binary', async () => {
  expect(await isStaticElf(process.execPath)).toBe(false); // node is dynamically linked
  if (fs.existsSync('/bin/busybox')) expect(await isStaticElf('/bin/busybox')).toBe(true);
  expect(await isStaticElf('/etc/hostname').catch(() => false)).toBe(false);
});
