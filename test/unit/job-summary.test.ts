import { afterEach, describe, expect, test } from '@jest/globals';
import * as core from '@actions/core';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildSummary, formatDuration, formatSize, summaryInput, writeSummary, type JobSummary } from '../../src/actions/summary.js';
import { factsOf, renderSummary, summaryTables } from '../helpers/summary-render.js';

/**
 * The actions' job summaries (src/actions/summary.ts), rendered as GitHub renders them (CommonMark + GFM,
 * raw HTML allowed; test/helpers/summary-render.ts) and read back as table cells.
 */
afterEach(() => {
  core.summary.emptyBuffer();
  delete process.env.INPUT_SUMMARY;
});

const digest = `sha256:${'ab'.repeat(32)}`;
const publish: JobSummary = {
  title: 'firebuild publish: examples/hello:ci',
  facts: [
    ['OCI artifact', { code: 'ghcr.io/acme/hello:1' }],
    ['digest', { code: digest }],
    ['compressed size', formatSize(12_900_000)],
    ['release', { link: 'https://github.com/acme/hello/releases/tag/v1', text: 'v1' }],
    // What a value may hold: HTML, pipes, an ampersand, a blank line (which would end an HTML block).
    ['source', 'FROM x AS <build> | RUN a && b\n\nCMD ["sh"]'],
  ],
  tables: [{ title: 'Probes', header: ['probe', 'expected', 'result'], rows: [[{ code: 'GET http://127.0.0.1:8080/?a=1&b=2' }, 'status 200', 'passed']] }],
  commands: [{ label: 'Pull it:', command: `firebuild image pull ghcr.io/acme/hello@${digest}` }],
};

describe('job summaries render as tables', () => {
  test('facts, a titled table and a command: every cell reads back as given, the link keeps its href, the command is a code block', () => {
    const tables = summaryTables(buildSummary(publish).stringify());
    expect(tables.map((t) => t.rows)).toEqual([
      [
        ['OCI artifact', 'ghcr.io/acme/hello:1'],
        ['digest', digest],
        ['compressed size', '12.3 MiB'],
        ['release', 'v1'],
        ['source', 'FROM x AS <build> | RUN a && b CMD ["sh"]'],
      ],
      [['probe', 'expected', 'result'], ['GET http://127.0.0.1:8080/?a=1&b=2', 'status 200', 'passed']],
    ]);
    expect(tables[0]!.html).toContain('<a href="https://github.com/acme/hello/releases/tag/v1">v1</a>');
    expect(factsOf(tables[0]!)).toMatchObject({ digest });
    const html = renderSummary(core.summary.stringify());
    expect(html).toMatch(/^<h3>firebuild publish: examples\/hello:ci<\/h3>/);
    expect(html).toContain('<h4>Probes</h4>');
    expect(html).toContain(`<pre lang="sh"><code>firebuild image pull ghcr.io/acme/hello@${digest}</code></pre>`);
    // No value opened a tag of its own.
    expect(html).not.toContain('<build>');
  });

  test('the old form (a Markdown table right after the <h3> HTML block, no blank line) fails the check: GitHub showed it as raw pipes', () => {
    const old = core.summary.addHeading('firebuild rootfs: a/b:1', 3).addRaw('| | |\n| --- | --- |\n| tag | `a/b:1` |\n').stringify();
    expect(() => summaryTables(old)).toThrow(/shows Markdown table syntax as text .*\| --- \| --- \|/);
    // The same table after a blank line renders: the check is about the form, not Markdown tables.
    core.summary.emptyBuffer();
    const fixed = core.summary.addHeading('firebuild rootfs: a/b:1', 3).addEOL().addRaw('| | |\n| --- | --- |\n| tag | `a/b:1` |\n').stringify();
    expect(summaryTables(fixed).map((t) => t.rows)).toEqual([[['', ''], ['tag', 'a/b:1']]]);
  });

  test('a summary ends with a blank line: Markdown another step appends after it renders (a table, not pipes)', () => {
    const text = buildSummary({ title: 't', facts: [['a', 'b']] }).addRaw('| x | y |\n| --- | --- |\n| 1 | 2 |\n').stringify();
    expect(summaryTables(text).map((t) => t.rows)).toEqual([[['a', 'b']], [['x', 'y'], ['1', '2']]]);
  });
});

describe('writing the summary', () => {
  const withSummaryFile = async (fn: (file: string) => Promise<void>): Promise<void> => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-summary-'));
    const file = path.join(dir, 'summary.md');
    fs.writeFileSync(file, '');
    const before = process.env.GITHUB_STEP_SUMMARY;
    process.env.GITHUB_STEP_SUMMARY = file;
    try {
      await fn(file);
    } finally {
      if (before === undefined) delete process.env.GITHUB_STEP_SUMMARY;
      else process.env.GITHUB_STEP_SUMMARY = before;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };

  test('appended to GITHUB_STEP_SUMMARY when enabled; nothing with summary: false; the buffer is left empty', async () => {
    await withSummaryFile(async (file) => {
      await writeSummary(publish, false);
      expect(fs.readFileSync(file, 'utf8')).toBe('');
      await writeSummary(publish, true);
      expect(summaryTables(fs.readFileSync(file, 'utf8'))).toHaveLength(2);
      expect(core.summary.stringify()).toBe('');
    });
  });

  test('outside a runner (no GITHUB_STEP_SUMMARY) nothing is written and nothing fails', async () => {
    const before = process.env.GITHUB_STEP_SUMMARY;
    delete process.env.GITHUB_STEP_SUMMARY;
    try {
      await expect(writeSummary(publish, true)).resolves.toBeUndefined();
    } finally {
      if (before !== undefined) process.env.GITHUB_STEP_SUMMARY = before;
    }
  });

  test("the summary input: default true, 'false' turns it off, anything else is one line naming the input", () => {
    expect(summaryInput()).toBe(true);
    process.env.INPUT_SUMMARY = 'false';
    expect(summaryInput()).toBe(false);
    process.env.INPUT_SUMMARY = 'maybe';
    expect(() => summaryInput()).toThrow("input 'summary' is 'maybe': use true or false");
  });
});

test.each([
  [850, '850 ms'],
  [12_345, '12.3 s'],
  [125_000, '2 min 05 s'],
  [3_725_000, '1 h 02 min'],
])('formatDuration(%d) is %s', (ms, want) => {
  expect(formatDuration(ms)).toBe(want);
});

test.each([
  [512, '512 B'],
  [12_900_000, '12.3 MiB'],
  [3 * 1024 ** 3, '3.0 GiB'],
])('formatSize(%d) is %s', (n, want) => {
  expect(formatSize(n)).toBe(want);
});
