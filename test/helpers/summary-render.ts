import MarkdownIt from 'markdown-it';

/**
 * A job summary as GitHub shows it: CommonMark + GFM (tables) with raw HTML passed through, rendered by
 * markdown-it (CommonMark-compliant; its default preset has GFM tables; `html: true` as GitHub allows
 * HTML). Then the rendered tables are read back as cell text, so a test asserts what a reader sees,
 * not the Markdown source (a `toContain` on the source passed while GitHub showed raw pipes).
 */
const md = new MarkdownIt({ html: true });

export function renderSummary(markdown: string): string {
  return md.render(markdown);
}

export interface RenderedTable {
  /** Every row's cells (th and td), as text: tags stripped, entities decoded, whitespace collapsed. */
  rows: string[][];
  /** The table's rendered HTML (e.g. to check a link's href). */
  html: string;
}

function text(html: string): string {
  return html
    .replace(/<[^>]*>/g, '')
    .replace(/&(#x[0-9a-f]+|#\d+|lt|gt|quot|amp|apos|#39);/gi, (_m, e: string) => {
      const named: Record<string, string> = { lt: '<', gt: '>', quot: '"', amp: '&', apos: "'" };
      if (e.startsWith('#x') || e.startsWith('#X')) return String.fromCodePoint(parseInt(e.slice(2), 16));
      if (e.startsWith('#')) return String.fromCodePoint(Number(e.slice(1)));
      return named[e.toLowerCase()] ?? '';
    })
    .replace(/\s+/g, ' ')
    .trim();
}

/** The tables of rendered HTML (the summaries hold no nested tables). */
export function tablesOf(html: string): RenderedTable[] {
  return [...html.matchAll(/<table\b[^>]*>([\s\S]*?)<\/table>/g)].map((t) => ({
    html: t[0],
    rows: [...(t[1] as string).matchAll(/<tr\b[^>]*>([\s\S]*?)<\/tr>/g)].map((r) => [...(r[1] as string).matchAll(/<t([hd])\b[^>]*>([\s\S]*?)<\/t\1>/g)].map((c) => text(c[2] as string))),
  }));
}

/**
 * Lines of the rendered page that are Markdown table syntax shown as text: what GitHub showed when a
 * table followed an HTML block without a blank line (the block swallowed it).
 */
export function rawPipeLines(html: string): string[] {
  const outside = html.replace(/<table\b[\s\S]*?<\/table>/g, '');
  return outside.split('\n').filter((l) => /^\s*\|.*\|\s*$/.test(text(l)) || /\|\s*:?-{3,}:?\s*\|/.test(l));
}

/**
 * Render a job summary and return its tables; throws (naming the lines) when any Markdown table shows
 * as raw pipes, or when no table renders at all.
 */
export function summaryTables(markdown: string): RenderedTable[] {
  const html = renderSummary(markdown);
  const raw = rawPipeLines(html);
  if (raw.length) throw new Error(`the summary shows Markdown table syntax as text (a table swallowed by an HTML block?): ${raw.join(' / ')}`);
  const tables = tablesOf(html);
  if (!tables.length) throw new Error(`the summary renders no table: ${html}`);
  return tables;
}

/** A two-column (label, value) table as an object: { label: value }. */
export function factsOf(table: RenderedTable): Record<string, string> {
  return Object.fromEntries(table.rows.filter((r) => r.length === 2).map((r) => [r[0], r[1]]));
}
