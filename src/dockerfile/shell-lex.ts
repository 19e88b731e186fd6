import { isGoSpace } from './words.js';

/**
 * Variable expansion with Docker's rules (the behaviour of BuildKit's frontend/dockerfile/shell lexer,
 * checked against its own test vectors in test/unit/buildkit-shell.test.ts):
 * `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?w}`, `${v?w}`, `${v#p}`, `${v##p}`,
 * `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`; single quotes are literal, double quotes expand, the
 * escape token (`\` or `` ` ``) escapes the next character; unset variables expand to empty. Patterns
 * know `*` and `?` (no bracket expressions, as BuildKit's).
 *
 * `processWord` returns one string with quotes removed; `processWords` also splits on unquoted
 * whitespace, including whitespace that comes from an unquoted `$var`'s value (as Docker does).
 */
export type Lookup = (name: string) => string | undefined;

export class ExpansionError extends Error {
  override readonly name = 'ExpansionError';
}

const EOF = '';
const isSpace = isGoSpace;

class Words {
  words: string[] = [];
  word = '';
  inWord = false;

  addChar(ch: string): void {
    if (isSpace(ch) && this.inWord) {
      if (this.word.length !== 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else if (!isSpace(ch)) {
      this.addRawChar(ch);
    }
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  get(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

export interface LexOptions {
  /** The escape token: `\` (default) or `` ` `` (the escape directive). */
  escape?: string;
  /** Keep the quote characters in the result (the heredoc parser uses this). */
  rawQuotes?: boolean;
  /** Keep escape tokens in the result. */
  rawEscapes?: boolean;
  /** Leave references to unset variables as written (`$X`, `${X}`). */
  skipUnsetEnv?: boolean;
  /** Quotes are ordinary characters (expansion of heredoc bodies). */
  skipProcessQuotes?: boolean;
}

class Lexer {
  private pos = 0;
  private readonly chars: string[];
  private rawEscapes: boolean;

  constructor(
    text: string,
    private readonly lookup: Lookup,
    private readonly o: Required<LexOptions>,
  ) {
    this.chars = Array.from(text);
    this.rawEscapes = o.rawEscapes;
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }
  private next(): string {
    const c = this.chars[this.pos] ?? EOF;
    if (c !== EOF) this.pos++;
    return c;
  }
  private atEnd(): boolean {
    return this.pos >= this.chars.length;
  }

  run(): { word: string; words: string[] } {
    const r = this.processStopOn(EOF, this.rawEscapes);
    return { word: r.result, words: r.words };
  }

  /** Read up to `stop` (consumed) or the end; `stop` never reached is an error. */
  private processStopOn(stop: string, rawEscapes: boolean): { result: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = '';
      const words = new Words();
      while (!this.atEnd()) {
        const ch = this.peek();
        if (stop !== EOF && ch === stop) {
          this.next();
          return { result, words: words.get() };
        }
        const quote = !this.o.skipProcessQuotes && (ch === "'" || ch === '"');
        if (ch === '$' || ch === '<' || quote) {
          const tmp = ch === '$' ? this.dollar() : ch === '<' ? this.possibleHeredoc() : ch === "'" ? this.singleQuote() : this.doubleQuote();
          result += tmp;
          if (ch === '$') words.addString(tmp);
          else words.addRawString(tmp);
          continue;
        }
        let c = this.next();
        if (c === this.o.escape) {
          if (this.rawEscapes) {
            words.addRawChar(c);
            result += c;
          }
          // The escape token escapes the next character; at the very end it is dropped.
          c = this.next();
          if (c === EOF) break;
          words.addRawChar(c);
        } else {
          words.addChar(c);
        }
        result += c;
      }
      if (stop !== EOF) throw new ExpansionError(`unexpected end of statement while looking for matching ${stop}`);
      return { result, words: words.get() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private singleQuote(): string {
    // All characters up to the next single quote are taken as-is: nothing escapes inside.
    let out = this.o.rawQuotes ? "'" : '';
    this.next();
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new ExpansionError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return this.o.rawQuotes ? out + "'" : out;
      out += ch;
    }
  }

  private doubleQuote(): string {
    let out = this.o.rawQuotes ? '"' : '';
    this.next();
    for (;;) {
      const p = this.peek();
      if (this.atEnd()) throw new ExpansionError('unexpected end of statement while looking for matching double-quote');
      if (p === '"') {
        this.next();
        return this.o.rawQuotes ? out + '"' : out;
      }
      if (p === '$') {
        out += this.dollar();
        continue;
      }
      let c = this.next();
      if (c === this.o.escape) {
        if (this.rawEscapes) out += c;
        if (this.atEnd()) continue; // a trailing escape is dropped (then the quote is unterminated)
        const n = this.peek();
        // Only ", $ and the escape token itself are escaped; any other escaped character keeps its escape token.
        if (n === '"' || n === '$' || n === this.o.escape) c = this.next();
      }
      out += c;
    }
  }

  /** `<<` keeps the blanks after it in the same word (a heredoc's `<<  EOF`). */
  private possibleHeredoc(): string {
    this.next();
    if (this.peek() !== '<') return '<';
    this.next();
    let out = '<<';
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === '\r') out += this.next();
    return out;
  }

  private dollar(): string {
    this.next(); // $
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      const value = this.lookup(name);
      if (value === undefined && this.o.skipUnsetEnv) return '$' + name;
      return value ?? '';
    }
    this.next(); // {
    if (this.atEnd()) throw new ExpansionError("syntax error: missing '}'");
    const first = this.peek();
    if (first === '{' || first === '}' || first === ':') throw new ExpansionError('syntax error: bad substitution');
    const name = this.name();
    let ch = this.next();
    let mods = ch;
    const value = this.lookup(name);
    const set = value !== undefined;
    switch (ch) {
      case '}':
        if (!set && this.o.skipUnsetEnv) return `\${${name}}`;
        return value ?? '';
      case ':':
      case '+':
      case '-':
      case '?':
      case '#':
      case '%': {
        const nullIsUnset = ch === ':';
        if (nullIsUnset) {
          ch = this.next();
          mods += ch;
        }
        const pattern = ch === '#' || ch === '%';
        if (nullIsUnset && pattern) throw new ExpansionError(`unsupported modifier (${mods}) in substitution`);
        let word: string;
        try {
          word = this.processStopOn('}', pattern).result;
        } catch (err) {
          if (this.atEnd()) throw new ExpansionError("syntax error: missing '}'");
          throw err;
        }
        if (!set && this.o.skipUnsetEnv) return `\${${name}${mods}${word}}`;
        const v = value ?? '';
        const unset = !set || (nullIsUnset && v === '');
        switch (ch) {
          case '-':
            return unset ? word : v;
          case '+':
            return unset ? '' : word;
          case '?':
            if (!set) throw new ExpansionError(`${name}: ${word || 'is not allowed to be unset'}`);
            if (nullIsUnset && v === '') throw new ExpansionError(`${name}: ${word || 'is not allowed to be empty'}`);
            return v;
          case '#':
          case '%': {
            // #/% remove the shortest match, ##/%% the longest.
            const greedy = word.startsWith(ch);
            const p = greedy ? word.slice(1) : word;
            return ch === '#' ? trimPrefix(p, v, greedy) : trimSuffix(p, v, greedy);
          }
          default:
            throw new ExpansionError(`unsupported modifier (${mods}) in substitution`);
        }
      }
      case '/': {
        const all = this.peek() === '/';
        if (all) this.next();
        let pattern: string;
        try {
          pattern = this.processStopOn('/', true).result;
        } catch (err) {
          if (this.atEnd()) throw new ExpansionError("syntax error: missing '/' in ${}");
          throw err;
        }
        let replacement: string;
        try {
          replacement = this.processStopOn('}', true).result;
        } catch (err) {
          if (this.atEnd()) throw new ExpansionError("syntax error: missing '}'");
          throw err;
        }
        if (!set && this.o.skipUnsetEnv) return `\${${name}/${pattern}/${replacement}}`;
        const re = patternRegex(pattern, true, false);
        const v = value ?? '';
        if (all) return v.replace(new RegExp(re.source, 'gu'), (m) => expandTemplate(replacement, m));
        const m = re.exec(v);
        return m ? v.slice(0, m.index) + replacement + v.slice(m.index + m[0].length) : v;
      }
      default:
        throw new ExpansionError(`unsupported modifier (${mods}) in substitution`);
    }
  }

  private name(): string {
    let name = '';
    while (!this.atEnd()) {
      const ch = this.peek();
      if (name.length === 0 && /^\p{Nd}$/u.test(ch)) {
        while (!this.atEnd() && /^\p{Nd}$/u.test(this.peek())) name += this.next();
        return name;
      }
      if (name.length === 0 && '@*#?-$!0'.includes(ch)) return this.next();
      if (!/^[\p{L}\p{Nd}_]$/u.test(ch)) break;
      name += this.next();
    }
    return name;
  }
}

/**
 * A `${v#p}` / `${v/p/r}` pattern as a regular expression: `*` any string (greedy or shortest), `?` one
 * character; `\*`, `\?` and `\\` are literal, `\}` and `\/` are the bare characters; any other escape is
 * an error. Brackets are literal characters.
 */
function patternRegex(pattern: string, greedy: boolean, anchored: boolean): RegExp {
  let out = anchored ? '^' : '';
  const chars = Array.from(pattern);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i] as string;
    // Go's `.` (no s flag): any character but a newline.
    if (c === '*') out += greedy ? '[^\\n]*' : '[^\\n]*?';
    else if (c === '?') out += '[^\\n]';
    else if (c === '\\') {
      const n = chars[i + 1];
      if (n === '}' || n === '/') continue;
      if (n !== '*' && n !== '?' && n !== '\\') throw new ExpansionError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${n ?? ''}'`);
      out += '\\' + n;
      i++;
    } else out += c.replace(/[[\]{}.+()|^$]/, '\\$&');
  }
  return new RegExp(out, 'u');
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const m = patternRegex(pattern, greedy, true).exec(value);
  return m ? value.slice(m[0].length) : value;
}

/** A pattern read backwards, each escape kept before the character it escapes. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const out: string[] = [];
  for (let i = 0; i < chars.length; ) {
    if (chars[i] === '\\' && i !== chars.length - 1) {
      out.unshift('\\' + (chars[i + 1] as string));
      i += 2;
    } else {
      out.unshift(chars[i] as string);
      i++;
    }
  }
  return out.join('');
}

const reverse = (s: string): string => Array.from(s).reverse().join('');

function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  // The shortest or longest match at the end is the match at the start of both read backwards.
  return reverse(trimPrefix(reversePattern(pattern), reverse(value), greedy));
}

/** Go's regexp template expansion of a `${v//p/r}` replacement: `$$` is `$`, `$0` the match, other `$name` empty. */
function expandTemplate(template: string, match: string): string {
  let out = '';
  for (let i = 0; i < template.length; i++) {
    const c = template[i] as string;
    if (c !== '$') {
      out += c;
      continue;
    }
    const rest = template.slice(i + 1);
    if (rest.startsWith('$')) {
      out += '$';
      i++;
      continue;
    }
    const m = /^\{([A-Za-z0-9_]+)\}/.exec(rest) ?? /^([A-Za-z0-9_]+)/.exec(rest);
    if (!m) {
      out += '$';
      continue;
    }
    if (/^\d+$/.test(m[1] as string) && Number(m[1]) === 0) out += match;
    i += m[0].length;
  }
  return out;
}

function options(o: LexOptions): Required<LexOptions> {
  return { escape: o.escape ?? '\\', rawQuotes: o.rawQuotes ?? false, rawEscapes: o.rawEscapes ?? false, skipUnsetEnv: o.skipUnsetEnv ?? false, skipProcessQuotes: o.skipProcessQuotes ?? false };
}

/** Expand one word: quotes removed, no splitting. */
export function processWord(word: string, lookup: Lookup, opts: LexOptions = {}): string {
  return new Lexer(word, lookup, options(opts)).run().word;
}

/** Expand and split into words on unquoted whitespace. */
export function processWords(text: string, lookup: Lookup, opts: LexOptions = {}): string[] {
  return new Lexer(text, lookup, options(opts)).run().words;
}

/** A lookup over `KEY=VALUE` pairs or a map. */
export function lookupFrom(env: Map<string, string> | Record<string, string> | string[]): Lookup {
  if (env instanceof Map) return (k) => env.get(k);
  if (Array.isArray(env)) {
    const m = new Map<string, string>();
    for (const kv of env) {
      const i = kv.indexOf('=');
      if (i < 0) m.set(kv, '');
      else m.set(kv.slice(0, i), kv.slice(i + 1));
    }
    return (k) => m.get(k);
  }
  return (k) => (Object.prototype.hasOwnProperty.call(env, k) ? env[k] : undefined);
}
