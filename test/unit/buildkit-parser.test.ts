import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chompHeredocContent, heredocsFromLine, parseAst, parseHeredoc, type AstNode } from '../../src/dockerfile/parse.js';
import { parseWords } from '../../src/dockerfile/words.js';

/**
 * BuildKit's own parser test data (test/fixtures/buildkit/parser, see NOTICE there), run as BuildKit's
 * parser_test.go and parser_heredoc_test.go run it: every Dockerfile of testfiles/ parses to the AST
 * its golden `result` file prints (in BuildKit's Node.Dump format, rebuilt here), every Dockerfile of
 * testfiles-negative/ is refused, and the heredoc cases find the same heredocs. Every vector passes:
 * there is no deliberate difference here.
 */
const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'buildkit', 'parser');

/** Go's strconv.Quote. */
function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '\x07') out += '\\a';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\v') out += '\\v';
    else if (ch === ' ' || /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u.test(ch)) out += ch;
    else if (c < 0x80) out += '\\x' + c.toString(16).padStart(2, '0');
    else if (c <= 0xffff) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += '\\U' + c.toString(16).padStart(8, '0');
  }
  return out + '"';
}

/** BuildKit's Node.Dump of one instruction: `keyword ["flags"] "arg"...`, ONBUILD with its trigger in parentheses. */
function dumpNode(n: AstNode): string {
  let s = n.value.toLowerCase();
  if (n.flags.length) s += ` [${n.flags.map(goQuote).join(' ')}]`;
  if (n.sub) s += ` (${dumpNode(n.sub)})`;
  for (const a of n.args.slice(n.sub ? n.args.length : 0)) s += ` ${goQuote(a)}`;
  return s.trim();
}

const dump = (nodes: AstNode[]): string => nodes.map((n) => `(${dumpNode(n)})`).join('\n');

describe('testfiles: the AST of each Dockerfile is its golden result', () => {
  const cases = fs.readdirSync(path.join(DIR, 'testfiles')).sort();
  test('the corpus is there', () => expect(cases.length).toBeGreaterThanOrEqual(33));
  test.each(cases)('%s', (name) => {
    const text = fs.readFileSync(path.join(DIR, 'testfiles', name, 'Dockerfile'), 'utf8');
    const want = fs.readFileSync(path.join(DIR, 'testfiles', name, 'result'), 'utf8');
    expect(dump(parseAst(text).nodes) + '\n').toBe(want);
  });
});

describe('testfiles-negative: each Dockerfile is refused', () => {
  const cases = fs.readdirSync(path.join(DIR, 'testfiles-negative')).sort();
  test.each(cases)('%s', (name) => {
    const text = fs.readFileSync(path.join(DIR, 'testfiles-negative', name, 'Dockerfile'), 'utf8');
    expect(() => parseAst(text)).toThrow();
  });
});

test('testfile-line: each instruction keeps its first and last line (TestParseIncludesLineNumbers)', () => {
  const nodes = parseAst(fs.readFileSync(path.join(DIR, 'testfile-line', 'Dockerfile'), 'utf8')).nodes;
  expect(nodes.map((n) => [n.startLine, n.endLine])).toEqual([[5, 5], [11, 12], [17, 31]]);
});

describe('parser_test.go', () => {
  const data = JSON.parse(fs.readFileSync(path.join(DIR, 'parser-cases.json'), 'utf8')) as {
    TestParseWords: { input: string; expect: string[] }[];
    TestParseWarnsOnEmptyContinutationLine: { dockerfile: string; warnings: number; lines: string[] };
    TestParseReturnsScannerErrors: { dockerfile: string; label: { repeat: string; count: number }; error: string };
  };
  test.each(data.TestParseWords.map((c) => [c.input, c.expect] as const))('TestParseWords: %s', (input, want) => {
    expect(parseWords(input, '\\')).toEqual(want);
  });

  test('TestParseWarnsOnEmptyContinutationLine', () => {
    const c = data.TestParseWarnsOnEmptyContinutationLine;
    const found = parseAst(c.dockerfile).emptyContinuations;
    expect(found).toHaveLength(c.warnings);
    c.lines.forEach((l, i) => expect(found[i]?.logical).toContain(l));
  });

  test('TestParseReturnsScannerErrors: a line longer than 65535 bytes', () => {
    const c = data.TestParseReturnsScannerErrors;
    expect(() => parseAst(c.dockerfile.replace('%s', c.label.repeat.repeat(c.label.count)))).toThrow(/longer than 65535 bytes/);
  });
});

interface HeredocCase {
  name: string;
  fileDescriptor: number;
  expand: boolean;
  chomp: boolean;
  content: string;
}

describe('parser_heredoc_test.go', () => {
  const data = JSON.parse(fs.readFileSync(path.join(DIR, 'heredoc-cases.json'), 'utf8')) as {
    TestParseExtractsHeredoc: { dockerfile: string; children: (HeredocCase[] | null)[] };
    TestParseJSONHeredoc: { dockerfile: string; children: null[] };
    TestParseHeredocHelpers: { valid: string[]; validName: string; invalid: string[]; notHeredocs: string[] };
    TestHeredocsFromLine: { line: string; heredocNames: string[] }[];
  };
  const heredocs = (n: AstNode | undefined): HeredocCase[] | null => (n && n.heredocs.length ? n.heredocs.map((h) => ({ name: h.name, fileDescriptor: h.fileDescriptor, expand: h.expand, chomp: h.chomp, content: h.content })) : null);

  describe('TestParseExtractsHeredoc', () => {
    const nodes = parseAst(data.TestParseExtractsHeredoc.dockerfile).nodes;
    test.each(data.TestParseExtractsHeredoc.children.map((want, i) => [i + 1, nodes[i + 1]?.original ?? '', want] as const))('child %d: %s', (i, _line, want) => {
      expect(heredocs(nodes[i])).toEqual(want);
    });
  });

  test('TestParseJSONHeredoc: the JSON form opens no heredoc', () => {
    const nodes = parseAst(data.TestParseJSONHeredoc.dockerfile).nodes;
    for (const i of [1, 2, 3]) expect(heredocs(nodes[i])).toBeNull();
  });

  describe('TestParseHeredocHelpers', () => {
    const h = data.TestParseHeredocHelpers;
    test.each(h.notHeredocs)('not a heredoc: %j', (src) => expect(parseHeredoc(src)).toBeUndefined());
    test.each(h.valid)('a heredoc named EOF: %s', (src) => expect(parseHeredoc(src)?.name).toBe(h.validName));
    test.each(h.invalid)('an error: %s', (src) => expect(() => parseHeredoc(src)).toThrow());
  });

  // As the Go test checks it: each heredoc found has the expected name at its position.
  test.each(data.TestHeredocsFromLine.map((c) => [c.line, c.heredocNames] as const))('TestHeredocsFromLine: %s', (line, names) => {
    const found = heredocsFromLine(line);
    expect(found.length).toBeLessThanOrEqual(names.length);
    found.forEach((doc, i) => expect(doc.name).toBe(names[i]));
  });

  test('TestHeredocChomp', () => {
    expect(chompHeredocContent('\thello\n\tworld\n')).toBe('hello\nworld\n');
  });
});
