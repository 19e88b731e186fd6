import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import { judgeKvm, readKvmFacts, type KvmFacts } from '../../src/vmm/kvm.js';

const base: KvmFacts = { devKvmExists: true, devKvmOpenable: true, modules: ['kvm'], cpuFlags: [] };

describe('KVM detection', () => {
  test.each<[string, Partial<KvmFacts>, boolean, string]>([
    ['no /dev/kvm', { devKvmExists: false }, false, 'none'],
    ['PVM-backed', { modules: ['kvm', 'kvm_pvm'], cpuFlags: ['hypervisor'] }, false, 'pvm'],
    ['PVM even when openable and vmx is shown', { modules: ['kvm', 'kvm_pvm'], cpuFlags: ['vmx'] }, false, 'pvm'],
    ['Intel', { modules: ['kvm', 'kvm_intel'], cpuFlags: ['vmx'] }, true, 'intel'],
    ['AMD', { modules: ['kvm', 'kvm_amd'], cpuFlags: ['svm'] }, true, 'amd'],
    ['not openable', { devKvmOpenable: false, modules: ['kvm', 'kvm_intel'] }, false, 'unknown'],
  ])('%s', (_name, facts, usable, kind) => {
    const v = judgeKvm({ ...base, ...facts });
    expect(v.usable).toBe(usable);
    expect(v.kind).toBe(kind);
    expect(v.reason.length).toBeGreaterThan(10);
  });

  test('reads the real host: a kvm_pvm module means unusable', async () => {
    const facts = await readKvmFacts();
    expect(facts.devKvmExists).toBe(fs.existsSync('/dev/kvm'));
    const v = judgeKvm(facts);
    if (fs.existsSync('/sys/module/kvm_pvm') && fs.existsSync('/dev/kvm')) expect(v).toMatchObject({ usable: false, kind: 'pvm' });
    if (!fs.existsSync('/dev/kvm')) expect(v.usable).toBe(false);
  });
});
