/**
 * License names as package databases write them (Debian's machine-readable copyright files, DEP-5; apk's
 * `L:` field) turned into SPDX license expressions for an SBOM. A name on the SPDX license list (or one
 * of Debian's short names for one: `GPL-2+`, `Expat`, `BSD-3-clause`) becomes its SPDX identifier;
 * anything else becomes a `LicenseRef-` of its own (SPDX 2.3 §10), reported so the document can carry
 * its text. Nothing here guesses: an unknown name is never mapped to a listed one.
 */

/** SPDX license-list identifiers common in distribution packages (matched case-insensitively). */
const LISTED = [
  '0BSD', 'AFL-2.1', 'AFL-3.0', 'AGPL-3.0-only', 'AGPL-3.0-or-later', 'Apache-1.0', 'Apache-1.1', 'Apache-2.0', 'APSL-2.0',
  'Artistic-1.0', 'Artistic-1.0-Perl', 'Artistic-2.0', 'Beerware', 'BSD-1-Clause', 'BSD-2-Clause', 'BSD-2-Clause-Patent',
  'BSD-3-Clause', 'BSD-3-Clause-Clear', 'BSD-4-Clause', 'BSD-4-Clause-UC', 'BSL-1.0', 'bzip2-1.0.6', 'CC-BY-3.0', 'CC-BY-4.0',
  'CC-BY-SA-3.0', 'CC-BY-SA-4.0', 'CC0-1.0', 'CDDL-1.0', 'CDDL-1.1', 'CECILL-2.1', 'curl', 'EPL-1.0', 'EPL-2.0', 'EUPL-1.2',
  'FSFAP', 'FSFUL', 'FSFULLR', 'FTL', 'GFDL-1.1-only', 'GFDL-1.1-or-later', 'GFDL-1.2-only', 'GFDL-1.2-or-later',
  'GFDL-1.3-only', 'GFDL-1.3-or-later', 'GPL-1.0-only', 'GPL-1.0-or-later', 'GPL-2.0-only', 'GPL-2.0-or-later',
  'GPL-3.0-only', 'GPL-3.0-or-later', 'HPND', 'ICU', 'IJG', 'Info-ZIP', 'ISC', 'LGPL-2.0-only', 'LGPL-2.0-or-later',
  'LGPL-2.1-only', 'LGPL-2.1-or-later', 'LGPL-3.0-only', 'LGPL-3.0-or-later', 'libpng-2.0', 'Libpng', 'MirOS', 'MIT',
  'MIT-0', 'MIT-CMU', 'MPL-1.1', 'MPL-2.0', 'MS-PL', 'NCSA', 'ODbL-1.0', 'OFL-1.1', 'OLDAP-2.8', 'OpenSSL', 'PHP-3.01',
  'PostgreSQL', 'PSF-2.0', 'Python-2.0', 'Ruby', 'Sleepycat', 'SGI-B-2.0', 'TCL', 'Unicode-3.0', 'Unicode-DFS-2016',
  'Unlicense', 'UPL-1.0', 'Vim', 'W3C', 'WTFPL', 'X11', 'Zlib', 'ZPL-2.1',
];
const LISTED_BY_LOWER = new Map(LISTED.map((id) => [id.toLowerCase(), id]));

/** SPDX exception identifiers, by the word Debian's `with X exception` uses. */
const EXCEPTIONS: Record<string, string> = {
  'bison': 'Bison-exception-2.2', 'bison-2.2': 'Bison-exception-2.2', 'classpath': 'Classpath-exception-2.0',
  'linux-syscall-note': 'Linux-syscall-note', 'gcc-runtime-library': 'GCC-exception-3.1', 'gcc-3.1': 'GCC-exception-3.1',
  'openssl': 'OpenSSL-exception', 'font': 'Font-exception-2.0', 'llvm': 'LLVM-exception',
};
const LISTED_EXCEPTIONS = new Map(Object.values(EXCEPTIONS).map((e) => [e.toLowerCase(), e]));

