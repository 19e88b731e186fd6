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

  test('arguments that start like JSON but do not parse are shell form, as BuildKit reads them', () => {
    // The shell's own test syntax: this used to be refused as broken JSON.
    const i = parseDockerfile('FROM a\nRUN [ "$A" = "b" ] && echo ok\nCMD ["echo", "unterminated]\n').instructions;
    expect(i[1]?.json).toBeUndefined();
    expect(i[1]?.args).toEqual(['[ "$A" = "b" ] && echo ok']);
    expect(i[2]?.json).toBeUndefined();
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

describe("BuildKit's parser rules (issue 17)", () => {
  const kinds = (text: string): string[] => parseDockerfile(text).instructions.map((i) => i.keyword);

  test('a line ending in an escaped escape ends the instruction; the next one is kept', () => {
    const ins = parseDockerfile('FROM a\nENV A=x\\\\\nENV B=y\n').instructions;
    expect(ins.map((i) => [i.keyword, i.rest, i.line])).toEqual([['FROM', 'a', 1], ['ENV', 'A=x\\\\', 2], ['ENV', 'B=y', 3]]);
    expect(kinds('# escape=`\nFROM a\nRUN echo ``\nRUN echo b\n')).toEqual(['FROM', 'RUN', 'RUN']);
  });

  test('[] and [ ] are the JSON form with no arguments', () => {
    const ins = parseDockerfile('FROM a\nCMD []\nENTRYPOINT [ ]\n').instructions;
    expect(ins[1]?.json).toEqual([]);
    expect(ins[2]?.json).toEqual([]);
  });

  test('heredoc openers as BuildKit reads them', () => {
    const docs = (line: string, body = 'x\n'): unknown => parseDockerfile(`FROM a\n${line}\n${body}`).instructions[1]?.heredocs.map((h) => [h.name, h.expand]);
    expect(docs('RUN <<  EOF', 'x\nEOF\n')).toEqual([['EOF', true]]);
    expect(docs("RUN <<eo'f'", 'x\neof\n')).toEqual([['eof', false]]);
    expect(docs("RUN <<'one two'", 'x\none two\n')).toEqual([['one two', false]]);
    expect(docs('RUN <<$EOF', 'x\n$EOF\n')).toEqual([['$EOF', true]]);
    expect(docs('RUN 3<<EMPTY2', 'EMPTY2\n')).toEqual([['EMPTY2', true]]);
    // Not heredocs: the JSON form, and a quoted word.
    expect(parseDockerfile('FROM a\nRUN ["<<EOF"]\n').instructions[1]).toMatchObject({ json: ['<<EOF'], heredocs: [] });
    expect(parseDockerfile('FROM a\nRUN "<<X"\nCMD x\n').instructions.map((i) => [i.keyword, i.heredocs.length])).toEqual([['FROM', 0], ['RUN', 0], ['CMD', 0]]);
  });

  test('ONBUILD RUN <<EOF takes its heredoc', () => {
    const ins = parseDockerfile('FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nCMD x\n').instructions;
    expect(ins.map((i) => i.keyword)).toEqual(['FROM', 'ONBUILD', 'CMD']);
    expect(ins[1]?.heredocs).toEqual([{ name: 'EOF', content: 'echo hi\n', expand: true, chomp: false }]);
  });

  test.each<[string, string, RegExp]>([
    ['an invalid escape directive', '# escape=x\nFROM a\n', /invalid escape directive 'x'/],
    ['a repeated escape directive', '# escape=`\n# escape=\\\nFROM a\n', /only one escape parser directive/],
    ['a repeated syntax directive', '# syntax=a\n# syntax=b\nFROM a\n', /only one syntax parser directive/],
    ['a bool flag with another value', 'FROM a\nCOPY --link=maybe a b\n', /--link=maybe is not a boolean/],
    ['a string flag without a value', 'FROM a\nCOPY --from a b\n', /--from needs a value/],
    ['a flag given twice', 'FROM a\nCOPY --chown=a --chown=b a b\n', /--chown is given twice/],
    ['a flag in upper case', 'FROM a\nCOPY --FROM=x a b\n', /unknown flag --FROM on COPY/],
  ])('%s is refused', (_n, text, want) => {
    expect(() => parseDockerfile(text)).toThrow(want);
  });

  test('a directive after the first non-directive line is a comment', () => {
    expect(parseDockerfile('# hello\n# escape=`\nFROM a\n').escape).toBe('\\');
    expect(parseDockerfile('\uFEFF# escape=`\nFROM a\n').escape).toBe('`');
  });

  test('ADD --unpack and --exclude are known; ARG and STOPSIGNAL flags are not read (as BuildKit)', () => {
    const i = parseDockerfile('FROM a\nADD --unpack=false --exclude=*.md a.tar /x/\nARG --x=1 A\n').instructions;
    expect(i[1]?.flags).toEqual([{ name: 'unpack', value: 'false' }, { name: 'exclude', value: '*.md' }]);
    expect(i[2]?.args).toEqual(['A']);
  });
});
