import { describe, expect, test } from '@jest/globals';
import { runArgv } from '../../src/build/vm-engine.js';
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
