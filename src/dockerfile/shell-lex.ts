/**
 * Variable expansion with Docker's rules (BuildKit's frontend/dockerfile/shell/lex.go):
 * `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?w}`, `${v?w}`, `${v#p}`, `${v##p}`,
 * `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`; single quotes are literal, double quotes expand, the
 * escape token (`\` or `` ` ``) escapes the next character; unset variables expand to empty.
 *
 * `processWord` returns one string with quotes removed; `processWords` also splits on unquoted
 * whitespace, including whitespace that comes from an unquoted `$var`'s value (as Docker does).
 */
export type Lookup = (name: string) => string | undefined;

export class ExpansionError extends Error {
  override readonly name = 'ExpansionError';
}

const EOF = '';

class Words {
  words: string[] = [];
  word = '';
  inWord = false;

  addChar(ch: string): void {
    if (/\s/.test(ch) && this.inWord) {
      if (this.word.length !== 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else if (!/\s/.test(ch)) {
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

class Lexer {
  private pos = 0;
  private readonly chars: string[];

  constructor(
    text: string,
    private readonly lookup: Lookup,
    private readonly escape: string,
    private readonly rawQuotes = false,
  ) {
    this.chars = Array.from(text);
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }
  private next(): string {
    const c = this.chars[this.pos] ?? EOF;
    if (c !== EOF) this.pos++;
    return c;
  }

  run(): { word: string; words: string[] } {
    const r = this.processStopOn(EOF);
    return { word: r.result, words: r.words };
  }

  private processStopOn(stop: string): { result: string; words: string[] } {
    let result = '';
    const words = new Words();
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (stop !== EOF && ch === stop) {
        this.next();
        return { result, words: words.get() };
      }
      if (ch === "'" || ch === '"' || ch === '$') {
        const tmp = ch === "'" ? this.singleQuote() : ch === '"' ? this.doubleQuote() : this.dollar();
        result += tmp;
        if (ch === '$') words.addString(tmp);
        else words.addRawString(tmp);
      } else {
        let c = this.next();
        if (c === this.escape) {
          // The escape token escapes the next character; at the very end it is dropped.
          c = this.next();
          if (c === EOF) break;
          words.addRawChar(c);
        } else {
          words.addChar(c);
        }
        result += c;
      }
    }
    if (stop !== EOF) throw new ExpansionError(`unexpected end of statement while looking for matching ${stop}`);
    return { result, words: words.get() };
  }

  private singleQuote(): string {
    // All chars between single quotes are taken as-is. Note: no escaping.
    let out = this.rawQuotes ? "'" : '';
    this.next();
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new ExpansionError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") break;
      out += ch;
    }
    return this.rawQuotes ? out + "'" : out;
  }

  private doubleQuote(): string {
    let out = this.rawQuotes ? '"' : '';
    this.next();
    for (;;) {
      if (this.peek() === EOF) throw new ExpansionError('unexpected end of statement while looking for matching double-quote');
      const ch = this.peek();
      if (ch === '"') {
        this.next();
        break;
      }
      if (ch === '$') {
        out += this.dollar();
        continue;
      }
      let c = this.next();
      if (c === this.escape) {
        const p = this.peek();
        if (p === EOF) continue; // a trailing escape is dropped
        if (p === '"' || p === '$' || p === this.escape) c = this.next();
        // any other escaped character keeps its escape token
      }
      out += c;
    }
    return this.rawQuotes ? out + '"' : out;
  }

  private dollar(): string {
    this.next(); // $
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      return this.lookup(name) ?? '';
    }
    this.next(); // {
    const first = this.peek();
    if (first === EOF) throw new ExpansionError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new ExpansionError('syntax error: bad substitution');
    const name = this.name();
    const ch = this.next();
    const value = this.lookup(name);
    const set = value !== undefined;
    switch (ch) {
      case '}':
        return value ?? '';
      case '?': {
        const word = this.processStopOn('}').result || 'is not allowed to be unset';
        if (!set) throw new ExpansionError(`${name}: ${word}`);
        return value;
      }
      case ':': {
        const mod = this.next();
        const word = this.processStopOn('}').result;
        switch (mod) {
          case '+':
            return set && value !== '' ? word : '';
          case '-':
            return !set || value === '' ? word : value;
          case '?':
            if (!set || value === '') throw new ExpansionError(`${name}: ${word || 'is not allowed to be unset'}`);
            return value;
          default:
            throw new ExpansionError(`unsupported modifier (${mod}) in substitution`);
        }
      }
      case '+': {
        const word = this.processStopOn('}').result;
        return set ? word : '';
      }
      case '-': {
        const word = this.processStopOn('}').result;
        return set ? value : word;
      }
      case '#':
      case '%': {
        let longest = false;
        if (this.peek() === ch) {
          this.next();
          longest = true;
        }
        const pattern = this.processStopOn('}').result;
        const v = value ?? '';
        return ch === '#' ? trimPrefix(v, pattern, longest) : trimSuffix(v, pattern, longest);
      }
      case '/': {
        let all = false;
        if (this.peek() === '/') {
          this.next();
          all = true;
        }
        const pattern = this.processStopOnAny(['/', '}']);
        const replacement = pattern.stoppedOn === '/' ? this.processStopOn('}').result : '';
        return substitute(value ?? '', pattern.result, replacement, all);
      }
      case EOF:
        throw new ExpansionError("syntax error: missing '}'");
      default:
        throw new ExpansionError(`unsupported modifier (${ch}) in substitution`);
    }
  }

  private processStopOnAny(stops: string[]): { result: string; stoppedOn: string } {
    let result = '';
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (stops.includes(ch)) {
        this.next();
        return { result, stoppedOn: ch };
      }
      if (ch === "'" || ch === '"' || ch === '$') {
        result += ch === "'" ? this.singleQuote() : ch === '"' ? this.doubleQuote() : this.dollar();
      } else {
        let c = this.next();
        if (c === this.escape) {
          c = this.next();
          if (c === EOF) break;
        }
        result += c;
      }
    }
    throw new ExpansionError(`unexpected end of statement while looking for matching ${stops.join(' or ')}`);
  }

  private name(): string {
    let name = '';
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (name.length === 0 && /[0-9]/.test(ch)) {
        while (/[0-9]/.test(this.peek()) && this.peek() !== EOF) name += this.next();
        return name;
      }
      if (name.length === 0 && '*#@!?-$'.includes(ch)) return this.next();
      if (!/[\p{L}\p{N}_]/u.test(ch)) break;
      name += this.next();
    }
    return name;
  }
}

