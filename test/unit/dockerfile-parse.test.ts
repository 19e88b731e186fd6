import { describe, expect, test } from '@jest/globals';
import { parseDockerfile } from '../../src/dockerfile/parse.js';
import { UserError } from '../../src/util/errors.js';

describe('parseDockerfile', () => {
  test('keeps file and line; joins continuations like BuildKit (comments and blank lines inside are skipped)', () => {
    const df = parseDockerfile('FROM a\n\nRUN echo a \\\n# a comment\n\n  && echo b\nCMD x\n', 'my/Dockerfile');
    expect(df.instructions.map((i) => [i.keyword, i.line, i.endLine])).toEqual([['FROM', 1, 1], ['RUN', 3, 6], ['CMD', 7, 7]]);
    expect(df.instructions[1]?.rest).toBe('echo a   && echo b');
    expect(df.instructions[1]?.file).toBe('my/Dockerfile');
  });

  test('lower-case keywords are accepted', () => {
    expect(parseDockerfile('from a\nrun true\n').instructions.map((i) => i.keyword)).toEqual(['FROM', 'RUN']);
  });

  test('parser directives: escape and syntax', () => {
    const df = parseDockerfile('# syntax=docker/dockerfile:1.7\n# escape=`\nFROM a\nRUN echo a `\n  b\n');
    expect(df.escape).toBe('`');
    expect(df.syntax).toBe('docker/dockerfile:1.7');
    expect(df.instructions[1]?.rest).toBe('echo a   b');
  });

  test('flags are separated from the arguments, values may be quoted', () => {
    const i = parseDockerfile('FROM a\nCOPY --chown=app:app --chmod=0644 --link --from="x" a /b\n').instructions[1];
    expect(i?.flags).toEqual([{ name: 'chown', value: 'app:app' }, { name: 'chmod', value: '0644' }, { name: 'link', value: null }, { name: 'from', value: 'x' }]);
    expect(i?.rest).toBe('a /b');
  });

  test('RUN --mount, --network and --security are recorded', () => {
    const i = parseDockerfile('FROM a\nRUN --mount=type=cache,target=/root/.cache --network=none --security=insecure make\n').instructions[1];
    expect(i?.flags.map((f) => f.name)).toEqual(['mount', 'network', 'security']);
    expect(i?.rest).toBe('make');
  });

  test('JSON form is parsed exactly (spaces inside strings kept)', () => {
    const i = parseDockerfile('FROM a\nCOPY ["a b", "c", "/dst/"]\nCMD ["sh", "-c", "echo \\"hi\\""]\n').instructions;
    expect(i[1]?.json).toEqual(['a b', 'c', '/dst/']);
    expect(i[2]?.json).toEqual(['sh', '-c', 'echo "hi"']);
  });

  test('shell form that merely starts with [ stays shell form', () => {
    const i = parseDockerfile('FROM a\nRUN [ -f /etc/passwd ] && echo ok\n').instructions[1];
    expect(i?.json).toBeUndefined();
    expect(i?.rest).toBe('[ -f /etc/passwd ] && echo ok');
  });

  test('heredocs: several, <<- strips tabs, quoted delimiters do not expand', () => {
    const text = 'FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<-"END" <<two /dst/\n\tline1\n\tEND\nsecond\ntwo\nCMD x\n';
    const ins = parseDockerfile(text).instructions;
    expect(ins.map((i) => i.keyword)).toEqual(['FROM', 'RUN', 'COPY', 'CMD']);
    expect(ins[1]?.heredocs).toEqual([{ name: 'EOF', content: 'echo hi\n', expand: true, chomp: false }]);
    expect(ins[2]?.heredocs).toEqual([
      { name: 'END', content: 'line1\n', expand: false, chomp: true },
      { name: 'two', content: 'second\n', expand: true, chomp: false },
    ]);
    expect(ins[2]?.rest).toBe('<<-"END" <<two /dst/');
    expect(ins[3]?.line).toBe(10);
  });

  test.each<[string, string, RegExp]>([
    ['unknown instruction', 'FROM a\nFOO bar\n', /^unknown instruction FOO/],
    ['JSON form that is not valid JSON', 'FROM a\nRUN [ "bad json\n', /RUN arguments start like JSON but are not valid JSON/],
    ['JSON that is not an array of strings', 'FROM a\nCMD ["a", 1]\n', /must be an array of strings/],
    ['SHELL without JSON', 'FROM a\nSHELL /bin/bash -c\n', /SHELL requires the JSON form/],
    ['unknown flag', 'FROM a\nCOPY --owner=x a b\n', /unknown flag --owner on COPY/],
    ['flag on an instruction without flags', 'FROM a\nWORKDIR --x=1 /a\n', /WORKDIR takes no flags/],
    ['an unterminated heredoc', 'FROM a\nRUN <<EOF\necho\n', /heredoc <<EOF is not terminated/],
  ])('%s is a UserError with file:line', (_n, text, want) => {
    let err: unknown;
    try {
      parseDockerfile(text, 'Dockerfile');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(want);
    expect((err as UserError).file).toBe('Dockerfile');
    expect((err as UserError).line).toBe(2);
  });
});
