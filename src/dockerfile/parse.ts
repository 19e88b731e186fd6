import { UserError } from '../util/errors.js';
import { processWords } from './shell-lex.js';
import { goTrimSpace, isGoSpace, parseNameVal, parseWords, WHITESPACE } from './words.js';

/**
 * Syntax: a Dockerfile text into instructions with their flags, arguments, JSON form and heredocs, each
 * keeping its file and line. Two steps, as BuildKit's front end has them: `parseAst` is the line
 * parser (parser directives, continuation lines, comments, the per-instruction argument rules, heredoc
 * bodies), checked against BuildKit's own parser test data (test/unit/buildkit-parser.test.ts);
 * `parseDockerfile` turns its nodes into instructions (known keywords, typed flags).
 */
export const KEYWORDS = [
  'FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR',
  'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'MAINTAINER',
] as const;
export type Keyword = (typeof KEYWORDS)[number];

// ---------------------------------------------------------------------------------------------------
// The syntax tree

/** A heredoc as the line parser reads it: the body as written (tabs kept, line ends included). */
export interface AstHeredoc {
  name: string;
  /** `3<<EOF`: the descriptor the document is for (0 when not given). */
  fileDescriptor: number;
  /** No part of the delimiter is quoted: the body is subject to expansion. */
  expand: boolean;
  /** `<<-`: leading tabs are stripped (from the body when it is used, from the terminator line here). */
  chomp: boolean;
  content: string;
}

export interface AstNode {
  /** The instruction word as written. */
  value: string;
  /** Leading `--flag[=value]` words, quotes and escapes removed. */
  flags: string[];
  /**
   * The arguments as the instruction's line parser splits them: ENV and LABEL as key, value, separator
   * triples; ARG as words; FROM, EXPOSE and the shell form of COPY, ADD and VOLUME split on blanks; the
   * shell form of RUN, CMD, ENTRYPOINT and SHELL, USER, WORKDIR, STOPSIGNAL and MAINTAINER as one string;
   * HEALTHCHECK as the type then its command; the elements of the JSON form.
   */
  args: string[];
  /** The arguments were written in JSON (exec) form. */
  json: boolean;
  /** ONBUILD: the trigger instruction. */
  sub?: AstNode;
  /** The argument text after the flags. */
  rest: string;
  /** The logical line: continuation lines joined, comment lines dropped. */
  original: string;
  heredocs: AstHeredoc[];
  /** 1-based first and last line (heredoc bodies included). */
  startLine: number;
  endLine: number;
}

export interface Directive {
  name: string;
  value: string;
  line: number;
}

export interface Ast {
  escape: string;
  directives: Directive[];
  nodes: AstNode[];
  /** Instructions continued over empty lines (BuildKit warns about these): first line, logical line. */
  emptyContinuations: { line: number; logical: string }[];
}

/** bufio.Scanner's limit, which BuildKit's parser keeps. */
const MAX_LINE_BYTES = 65535;
const VALID_DIRECTIVES = ['syntax', 'escape', 'check'];
const DIRECTIVE_RE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$/;
/** Instructions whose arguments may open heredocs (ONBUILD holds one of them). */
const HEREDOC_INSTRUCTIONS = ['add', 'copy', 'run'];
const HEREDOC_RE = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;

const trimNewline = (s: string): string => s.replace(/[\r\n]+$/, '');
function trimLeadingSpace(s: string): string {
  const chars = Array.from(s);
  let i = 0;
  while (i < chars.length && isGoSpace(chars[i] as string)) i++;
  return chars.slice(i).join('');
}
const isComment = (s: string): boolean => trimLeadingSpace(s).startsWith('#');

/** The lines of a text, each with its line end (the last may have none). */
function splitLines(text: string): string[] {
  return text.split(/(?<=\n)/).filter((l) => l !== '');
}

class LineScanner {
  private i = 0;
  tooLong = false;
  constructor(private readonly lines: string[]) {}
  scan(): string | undefined {
    if (this.tooLong || this.i >= this.lines.length) return undefined;
    const l = this.lines[this.i] as string;
    if (Buffer.byteLength(trimNewline(l)) > MAX_LINE_BYTES) {
      this.tooLong = true;
      return undefined;
    }
    this.i++;
    return l;
  }
}

/**
 * The escape token continues a line when it is the last non-blank character, unless an escape token
 * precedes it (`\\` at the end is an escaped escape); a line holding only the token continues too.
 */
