import * as core from '@actions/core';
import { formatBytes } from '../util/size.js';
import { boolInput } from './common.js';

/**
 * The actions' job summaries, built with the toolkit's summary API (core.summary) as HTML that GitHub's
 * CommonMark + GFM renderer shows as tables. Why HTML and blank lines: an HTML block (the `<h3>` heading
 * the toolkit writes) runs until a blank line in CommonMark, so a Markdown table written right after it
 * became part of the block and showed as raw pipes. Here every element is HTML, every value is escaped
 * (HTML blocks are not Markdown: backticks would stay backticks, a stray `<` would open a tag), no value
 * holds a blank line, and every element ends with one, so whatever follows starts a block of its own.
 */

/** A table cell: text, a value in `<code>`, or a link. */
export type Cell = string | { code: string } | { link: string; text?: string };

export interface SummaryTable {
  title?: string;
  header: string[];
  rows: Cell[][];
}

export interface JobSummary {
  /** The `<h3>` heading. */
  title: string;
  /** Key/value facts: a table whose first column (header cells) names each value. */
  facts: [string, Cell][];
  /** More tables after the facts (e.g. the smoke test's probes), each under an `<h4>` title. */
  tables?: SummaryTable[];
  /** Commands to copy (e.g. the pull command), each a label then a code block. */
  commands?: { label: string; command: string }[];
}

/** The `summary` input every action has (default true): false writes no job summary. */
export function summaryInput(): boolean {
  return boolInput('summary', true);
}

export function escapeHtml(s: string): string {
  // Newlines too: a blank line would end the HTML block mid-table.
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/\r?\n/g, ' ');
}

function cellHtml(c: Cell): string {
  if (typeof c === 'string') return escapeHtml(c);
  if ('code' in c) return `<code>${escapeHtml(c.code)}</code>`;
  return `<a href="${escapeHtml(c.link)}">${escapeHtml(c.text ?? c.link)}</a>`;
}

/** Bytes for a reader: `12.3 MiB` (binary units, as the CLI prints them). */
export function formatSize(bytes: number): string {
  return formatBytes(bytes);
}

/** A duration for a reader: `850 ms`, `12.3 s`, `2 min 05 s`, `1 h 02 min`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

/**
 * Append the summary to the toolkit's buffer (`summary`: core.summary; tests read it back with
 * stringify()). Blank lines between the elements: see the module comment.
 */
export function buildSummary(s: JobSummary, summary: typeof core.summary = core.summary): typeof core.summary {
  summary.addHeading(escapeHtml(s.title), 3).addEOL();
  if (s.facts.length) summary.addTable(s.facts.map(([k, v]) => [{ data: escapeHtml(k), header: true }, cellHtml(v)])).addEOL();
  for (const t of s.tables ?? []) {
    if (t.title) summary.addHeading(escapeHtml(t.title), 4).addEOL();
    summary.addTable([t.header.map((h) => ({ data: escapeHtml(h), header: true })), ...t.rows.map((r) => r.map(cellHtml))]).addEOL();
  }
  for (const c of s.commands ?? []) summary.addRaw(`<p>${escapeHtml(c.label)}</p>`, true).addEOL().addCodeBlock(escapeHtml(c.command), 'sh').addEOL();
  return summary;
}

/**
 * Write the step's job summary, unless the workflow turned it off (`summary: false`) or the step runs
 * outside a runner (no GITHUB_STEP_SUMMARY). A summary is a report, never the work: a failed write is a
 * warning, not a failed step.
 */
export async function writeSummary(s: JobSummary, enabled: boolean): Promise<void> {
  if (!enabled) return core.debug('summary: false, no job summary written');
  if (!process.env.GITHUB_STEP_SUMMARY) return core.debug('no GITHUB_STEP_SUMMARY: no job summary written');
  try {
    await buildSummary(s).write();
  } catch (err) {
    core.warning(`could not write the job summary: ${(err as Error).message}`);
  } finally {
    core.summary.emptyBuffer();
  }
}