/** Debian short names (and other spellings) for listed licenses. */
const ALIASES: Record<string, string> = {
  'expat': 'MIT', 'mit/x11': 'MIT', 'artistic': 'Artistic-1.0-Perl', 'apache-2': 'Apache-2.0', 'bsd-2-clause': 'BSD-2-Clause',
  'bsd-3-clause': 'BSD-3-Clause', 'bsd-4-clause': 'BSD-4-Clause', 'bsd-4-clause-uc': 'BSD-4-Clause-UC', 'zlib': 'Zlib',
  'psf-2': 'PSF-2.0', 'mpl-2': 'MPL-2.0', 'cc0': 'CC0-1.0', 'bsl-1': 'BSL-1.0', 'ms-pl': 'MS-PL', 'public-domain': 'LicenseRef-public-domain',
};

/** GNU licenses in every spelling: GPL-2, GPL-2+, GPLv2+, GPL-2.0+, GPL-2.0-only, LGPL-2.1-or-later, AGPL-3, GFDL-1.3+. */
const GNU_RE = /^(A?GPL|LGPL|GFDL)(?:-|v)?(\d(?:\.\d)?)?(\+|-or-later|-only)?$/i;

function gnu(name: string): string | undefined {
  const m = GNU_RE.exec(name);
  if (!m) return undefined;
  const family = m[1]!.toUpperCase();
  let version = m[2];
  const later = m[3] === '+' || m[3]?.toLowerCase() === '-or-later';
  // No version: any version (the licenses' own terms), i.e. the first one or later.
  if (!version) return { GPL: 'GPL-1.0-or-later', LGPL: 'LGPL-2.0-or-later', AGPL: 'AGPL-3.0-or-later', GFDL: 'GFDL-1.1-or-later' }[family];
  if (!version.includes('.')) version += '.0';
  const id = `${family}-${version}-${later ? 'or-later' : 'only'}`;
  return LISTED_BY_LOWER.get(id.toLowerCase());
}

/**
 * A `LicenseRef-` identifier for a name (SPDX idstring: letters, digits, `.` and `-`), lower-case: SPDX
 * matches identifiers without regard to case, so `Foo` and `foo` must be one reference.
 */
export function licenseRef(name: string): string {
  const s = name.toLowerCase().replace(/\+/g, '-plus').replace(/[^a-z0-9.-]+/g, '-').replace(/-{2,}/g, '-').replace(/^-+|-+$/g, '').slice(0, 128);
  return `LicenseRef-${s || 'unknown'}`;
}

/** One license name as an SPDX identifier: listed, an alias of a listed one, or a LicenseRef. */
export function spdxId(name: string): string {
  const lower = name.toLowerCase();
  if (lower.startsWith('licenseref-')) return licenseRef(name.slice('LicenseRef-'.length));
  return LISTED_BY_LOWER.get(lower) ?? ALIASES[lower] ?? gnu(name) ?? licenseRef(name);
}

export type LicenseNode = { id: string; exception?: string } | { op: 'AND' | 'OR'; args: LicenseNode[] };
type Node = LicenseNode;

export interface LicenseExpression {
  /** The SPDX expression. */
  expression: string;
  /** Every LicenseRef- in it, with the name it was made from. */
  refs: Map<string, string>;
  node: LicenseNode;
}

/** Names longer than this, and expressions of more terms than this, are not licenses but garbage. */
const MAX_TERMS = 64;
const MAX_TEXT = 4096;

/**
 * A license field as an SPDX expression: Debian's `A or B, and C` (a comma lowers the precedence of
 * what follows), `and`, `or`, `and/or`, `with X exception`; apk's SPDX-like `A AND (B OR C)`, and its
 * older space-separated lists (read as AND). `and` binds tighter than `or`, as in both formats.
 * Undefined for an empty field or one that does not read as an expression (too long, unbalanced).
 */
export function licenseExpression(text: string): LicenseExpression | undefined {
  const t = text.trim();
  if (!t || t.length > MAX_TEXT) return undefined;
  const refs = new Map<string, string>();
  const groups = t.split(',').map((g) => g.trim()).filter(Boolean);
  let out: Node | undefined;
  for (const g of groups) {
    const lead = out ? /^(and\/or|and|or)\s+/i.exec(g) : null;
    const node = parseGroup(lead ? g.slice(lead[0].length) : g, refs);
    if (!node) return undefined;
    const op = lead && lead[1]!.toLowerCase() !== 'and' ? 'OR' : 'AND';
    out = out ? { op, args: [out, node] } : node;
  }
  if (!out || terms(out) > MAX_TERMS) return undefined;
  const node = simplify(out);
  return { expression: render(node), refs, node };
}