function continuationRe(escape: string): RegExp {
  const e = escape === '\\' ? '\\\\' : escape;
  return new RegExp(`([^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`);
}

export function parseAst(text: string, file = 'Dockerfile'): Ast {
  const fail = (msg: string, line: number, cause?: unknown): UserError => new UserError(msg, { file, line, ...(cause === undefined ? {} : { cause }) });
  const sc = new LineScanner(splitLines(text));
  let escape = '\\';
  let cont = continuationRe(escape);
  const directives: Directive[] = [];
  let directivesDone = false;
  const emptyContinuations: Ast['emptyContinuations'] = [];

  /** Parser directives: `# name=value` comment lines before anything else, each name at most once. */
  const directive = (token: string, line: number): void => {
    if (directivesDone) return;
    if (!token.startsWith('#')) {
      directivesDone = true;
      return;
    }
    const m = DIRECTIVE_RE.exec(trimLeadingSpace(token.slice(1)));
    const name = m?.[1]?.toLowerCase();
    if (!m || !name || !VALID_DIRECTIVES.includes(name)) {
      directivesDone = true;
      return;
    }
    const first = directives.find((d) => d.name === name);
    if (first) throw fail(`only one ${name} parser directive can be used (the first is on line ${first.line}): remove this one`, line);
    const value = m[2] as string;
    if (name === 'escape') {
      if (value !== '\\' && value !== '`') throw fail(`invalid escape directive '${value}': use \\ or \``, line);
      escape = value;
      cont = continuationRe(escape);
    }
    directives.push({ name, value, line });
  };
  const processLine = (raw: string, stripLeft: boolean, line: number): string => {
    let token = trimNewline(raw);
    if (stripLeft) token = trimLeadingSpace(token);
    directive(token, line);
    return isComment(token) ? '' : token;
  };
  const trimContinuation = (line: string): [string, boolean] => (cont.test(line) ? [line.replace(cont, '$1'), false] : [line, true]);

  const nodes: AstNode[] = [];
  let currentLine = 0;
  for (let raw = sc.scan(); raw !== undefined; raw = sc.scan()) {
    if (currentLine === 0) raw = raw.replace(/^\ufeff/, '');
    const first = processLine(raw, true, currentLine + 1);
    currentLine++;
    const startLine = currentLine;
    let [part, end] = trimContinuation(first);
    if (end && part === '') continue;
    let logical = part;
    let emptyContinuation = false;
    while (!end) {
      const next = sc.scan();
      if (next === undefined) break;
      const p = processLine(next, false, currentLine + 1);
      currentLine++;
      if (isComment(next)) continue;
      if (trimLeadingSpace(trimNewline(p)) === '') {
        emptyContinuation = true;
        continue;
      }
      [part, end] = trimContinuation(p);
      logical += part;
    }
    if (emptyContinuation) emptyContinuations.push({ line: startLine, logical });

    let node: AstNode;
    try {
      node = nodeFromLine(logical, escape);
    } catch (err) {
      throw fail((err as Error).message, startLine, err);
    }
    if (canContainHeredoc(node) && logical.includes('<<')) {
      let docs: Omit<AstHeredoc, 'content'>[];
      try {
        docs = heredocsFromLine(logical);
      } catch (err) {
        throw fail((err as Error).message, startLine, err);
      }
      for (const doc of docs) {
        let content = '';
        let terminated = false;
        for (let body = sc.scan(); body !== undefined; body = sc.scan()) {
          currentLine++;
          let candidate = trimNewline(body);
          if (doc.chomp) candidate = candidate.replace(/^\t+/, '');
          if (candidate === doc.name) {
            terminated = true;
            break;
          }
          content += body;
        }
        if (!terminated) throw fail(`heredoc <<${doc.name} is not terminated: end it with a line holding only ${doc.name}`, startLine);
        node.heredocs.push({ ...doc, content });
      }
    }
    node.startLine = startLine;
    node.endLine = currentLine;
    nodes.push(node);
  }
  if (nodes.length === 0) throw fail('the Dockerfile has no instructions: start it with FROM image', Math.max(currentLine, 1));
  if (sc.tooLong) throw fail(`a line is longer than ${MAX_LINE_BYTES} bytes, the most a Dockerfile line may have: shorten it (continuation lines can split it)`, currentLine + 1);
  return { escape, directives, nodes, emptyContinuations };
}

function canContainHeredoc(node: AstNode): boolean {
  const n = node.value.toLowerCase() === 'onbuild' && node.sub ? node.sub : node;
  return HEREDOC_INSTRUCTIONS.includes(n.value.toLowerCase()) && !n.json;
}