/** A shell glob (`*`, `?`, `[...]`, escapes) as a regular expression source. */
export function globToRegex(pattern: string, lazy: boolean): string {
  let out = '';
  const chars = Array.from(pattern);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i] as string;
    if (c === '*') out += lazy ? '.*?' : '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = chars.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
        continue;
      }
      let cls = chars.slice(i + 1, end).join('');
      if (cls.startsWith('!')) cls = '^' + cls.slice(1);
      out += '[' + cls.replace(/\\/g, '\\\\') + ']';
      i = end;
    } else if (c === '\\' && i + 1 < chars.length) {
      out += escapeRe(chars[++i] as string);
    } else {
      out += escapeRe(c);
    }
  }
  return out;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function trimPrefix(value: string, pattern: string, longest: boolean): string {
  const re = new RegExp(`^(?:${globToRegex(pattern, !longest)})`, 's');
  const m = re.exec(value);
  return m ? value.slice(m[0].length) : value;
}

function trimSuffix(value: string, pattern: string, longest: boolean): string {
  const re = new RegExp(`^(?:${globToRegex(pattern, false)})$`, 's');
  if (longest) {
    for (let i = 0; i <= value.length; i++) if (re.test(value.slice(i))) return value.slice(0, i);
  } else {
    for (let i = value.length; i >= 0; i--) if (re.test(value.slice(i))) return value.slice(0, i);
  }
  return value;
}

function substitute(value: string, pattern: string, replacement: string, all: boolean): string {
  if (pattern === '') return value;
  const re = new RegExp(globToRegex(pattern, false), all ? 'gs' : 's');
  return value.replace(re, () => replacement);
}

export interface LexOptions {
  escape?: string;
}

/** Expand one word: quotes removed, no splitting. */
export function processWord(word: string, lookup: Lookup, opts: LexOptions = {}): string {
  return new Lexer(word, lookup, opts.escape ?? '\\').run().word;
}

/** Expand and split into words on unquoted whitespace. */
export function processWords(text: string, lookup: Lookup, opts: LexOptions = {}): string[] {
  return new Lexer(text, lookup, opts.escape ?? '\\').run().words;
}

/** A lookup over `KEY=VALUE` pairs or a map. */
export function lookupFrom(env: Map<string, string> | Record<string, string> | string[]): Lookup {
  if (env instanceof Map) return (k) => env.get(k);
  if (Array.isArray(env)) {
    const m = new Map<string, string>();
    for (const kv of env) {
      const i = kv.indexOf('=');
      if (i > 0) m.set(kv.slice(0, i), kv.slice(i + 1));
    }
    return (k) => m.get(k);
  }
  return (k) => (Object.prototype.hasOwnProperty.call(env, k) ? env[k] : undefined);
}