function terms(n: Node): number {
  return 'id' in n ? 1 : n.args.reduce((a, x) => a + terms(x), 0);
}

/** Tokens: parentheses, operators, names; `with X exception` is read by the parser. */
function parseGroup(g: string, refs: Map<string, string>): Node | undefined {
  const tokens = g.replace(/([()])/g, ' $1 ').split(/\s+/).filter(Boolean);
  let i = 0;
  const isOp = (t: string | undefined): boolean => t !== undefined && /^(and|or|and\/or|with)$/i.test(t);
  const term = (): Node | undefined => {
    const tok = tokens[i];
    if (tok === undefined || isOp(tok) || tok === ')') return undefined;
    if (tok === '(') {
      i++;
      const inner = or();
      if (tokens[i] !== ')') return undefined;
      i++;
      return inner;
    }
    i++;
    const name = tok;
    if (tokens[i]?.toLowerCase() === 'with' && tokens[i + 1] && !isOp(tokens[i + 1]) && tokens[i + 1] !== '(' && tokens[i + 1] !== ')') {
      // Debian's `with Some Words exception`, or SPDX's `WITH Exception-Id`.
      let end = i + 1;
      while (end < tokens.length && end < i + 8 && tokens[end]!.toLowerCase() !== 'exception' && !isOp(tokens[end]) && tokens[end] !== '(' && tokens[end] !== ')') end++;
      const wordy = tokens[end]?.toLowerCase() === 'exception';
      const exc = wordy ? tokens.slice(i + 1, end).join(' ') : tokens[i + 1]!;
      i = wordy ? end + 1 : i + 2;
      const known = EXCEPTIONS[exc.toLowerCase()] ?? LISTED_EXCEPTIONS.get(exc.toLowerCase());
      const id = spdxId(name);
      if (known && !id.startsWith('LicenseRef-')) return { id, exception: known };
      const ref = licenseRef(`${name}-with-${exc}-exception`);
      refs.set(ref, `${name} with ${exc} exception`);
      return { id: ref };
    }
    const id = spdxId(name);
    if (id.startsWith('LicenseRef-')) refs.set(id, name);
    return { id };
  };
  const and = (): Node | undefined => {
    const args: Node[] = [];
    for (;;) {
      const x = term();
      if (!x) return undefined;
      args.push(x);
      const next = tokens[i]?.toLowerCase();
      if (next === 'and') { i++; continue; }
      // Adjacent names without an operator (apk's old space-separated lists): AND.
      if (next !== undefined && next !== ')' && !isOp(next)) continue;
      break;
    }
    return args.length === 1 ? args[0] : { op: 'AND', args };
  };
  const or = (): Node | undefined => {
    const args: Node[] = [];
    for (;;) {
      const x = and();
      if (!x) return undefined;
      args.push(x);
      const next = tokens[i]?.toLowerCase();
      if (next === 'or' || next === 'and/or') { i++; continue; }
      break;
    }
    return args.length === 1 ? args[0] : { op: 'OR', args };
  };
  const n = or();
  return n && i === tokens.length ? n : undefined;
}

/** Nested operators of one kind flattened, repeated terms dropped. */
function simplify(n: Node): Node {
  if ('id' in n) return n;
  const args: Node[] = [];
  const seen = new Set<string>();
  for (const a of n.args.map(simplify)) {
    for (const x of 'op' in a && a.op === n.op ? a.args : [a]) {
      const key = render(x);
      if (!seen.has(key)) { seen.add(key); args.push(x); }
    }
  }
  return args.length === 1 ? args[0]! : { op: n.op, args };
}

function render(n: Node, parent?: 'AND' | 'OR'): string {
  if ('id' in n) return n.exception ? `${n.id} WITH ${n.exception}` : n.id;
  const s = n.args.map((a) => render(a, n.op)).join(` ${n.op} `);
  return parent && parent !== n.op ? `(${s})` : s;
}

/** Several expressions (a package's Files paragraphs) as one: their AND, flattened, repeated terms once. */
export function allOf(exprs: LicenseExpression[]): LicenseExpression | undefined {
  if (!exprs.length) return undefined;
  const refs = new Map<string, string>();
  for (const e of exprs) for (const [k, v] of e.refs) if (!refs.has(k)) refs.set(k, v);
  const node = simplify({ op: 'AND', args: exprs.map((e) => e.node) });
  return { expression: render(node), refs, node };
}
