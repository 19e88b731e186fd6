import { DockerfileParser } from 'dockerfile-ast';
import { UserError } from '../util/errors.js';

/**
 * Syntax: a Dockerfile text into instructions with their flags, argument text, JSON form and heredocs,
 * each keeping its file and line. The maintained `dockerfile-ast` parser finds the instructions, their
 * line spans (continuations, comments, heredoc bodies) and the parser directives; the argument rules
 * (continuation joining, flag extraction, JSON form, heredoc bodies) follow BuildKit's parser.
 */
export const KEYWORDS = [
  'FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR',
  'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL', 'MAINTAINER',
] as const;
export type Keyword = (typeof KEYWORDS)[number];

export interface Flag {
  name: string;
  /** null for a bare `--flag`. */
  value: string | null;
}

export interface Heredoc {
  name: string;
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
  /** The arguments when written in JSON (exec) form. */
  json?: string[];
  heredocs: Heredoc[];
}

export interface ParsedDockerfile {
  file: string;
  escape: string;
  syntax?: string;
  instructions: ParsedInstruction[];
}

const FLAGS_ALLOWED: Partial<Record<Keyword, string[]>> = {
  FROM: ['platform'],
  RUN: ['mount', 'network', 'security'],
  COPY: ['from', 'chown', 'chmod', 'link', 'parents', 'exclude'],
  ADD: ['chown', 'chmod', 'link', 'keep-git-dir', 'checksum', 'exclude'],
  HEALTHCHECK: ['interval', 'timeout', 'start-period', 'start-interval', 'retries'],
};
const HEREDOC_KEYWORDS: Keyword[] = ['RUN', 'COPY', 'ADD'];
const JSON_KEYWORDS: Keyword[] = ['RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'COPY', 'ADD', 'VOLUME'];

export function parseDockerfile(text: string, file = 'Dockerfile'): ParsedDockerfile {
  const df = DockerfileParser.parse(text);
  const escape = df.getEscapeCharacter();
  if (escape !== '\\' && escape !== '`') throw new UserError(`invalid escape directive '${escape}': use \\ or \``, { file, line: 1 });
  const syntax = df.getDirectives().find((d) => d.getName().toLowerCase() === 'syntax')?.getValue() ?? undefined;
  const lines = text.split(/\r?\n/);
  const out: ParsedInstruction[] = [];
  for (const ins of df.getInstructions()) {
    const start = ins.getRange().start.line;
    const end = ins.getRange().end.line;
    const keyword = ins.getKeyword().toUpperCase();
    const line = start + 1;
    if (!(KEYWORDS as readonly string[]).includes(keyword)) {
      throw new UserError(`unknown instruction ${ins.getInstruction()}: use one of ${KEYWORDS.join(', ')}`, { file, line });
    }
    const span = lines.slice(start, end + 1);
    const first = span[0] ?? '';
    span[0] = first.slice(ins.getInstructionRange().end.character);
    out.push(parseInstruction(keyword as Keyword, span, { file, line, endLine: end + 1, escape, original: lines.slice(start, end + 1).join('\n') }));
  }
  return syntax === undefined ? { file, escape, instructions: out } : { file, escape, syntax, instructions: out };
}

interface Ctx {
  file: string;
  line: number;
  endLine: number;
  escape: string;
  original: string;
}

function parseInstruction(keyword: Keyword, span: string[], ctx: Ctx): ParsedInstruction {
  const { logical, consumed } = joinContinuations(span, ctx.escape);
  const err = (msg: string): UserError => new UserError(msg, { file: ctx.file, line: ctx.line });
  const { flags, rest } = extractFlags(logical.trim(), err);
  const allowed = FLAGS_ALLOWED[keyword] ?? [];
  for (const f of flags) {
    if (!allowed.includes(f.name)) {
      throw err(`unknown flag --${f.name} on ${keyword}${allowed.length ? `: ${keyword} takes ${allowed.map((a) => `--${a}`).join(', ')}` : `: ${keyword} takes no flags`}`);
    }
  }
  const ins: ParsedInstruction = { keyword, file: ctx.file, line: ctx.line, endLine: ctx.endLine, original: ctx.original, flags, rest, heredocs: [] };

  if (HEREDOC_KEYWORDS.includes(keyword)) {
    const markers = heredocMarkers(rest);
    if (markers.length > 0) {
      ins.heredocs = readHeredocs(markers, span.slice(consumed), err);
      return ins;
    }
  }
  if (JSON_KEYWORDS.includes(keyword) && /^\[\s*"/.test(rest)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(rest);
    } catch (e) {
      throw err(`${keyword} arguments start like JSON but are not valid JSON (${(e as Error).message}): write ["a", "b"] with double quotes, or a shell form that does not start with ["`);
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
      throw err(`${keyword} JSON form must be an array of strings`);
    }
    ins.json = parsed as string[];
  } else if (keyword === 'SHELL') {
    throw err('SHELL requires the JSON form, e.g. SHELL ["/bin/bash", "-c"]');
  }
  return ins;
}

/**
 * Join a logical line: a trailing escape token continues it; comment lines and empty lines inside a
 * continuation are skipped; the next line keeps its leading whitespace (BuildKit's rules).
 */
function joinContinuations(span: string[], escape: string): { logical: string; consumed: number } {
  const cont = new RegExp(`(^|[^${escape === '\\' ? '\\\\' : escape}])${escape === '\\' ? '\\\\' : escape}[ \\t]*$`);
  let logical = '';
  let i = 0;
  let first = true;
  for (; i < span.length; i++) {
    let l = span[i] ?? '';
    if (!first && /^\s*#/.test(l)) continue;
    if (!first && l.trim() === '') continue;
    first = false;
    const m = cont.exec(l);
    if (m) {
      l = l.slice(0, m.index + m[1]!.length);
      logical += l;
      continue;
    }
    logical += l;
    i++;
    break;
  }
  return { logical, consumed: i };
}

/** Leading `--name=value` / `--name` words; values may be quoted. */
function extractFlags(s: string, err: (m: string) => UserError): { flags: Flag[]; rest: string } {
  const flags: Flag[] = [];
  let pos = 0;
  for (;;) {
    while (pos < s.length && /\s/.test(s[pos] as string)) pos++;
    if (!s.startsWith('--', pos)) break;
    let end = pos;
    let quote = '';
    let word = '';
    while (end < s.length) {
      const c = s[end] as string;
      if (quote) {
        if (c === quote) quote = '';
        else word += c;
      } else if (c === '"' || c === "'") quote = c;
      else if (/\s/.test(c)) break;
      else word += c;
      end++;
    }
    if (quote) throw err(`unterminated quote in flag ${s.slice(pos, end)}`);
    pos = end;
    if (word === '--') break;
    const body = word.slice(2);
    const eq = body.indexOf('=');
    const name = (eq < 0 ? body : body.slice(0, eq)).toLowerCase();
    if (!/^[a-z][a-z0-9-]*$/.test(name)) throw err(`malformed flag ${word}`);
    flags.push({ name, value: eq < 0 ? null : body.slice(eq + 1) });
  }
  return { flags, rest: s.slice(pos).trim() };
}

interface Marker {
  name: string;
  expand: boolean;
  chomp: boolean;
}

const HEREDOC_RE = /<<(-?)(?:(["'])([A-Za-z0-9_.-]+)\2|([A-Za-z0-9_.-]+))/g;

function heredocMarkers(rest: string): Marker[] {
  const out: Marker[] = [];
  for (const m of rest.matchAll(HEREDOC_RE)) {
    // `<<<` is a here-string and `[0-9]<<` is a shell redirect of a descriptor: not heredocs for us.
    const before = rest.slice(0, m.index);
    if (before.endsWith('<')) continue;
    out.push({ name: (m[3] ?? m[4]) as string, expand: m[2] === undefined, chomp: m[1] === '-' });
  }
  return out;
}

function readHeredocs(markers: Marker[], body: string[], err: (m: string) => UserError): Heredoc[] {
  const out: Heredoc[] = [];
  let i = 0;
  for (const mk of markers) {
    const content: string[] = [];
    let closed = false;
    for (; i < body.length; i++) {
      let l = body[i] as string;
      if (mk.chomp) l = l.replace(/^\t+/, '');
      if (l === mk.name) {
        closed = true;
        i++;
        break;
      }
      content.push(l);
    }
    if (!closed) throw err(`heredoc <<${mk.name} is not terminated: end it with a line holding only ${mk.name}`);
    out.push({ name: mk.name, content: content.map((l) => l + '\n').join(''), expand: mk.expand, chomp: mk.chomp });
  }
  return out;
}

export function flagValue(ins: ParsedInstruction, name: string): string | undefined {
  const f = [...ins.flags].reverse().find((x) => x.name === name);
  return f ? (f.value ?? '') : undefined;
}

export function flagValues(ins: ParsedInstruction, name: string): string[] {
  return ins.flags.filter((x) => x.name === name).map((x) => x.value ?? '');
}
