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
      if (/\s/.test(ch)) continue;
      phase = 'word';
    }
    if (atEnd) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (/\s/.test(ch)) {
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

/** `KEY=value ...` pairs, or the legacy `KEY value` form (ENV, LABEL). */
export function parseNameVal(rest: string, escape: string, keyword: string): { key: string; value: string }[] {
  const words = parseWords(rest, escape);
  if (words.length === 0) throw new Error(`${keyword} needs at least one key=value pair`);
  if (!(words[0] as string).includes('=')) {
    const m = /^(\S+)\s+([\s\S]+)$/.exec(rest.trim());
    if (!m) throw new Error(`${keyword} must have two arguments: write ${keyword} key=value`);
    return [{ key: m[1] as string, value: m[2] as string }];
  }
  return words.map((w) => {
    const i = w.indexOf('=');
    if (i < 0) throw new Error(`syntax error: can't find = in "${w}"; write ${keyword} name=value`);
    if (i === 0) throw new Error(`${keyword} names can not be blank`);
    return { key: w.slice(0, i), value: w.slice(i + 1) };
  });
}
