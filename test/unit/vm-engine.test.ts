import { describe, expect, test } from '@jest/globals';
import { failureHint, runArgv, vmUnsupported } from '../../src/engine/vm-engine.js';
import { resolveEngine } from '../../src/commands/build.js';
import type { Step } from '../../src/dockerfile/plan-schema.js';

const step = (over: Partial<Step>): Step => ({ file: 'Dockerfile', line: 3, keyword: 'RUN', original: 'RUN x', form: 'shell', shell: ['/bin/sh', '-c'], ...over });

describe('the vm engine runs RUN as BuildKit does', () => {
  test('the exec and shell forms run their planned argv', () => {
    expect(runArgv(step({ form: 'exec', command: ['/bin/echo', 'a b'] }))).toEqual(['/bin/echo', 'a b']);
    expect(runArgv(step({ command: ['/bin/sh', '-c', 'echo $HOME'] }))).toEqual(['/bin/sh', '-c', 'echo $HOME']);
  });

  test('a RUN that is only a heredoc runs the document as the shell script', () => {
    const s = step({ shell: ['/bin/bash', '-c'], command: ['/bin/bash', '-c', '<<EOT'], heredocs: [{ name: 'EOT', content: 'echo one\necho two\n', expand: true, chomp: false }] });
    expect(runArgv(s)).toEqual(['/bin/bash', '-c', 'echo one\necho two\n']);
  });

  test('a command with heredocs hands the shell the command line followed by the documents', () => {
    const s = step({ command: ['/bin/sh', '-c', 'cat > /f <<A && cat > /g <<"B"'], heredocs: [{ name: 'A', content: 'first\n', expand: true, chomp: false }, { name: 'B', content: 'second $X', expand: false, chomp: false }] });
    expect(runArgv(s)).toEqual(['/bin/sh', '-c', 'cat > /f <<A && cat > /g <<"B"\nfirst\nA\nsecond $X\nB']);
  });
});

describe('the vm engine refuses the BuildKit features it does not do', () => {
  test.each([
    ['RUN --security', { security: 'insecure' }],
  ] as [string, Partial<Step>][])('%s', (feature, over) => {
    expect(vmUnsupported(step(over))).toBe(feature);
  });

  test('COPY --link (layer caching only) and plain steps pass', () => {
    expect(vmUnsupported(step({ keyword: 'COPY', link: true, original: 'COPY --link a /a' }))).toBeUndefined();
    expect(vmUnsupported(step({}))).toBeUndefined();
  });

  test('ADD --checksum, COPY --parents and COPY/ADD --exclude pass (done by the vm engine)', () => {
    expect(vmUnsupported(step({ keyword: 'ADD', checksum: `sha256:${'0'.repeat(64)}`, original: 'ADD --checksum=sha256:00 https://x/y /y' }))).toBeUndefined();
    expect(vmUnsupported(step({ keyword: 'COPY', parents: true, original: 'COPY --parents a/b /dst/' }))).toBeUndefined();
    expect(vmUnsupported(step({ keyword: 'ADD', exclude: ['*.log'], original: 'ADD --exclude=*.log . /dst/' }))).toBeUndefined();
  });
});

describe('the engine a build uses', () => {
  test.each([
    ['rootfs', undefined, undefined, 'vm'],
    ['rootfs', undefined, 'nginx:1', 'docker'],
    ['rootfs', 'docker', undefined, 'docker'],
    ['rootfs', 'vm', undefined, 'vm'],
    ['baseos', undefined, undefined, 'docker'],
  ] as ['rootfs' | 'baseos', string | undefined, string | undefined, string][])('%s --engine %s --docker-image %s: %s', (type, engine, image, want) => {
    expect(resolveEngine(type, engine, image)).toBe(want);
  });
});

describe('a failed RUN names its likely cause', () => {
  const aptOffline = 'Err:1 http://deb.debian.org/debian bookworm InRelease\n  Temporary failure resolving \'deb.debian.org\'\nE: Unable to locate package curl';
  test.each([
    ['E: Write error - write (28: No space left on device)', 'user', ' (the build disk is full: grow it with --size)'],
    [aptOffline, 'none', ' (the build VM has no network: --network none; build with --network user or a CNI network)'],
    [aptOffline, 'user', ' (the network is unreachable inside the build VM)'],
    ['W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease', 'user', ' (the network is unreachable inside the build VM)'],
    ['E: Unable to locate package nosuchpkg', 'user', ' (apt knows no such package: is apt-get update in the same RUN, and did it reach its mirrors? without network its lists are empty)'],
    ['make: *** [all] Error 2', 'user', ''],
  ] as [string, 'user' | 'none', string][])('%#', (output, network, hint) => {
    expect(failureHint(output, network)).toBe(hint);
  });
});
