/** Go's unicode.IsSpace. */
export const isGoSpace = (c: string): boolean => /^[\s\u0085]$/u.test(c) && c !== '\ufeff';

/**
 * BuildKit's `parseWords`: split on whitespace outside quotes, keeping quotes and escapes in the words
 * (they are removed later by expansion). Used for ENV, LABEL and ARG.
 */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  const chars = Array.from(rest);
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  for (let pos = 0; pos <= chars.length; pos++) {
    const atEnd = pos === chars.length;
    let ch = atEnd ? '' : (chars[pos] as string);
    if (phase === 'spaces') {
      if (atEnd) break;
      if (isGoSpace(ch)) continue;
      phase = 'word';
    }
    if (atEnd) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos] as string;
      }
      word += ch;
      continue;
    }
    // in quote
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos] as string;
    }
    word += ch;
  }
  return words;
}

/** Go's strings.TrimSpace. */
export function goTrimSpace(s: string): string {
  const chars = Array.from(s);
  let a = 0;
  let b = chars.length;
  while (a < b && isGoSpace(chars[a] as string)) a++;
  while (b > a && isGoSpace(chars[b - 1] as string)) b--;
  return chars.slice(a, b).join('');
}

/** BuildKit's whitespace for splitting arguments (`[\t\v\f\r ]+`). */
export const WHITESPACE = /[\t\v\f\r ]+/;

export interface NameVal {
  key: string;
  value: string;
  /** `=` for `KEY=value`, empty for the legacy `KEY value` form. */
  sep: '' | '=';
}

/**
 * BuildKit's parser for ENV and LABEL: `KEY=value ...` pairs (quotes and escapes kept, removed later by
 * expansion), or the legacy `KEY value` form, told apart by whether the first word has a `=`.
 */
export function parseNameVal(rest: string, escape: string, keyword: string): NameVal[] {
  const words = parseWords(rest, escape);
  if (words.length === 0) return [];
  if (!(words[0] as string).includes('=')) {
    const m = /^([\s\S]*?)[\t\v\f\r ]+([\s\S]*)$/.exec(rest);
    if (!m) throw new Error(`${keyword} must have two arguments: write ${keyword} key=value`);
    return [{ key: m[1] as string, value: m[2] as string, sep: '' }];
  }
  return words.map((w) => {
    const i = w.indexOf('=');
    if (i < 0) throw new Error(`syntax error: can't find = in "${w}"; write ${keyword} name=value`);
    return { key: w.slice(0, i), value: w.slice(i + 1), sep: '=' };
  });
}
