import { describe, expect, test } from '@jest/globals';
import { lookupFrom, processWord, processWords } from '../../src/dockerfile/shell-lex.js';

// Test vectors in the shape of BuildKit's shell lexer tests (frontend/dockerfile/shell/envVarTest).
const env = lookupFrom({ PWD: '/home', SHELL: 'bash', NULL: '' });

const wordTable = `
hello                    |hello
he'll'o                  |hello
he'llo                   |error
he\\'llo                 |he'llo
he\\\\'llo               |error
abc\\tdef                |abctdef
"abc\\tdef"              |abc\\tdef
"abc\\\\tdef"            |abc\\tdef
'abc\\tdef'              |abc\\tdef
hello\\                  |hello
hello\\\\                |hello\\
"hello                   |error
"hello\\"                |error
"hel'lo"                 |hel'lo
'hello                   |error
'hello\\'                |hello\\
'hello\\there'           |hello\\there
'hello\\\\there'         |hello\\\\there
"''"                     |''
$.                       |$.
he$1x                    |hex
he$.x                    |he$.x
he$pwd.                  |he.
he$PWD                   |he/home
he\\$PWD                 |he$PWD
he\\\\$PWD               |he\\/home
"he\\$PWD"               |he$PWD
"he\\\\$PWD"             |he\\/home
\\\${}                   |\${}
\\\${}aaa                |\${}aaa
he\\\${}                 |he\${}
\${}                     |error
\${}aaa                  |error
he\${}                   |error
he\${hi}                 |he
he\${hi}xx               |hexx
he\${PWD}                |he/home
he\${.}                  |error
he\${XXX:-000}xx         |he000xx
he\${PWD:-000}xx         |he/homexx
he\${XXX:-$PWD}xx        |he/homexx
he\${XXX:-\${PWD:-yyy}}xx|he/homexx
he\${XXX:-\${YYY:-yyy}}xx|heyyyxx
he\${XXX:YYY}            |error
he\${XXX?}               |error
he\${XXX:?}              |error
he\${PWD?}               |he/home
he\${PWD:?}              |he/home
he\${NULL?}              |he
he\${NULL:?}             |error
he\${NULL:-x}            |hex
he\${NULL-x}             |he
he\${XXX-x}              |hex
he\${NULL+x}             |hex
he\${NULL:+x}            |he
he\${XXX+x}              |he
he\${XXX:+\${PWD}}xx     |hexx
he\${PWD:+\${XXX}}xx     |hexx
he\${PWD:+\${SHELL}}xx   |hebashxx
he\${XXX:+000}xx         |hexx
he\${PWD:+000}xx         |he000xx
'he\${XX}'               |he\${XX}
"he\${PWD}"              |he/home
"he'$PWD'"               |he'/home'
"$PWD"                   |/home
'$PWD'                   |$PWD
'\\$PWD'                 |\\$PWD
'"hello"'                |"hello"
'he\\$PWD'               |he\\$PWD
he\${PWD                 |error
he\${PWD:=000}xx         |error
he\${PWD:+\${PWD}:}xx    |he/home:xx
he\${XXX:-\\$PWD:}xx     |he$PWD:xx
he\${XXX:-\\\${PWD}z}xx  |he\${PWDz}xx
안녕하세요               |안녕하세요
안'녕'하세요             |안녕하세요
안'녕하세요              |error
안녕\\'하세요            |안녕'하세요
"안녕\\t하세요"          |안녕\\t하세요
$ 하                     |$ 하
`;

function rows(table: string): [string, string][] {
  return table
    .trim()
    .split('\n')
    .map((l) => {
      const i = l.lastIndexOf('|');
      return [l.slice(0, i).trimEnd(), l.slice(i + 1)];
    });
}

describe('processWord: BuildKit lexer vectors', () => {
  test.each(rows(wordTable))('%s -> %s', (input, want) => {
    if (want === 'error') expect(() => processWord(input, env)).toThrow();
    else expect(processWord(input, env)).toBe(want);
  });
});

describe("pattern forms, from Docker's Dockerfile reference (str=foobarbaz)", () => {
  const e = lookupFrom({ str: 'foobarbaz', URL: 'https://example.com/a/b.tar.gz' });
  test.each([
    ['${str#f*b}', 'arbaz'],
    ['${str##f*b}', 'az'],
    ['${str%b*}', 'foobar'],
    ['${str%%b*}', 'foo'],
    ['${str/ba/fo}', 'fooforbaz'],
    ['${str//ba/fo}', 'fooforfoz'],
    ['${str/x/y}', 'foobarbaz'],
    ['${str#zzz}', 'foobarbaz'],
    ['${str%?}', 'foobarba'],
    // BuildKit's patterns know * and ? only: brackets are literal characters.
    ['${str#[a-f]}', 'foobarbaz'],
    ['${str#?[o]}', 'foobarbaz'],
    ['${URL##*/}', 'b.tar.gz'],
    ['${URL%.tar.gz}', 'https://example.com/a/b'],
    ['${URL#https://}', 'example.com/a/b.tar.gz'],
    ['${str//o/}', 'fbarbaz'],
    ['${UNSET#x}', ''],
  ])('%s -> %s', (input, want) => {
    expect(processWord(input, e)).toBe(want);
  });

  test("${v//p} without the second / is an error, as BuildKit's", () => {
    expect(() => processWord('${str//o}', e)).toThrow("missing '/'");
  });
});

describe('processWords: splitting like Docker', () => {
  const e = lookupFrom({ hi: 'hi', space: 'abc  def', leading: '  ab c', trailing: 'ab c   ' });
  test.each<[string, string[] | 'error']>([
    ['hello', ['hello']],
    ['hello${hi}bye', ['hellohibye']],
    ['hello${space}bye', ['helloabc', 'defbye']],
    ['hello"${space}"bye', ['helloabc  defbye']],
    ['hello "${space}"bye', ['hello', 'abc  defbye']],
    ['hello${leading}def', ['hello', 'ab', 'cdef']],
    ['hello"${leading}"', ['hello  ab c']],
    ['hello${leading}', ['hello', 'ab', 'c']],
    ['hello${trailing}', ['helloab', 'c']],
    ['hello${trailing}d', ['helloab', 'c', 'd']],
    ['hello"${trailing}"d', ['helloab c   d']],
    ['hel"lo${trailing}"', ['helloab c   ']],
    ['hello" there  "', ['hello there  ']],
    ['hello there', ['hello', 'there']],
    ['hello\\ there', ['hello there']],
    ['hello" there', 'error'],
    ['hello\\" there', ['hello"', 'there']],
    ['hello"\\\\there"', ['hello\\there']],
    ['hello"\\there"', ['hello\\there']],
    ["hello'\\\\there'", ['hello\\\\there']],
    ["hello'\\there'", ['hello\\there']],
    ["hello'$there'", ['hello$there']],
  ])('%s', (input, want) => {
    if (want === 'error') expect(() => processWords(input, e)).toThrow();
    else expect(processWords(input, e)).toEqual(want);
  });
});

test('the escape directive changes the escape token', () => {
  const e = lookupFrom({ A: 'x' });
  expect(processWord('C:\\path\\$A', e, { escape: '`' })).toBe('C:\\path\\x');
  expect(processWord('a`$A', e, { escape: '`' })).toBe('a$A');
});