/** The heredocs a logical line opens, in order: each word (quotes and escapes kept) that reads `[n]<<[-]NAME`. */
export function heredocsFromLine(line: string): Omit<AstHeredoc, 'content'>[] {
  let words: string[];
  try {
    words = processWords(line, () => undefined, { escape: '\\', rawQuotes: true, rawEscapes: true, skipUnsetEnv: true });
  } catch {
    return [];
  }
  const out: Omit<AstHeredoc, 'content'>[] = [];
  for (const w of words) {
    const h = parseHeredoc(w);
    if (h) out.push(h);
  }
  return out;
}

/**
 * One word as a heredoc opener: `[n]<<[-][blanks]NAME` where NAME is one shell word; quoting any part of
 * it turns expansion off. Undefined when the word is no heredoc; an error when NAME's quotes do not close.
 */
export function parseHeredoc(src: string): Omit<AstHeredoc, 'content'> | undefined {
  const m = HEREDOC_RE.exec(src);
  if (!m) return undefined;
  const rest = m[3] as string;
  if (rest === '') return undefined;
  const none = (): undefined => undefined;
  const words = processWords(rest, none, { escape: '\\', skipUnsetEnv: true });
  if (words.length !== 1) return undefined;
  const raw = processWords(rest, none, { escape: '\\', skipUnsetEnv: true, rawQuotes: true });
  if (raw.length !== words.length) throw new Error(`internal lexing of heredoc produced inconsistent results: ${rest}`);
  const quotes = (s: string): number => (s.match(/['"]/g) ?? []).length;
  const name = words[0] as string;
  return { name, fileDescriptor: m[1] ? Number(m[1]) : 0, expand: quotes(name) === quotes(raw[0] as string), chomp: m[2] === '-' };
}

/** `<<-` bodies lose the leading tabs of every line. */
export function chompHeredocContent(content: string): string {
  return content.replace(/^\t+/gm, '');
}

/** Split a logical line into its instruction word, flags and arguments; apply the instruction's line parser. */
function nodeFromLine(line: string, escape: string): AstNode {
  const trimmed = goTrimSpace(line);
  const ws = WHITESPACE.exec(trimmed);
  const cmd = ws ? trimmed.slice(0, ws.index) : trimmed;
  let flags: string[] = [];
  let rest = '';
  if (ws) {
    const f = extractFlags(trimmed.slice(ws.index + ws[0].length), escape);
    flags = f.flags;
    rest = goTrimSpace(f.rest);
  }
  let parsed: LineParse;
  try {
    parsed = (LINE_PARSERS[cmd.toLowerCase()] ?? ignored)(rest, escape);
  } catch (err) {
    if (err instanceof NotStringArray) throw new Error(`${cmd.toUpperCase()} JSON form must be an array of strings: quote every element`, { cause: err });
    throw err;
  }
  const node: AstNode = { value: cmd, flags, args: parsed.args ?? [], json: parsed.json ?? false, rest, original: line, heredocs: [], startLine: 0, endLine: 0 };
  if (parsed.sub) node.sub = parsed.sub;
  return node;
}

/** Leading words that start with `--` are flags (quotes and escapes removed); a `--` word ends them. */
function extractFlags(line: string, escape: string): { flags: string[]; rest: string } {
  const chars = Array.from(line);
  const flags: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  for (let pos = 0; pos <= chars.length; pos++) {
    const atEnd = pos === chars.length;
    let ch = atEnd ? '' : (chars[pos] as string);
    if (phase === 'spaces') {
      if (atEnd) break;
      if (isGoSpace(ch)) continue;
      if (ch !== '-' || chars[pos + 1] !== '-') return { flags, rest: chars.slice(pos).join('') };
      phase = 'word';
    }
    if (atEnd) {
      if (word !== '--' && word.length > 0) flags.push(word);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'spaces';
        if (word === '--') return { flags, rest: chars.slice(pos).join('') };
        if (word.length > 0) flags.push(word);
        word = '';
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        phase = 'quote';
        continue;
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        ch = chars[++pos] as string;
      }
      word += ch;
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === escape) {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      ch = chars[++pos] as string;
    }
    word += ch;
  }
  return { flags, rest: '' };
}

interface LineParse {
  args?: string[];
  json?: boolean;
  sub?: AstNode;
}

class NotStringArray extends Error {}

/** The JSON (exec) form: a JSON array of strings. Undefined when the text is not a JSON array at all. */
function parseJson(rest: string): string[] | undefined {
  const t = trimLeadingSpace(rest);
  if (!t.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined;
  }
  if (!Array.isArray(v)) return undefined;
  if (!v.every((x) => typeof x === 'string')) throw new NotStringArray();
  return v as string[];
}

const splitBlanks = (rest: string): LineParse => ({ args: rest === '' ? [] : rest.split(WHITESPACE) });
const maybeJson = (rest: string): LineParse => {
  if (rest === '') return {};
  const j = parseJson(rest);
  return j ? { args: j, json: true } : { args: [rest] };
};
const maybeJsonToList = (rest: string): LineParse => {
  const j = parseJson(rest);
  return j ? { args: j, json: true } : splitBlanks(rest);
};
const ignored = (): LineParse => ({ args: [''] });
const nameVal = (keyword: string) => (rest: string, escape: string): LineParse => ({ args: parseNameVal(rest, escape, keyword).flatMap((p) => [p.key, p.value, p.sep]) });

const LINE_PARSERS: Record<string, (rest: string, escape: string) => LineParse> = {
  add: maybeJsonToList,
  arg: (rest, escape) => ({ args: parseWords(rest, escape) }),
  cmd: maybeJson,
  copy: maybeJsonToList,
  entrypoint: maybeJson,
  env: nameVal('ENV'),
  expose: splitBlanks,
  from: splitBlanks,
  healthcheck: (rest) => {
    const chars = Array.from(rest);
    let sep = 0;
    while (sep < chars.length && !isGoSpace(chars[sep] as string)) sep++;
    if (sep === 0) return {};
    let next = sep;
    while (next < chars.length && isGoSpace(chars[next] as string)) next++;
    const cmd = maybeJson(chars.slice(next).join(''));
    return { args: [chars.slice(0, sep).join(''), ...(cmd.args ?? [])], ...(cmd.json ? { json: true } : {}) };
  },
  label: nameVal('LABEL'),
  maintainer: (rest) => ({ args: rest === '' ? [] : [rest] }),
  onbuild: (rest, escape) => (rest === '' ? {} : { sub: nodeFromLine(rest, escape) }),
  run: maybeJson,
  shell: maybeJson,
  stopsignal: (rest) => ({ args: rest === '' ? [] : [rest] }),
  user: (rest) => ({ args: rest === '' ? [] : [rest] }),
  volume: maybeJsonToList,
  workdir: (rest) => ({ args: rest === '' ? [] : [rest] }),
};

// ---------------------------------------------------------------------------------------------------
// Instructions

export interface Flag {
  name: string;
  /** null for a bare `--flag`. */
  value: string | null;
}

export interface Heredoc {
  name: string;
  /** The body, with leading tabs stripped for `<<-`. */
  content: string;
  /** Unquoted delimiter: the body is subject to expansion. */
  expand: boolean;
  /** `<<-`: leading tabs stripped. */
  chomp: boolean;
}

export interface ParsedInstruction {
  keyword: Keyword;
  file: string;
  /** 1-based first and last line. */
  line: number;
  endLine: number;
  /** The instruction's source text, as written. */
  original: string;
  flags: Flag[];
  /** Argument text after the flags, continuations joined (for heredoc instructions: the first line only). */
  rest: string;
  /** The arguments as the line parser splits them (AstNode.args; ONBUILD: the trigger's word, then its arguments). */
  args: string[];
  /** The arguments when written in JSON (exec) form (HEALTHCHECK: the command after CMD). */
  json?: string[];
  heredocs: Heredoc[];
  /** The syntax node it came from. */
  node: AstNode;
}

export interface ParsedDockerfile {
  file: string;
  escape: string;
  syntax?: string;
  instructions: ParsedInstruction[];
}

type FlagType = 'bool' | 'string' | 'strings';

/** The flags each instruction takes, typed as BuildKit's: a bool takes no value or true/false; a string needs one; strings repeat. */
const FLAGS: Partial<Record<Keyword, Record<string, FlagType>>> = {
  FROM: { platform: 'string' },
  RUN: { mount: 'strings', network: 'string', security: 'string' },
  COPY: { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'strings' },
  ADD: { chown: 'string', chmod: 'string', link: 'bool', 'keep-git-dir': 'bool', checksum: 'string', unpack: 'bool', exclude: 'strings' },
  HEALTHCHECK: { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' },
};

export function parseDockerfile(text: string, file = 'Dockerfile'): ParsedDockerfile {
  const ast = parseAst(text, file);
  const lines = text.replace(/^\ufeff/, '').split(/\r?\n/);
  const instructions = ast.nodes.map((node) => toInstruction(node, file, lines.slice(node.startLine - 1, node.endLine).join('\n')));
  const syntax = ast.directives.find((d) => d.name === 'syntax')?.value;
  return syntax === undefined ? { file, escape: ast.escape, instructions } : { file, escape: ast.escape, syntax, instructions };
}

function toInstruction(node: AstNode, file: string, original: string): ParsedInstruction {
  const line = node.startLine;
  const err = (msg: string): UserError => new UserError(msg, { file, line });
  const keyword = node.value.toUpperCase();
  if (!(KEYWORDS as readonly string[]).includes(keyword)) throw err(`unknown instruction ${node.value}: use one of ${KEYWORDS.join(', ')}`);
  const kw = keyword as Keyword;
  const args = node.sub ? [node.sub.value, ...node.sub.args] : node.args;
  const flags = node.flags.map((f): Flag => {
    const eq = f.indexOf('=');
    return { name: (eq < 0 ? f : f.slice(0, eq)).replace(/^--/, ''), value: eq < 0 ? null : f.slice(eq + 1) };
  });
  // BuildKit never reads the flags of ARG, STOPSIGNAL and HEALTHCHECK NONE.
  const flagsRead = kw !== 'ARG' && kw !== 'STOPSIGNAL' && !(kw === 'HEALTHCHECK' && args[0]?.toUpperCase() === 'NONE');
  if (flagsRead) checkFlags(kw, node.flags, err);
  const ins: ParsedInstruction = {
    keyword: kw,
    file,
    line,
    endLine: node.endLine,
    original,
    flags,
    rest: node.rest,
    args,
    heredocs: node.heredocs.map((h) => ({ name: h.name, content: h.chomp ? chompHeredocContent(h.content) : h.content, expand: h.expand, chomp: h.chomp })),
    node,
  };
  if (node.json) ins.json = kw === 'HEALTHCHECK' ? args.slice(1) : args;
  if (kw === 'SHELL' && !node.json) throw err('SHELL requires the JSON form, e.g. SHELL ["/bin/bash", "-c"]');
  return ins;
}

function checkFlags(kw: Keyword, raw: string[], err: (m: string) => UserError): void {
  const allowed = FLAGS[kw] ?? {};
  const names = Object.keys(allowed);
  const seen = new Set<string>();
  for (const f of raw) {
    const eq = f.indexOf('=');
    const flagName = eq < 0 ? f : f.slice(0, eq);
    const name = flagName.slice(2);
    const value = eq < 0 ? undefined : f.slice(eq + 1);
    const type = Object.prototype.hasOwnProperty.call(allowed, name) ? allowed[name] : undefined;
    if (!flagName.startsWith('--') || type === undefined) {
      throw err(`unknown flag ${flagName} on ${kw}${names.length ? `: ${kw} takes ${names.map((a) => `--${a}`).join(', ')}` : `: ${kw} takes no flags`}`);
    }
    if (seen.has(name) && type !== 'strings') throw err(`${kw} ${flagName} is given twice: give it once`);
    seen.add(name);
    if (type === 'bool') {
      if (value === '') throw err(`${kw} ${flagName}= has no value: write ${flagName}, ${flagName}=true or ${flagName}=false`);
      if (value !== undefined && !['true', 'false'].includes(value.toLowerCase())) throw err(`${kw} ${flagName}=${value} is not a boolean: write ${flagName}=true or ${flagName}=false`);
    } else if (value === undefined) {
      throw err(`${kw} ${flagName} needs a value: write ${flagName}=VALUE`);
    }
  }
}

export function flagValue(ins: ParsedInstruction, name: string): string | undefined {
  const f = [...ins.flags].reverse().find((x) => x.name === name);
  return f ? (f.value ?? '') : undefined;
}

export function flagValues(ins: ParsedInstruction, name: string): string[] {
  return ins.flags.filter((x) => x.name === name).map((x) => x.value ?? '');
}

/** A bool flag (`--link`, `--link=true`, `--link=FALSE`): undefined when not given. */
export function flagBool(ins: ParsedInstruction, name: string): boolean | undefined {
  const v = flagValue(ins, name);
  return v === undefined ? undefined : v.toLowerCase() !== 'false';
}
