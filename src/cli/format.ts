/** Plain-text output helpers for the CLI face. */
import { formatBytes } from '../util/size.js';

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

/** Bytes as a table cell: `512.0 MiB` (the same form as messages use). */
export const humanBytes = formatBytes;

export function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + '\n';
}
