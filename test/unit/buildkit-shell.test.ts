import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lookupFrom, processWord, processWords } from '../../src/dockerfile/shell-lex.js';

/**
 * BuildKit's own lexer test data (test/fixtures/buildkit/shell, see NOTICE there), run as BuildKit's
 * lex_test.go runs it: envVarTest through ProcessWord, wordsTest through ProcessWords, and the cases of
 * lex_test.go's table tests. Every vector passes: there is no deliberate difference here.
 */
const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'buildkit', 'shell');
const lines = (f: string): string[] => fs.readFileSync(path.join(DIR, f), 'utf8').split('\n');

describe('envVarTest (ProcessWord)', () => {
  // BuildKit's reader: skip lines starting with #, trim, skip blanks; `platform|source|expected`, A and U apply off Windows.
  const env = lookupFrom(['PWD=/home', 'SHELL=bash', 'KOREAN=한국어', 'NULL=']);
  const cases: [number, string, string][] = [];
  lines('envVarTest').forEach((raw, i) => {
    if (raw.startsWith('#')) return;
    const line = raw.trim();
    if (line === '') return;
    const parts = line.split('|');
    if (parts.length !== 3) throw new Error(`envVarTest line ${i + 1}: expected platform|source|expected`);
    const [platform, source, expected] = parts.map((p) => p.trim()) as [string, string, string];
    if (platform === 'A' || platform === 'U') cases.push([i + 1, source, expected]);
  });

  test('the file has its vectors', () => expect(cases.length).toBeGreaterThan(200));

  test.each(cases)('line %d: %s -> %s', (_line, source, expected) => {
    if (expected === 'error') expect(() => processWord(source, env)).toThrow();
    else expect(processWord(source, env)).toBe(expected);
  });
});

describe('wordsTest (ProcessWords)', () => {
  // BuildKit's reader: `ENV k=v` lines add to the environment; `source | w1,w2` (an error gives the word "error").
  const cases: [number, string, string[], string[]][] = [];
  const envs: string[] = [];
  lines('wordsTest').forEach((line, i) => {
    if (line.startsWith('#')) return;
    if (line.startsWith('ENV ')) {
      envs.push(line.slice(3).replace(/^ +/, ''));
      return;
    }
    if (line === '') return; // the file's final newline
    const parts = line.split('|');
    if (parts.length !== 2) throw new Error(`wordsTest line ${i + 1}: expected exactly one |`);
    cases.push([i + 1, (parts[0] as string).trim(), (parts[1] as string).replace(/^ +/, '').split(','), [...envs]]);
  });

  test('the file has its vectors', () => expect(cases.length).toBeGreaterThan(20));

  test.each(cases)('line %d: %s', (_line, source, expected, env) => {
    let got: string[];
    try {
      got = processWords(source, lookupFrom(env));
    } catch {
      got = ['error'];
    }
    expect(got).toEqual(expected);
  });
});

describe("lex_test.go's table tests (ProcessWord)", () => {
  interface Case {
    input: string;
    envs: Record<string, string>;
    expected?: string;
    error?: boolean;
    errorContains?: string;
  }
  const data = JSON.parse(fs.readFileSync(path.join(DIR, 'process-word-cases.json'), 'utf8')) as Record<string, Case[] | string>;
  for (const name of ['TestProcessWithMatches', 'TestProcessWithMatchesPlatform', 'TestShellParserMandatoryEnvVars']) {
    const cases = data[name] as Case[];
    test.each(cases.map((c, i) => [i, c.input, c] as const))(`${name} %d: %s`, (_i, input, c) => {
      const run = (): string => processWord(input, lookupFrom(c.envs));
      if (c.error) expect(run).toThrow();
      else if (c.errorContains) expect(run).toThrow(c.errorContains);
      else expect(run()).toBe(c.expected);
    });
  }
});
