import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';

/**
 * The layer order of docs/architecture.md, checked on the import graph of the TypeScript sources: a folder
 * imports only folders of a lower layer (a larger rank), never one above it nor a sibling of its own rank.
 * The faces (cli, actions) are thin adapters: beyond `import type`, they reach only the use cases
 * (commands), the settings (profile), util and the value types they parse input into (VALUE_TYPES). Only
 * actions/ imports @actions/*.
 */
export const LAYERS: string[][] = [
  ['cli', 'actions'],
  ['commands'],
  ['engine'],
  ['dockerfile'],
  ['source'],
  ['oci'],
  ['profile'],
  ['runtime'],
  ['vmm', 'net', 'guest'],
  ['store'],
  ['rootfs'],
  ['util'],
];
const FACES = new Set(LAYERS[0]);
const FACE_MAY_IMPORT = new Set(['commands', 'profile', 'util']);
/** Value types a face parses its input into, once, at the edge (a tag is validated where it enters). */
const VALUE_TYPES = new Set(['src/store/tag.ts']);

export interface Edge {
  from: string;
  to: string;
  typeOnly: boolean;
}

const rank = new Map(LAYERS.flatMap((folders, i) => folders.map((f): [string, number] => [f, i])));

/** Every relative import, re-export and dynamic import() of a source file, resolved to a path under src/. */
export function importsOf(file: string, text: string): Edge[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: Edge[] = [];
  const add = (spec: string, typeOnly: boolean): void => {
    if (spec.startsWith('.')) out.push({ from: file, to: path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)), typeOnly });
    else out.push({ from: file, to: spec, typeOnly });
  };
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      const c = n.importClause;
      // `import type {..}`, or every named binding marked `type` (elided from the JavaScript).
      const allTypes = !!c && (c.isTypeOnly || (!c.name && !!c.namedBindings && ts.isNamedImports(c.namedBindings) && c.namedBindings.elements.length > 0 && c.namedBindings.elements.every((e) => e.isTypeOnly)));
      add(n.moduleSpecifier.text, allTypes);
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      add(n.moduleSpecifier.text, n.isTypeOnly);
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword && n.arguments[0] && ts.isStringLiteral(n.arguments[0])) {
      add(n.arguments[0].text, false);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      add(n.argument.literal.text, true);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

/** The folder under src/ of a path like src/runtime/launch.ts (undefined for files directly in src/ or outside it). */
function folderOf(p: string): string | undefined {
  const parts = p.split('/');
  return parts[0] === 'src' && parts.length > 2 ? parts[1] : undefined;
}

/** The edges that break the order, as lines `from -> to: why`. */
export function violations(edges: Edge[]): string[] {
  const bad: string[] = [];
  for (const e of edges) {
    const a = folderOf(e.from);
    if (!a) continue;
    if (e.to.startsWith('@actions/')) {
      if (a !== 'actions' && !e.typeOnly) bad.push(`${e.from} -> ${e.to}: only actions/ imports @actions/*`);
      continue;
    }
    const b = folderOf(e.to);
    if (!b || a === b) continue;
    const ra = rank.get(a);
    const rb = rank.get(b);
    if (ra === undefined) { bad.push(`${e.from}: folder src/${a}/ has no layer (add it to LAYERS and docs/architecture.md)`); continue; }
    if (rb === undefined) { bad.push(`${e.from} -> ${e.to}: folder src/${b}/ has no layer`); continue; }
    if (FACES.has(a) && !FACE_MAY_IMPORT.has(b) && !e.typeOnly && !VALUE_TYPES.has(e.to)) bad.push(`${e.from} -> ${e.to}: a face reaches past commands/ (call a use case)`);
    else if (rb < ra) bad.push(`${e.from} -> ${e.to}: ${a} (layer ${ra}) imports ${b} above it (layer ${rb})`);
    else if (rb === ra) bad.push(`${e.from} -> ${e.to}: ${a} and ${b} are siblings of one layer`);
  }
  return bad;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.posix.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Imports name the compiled file (x.js): the graph is over the .ts sources. */
function graph(): Edge[] {
  return sources('src').flatMap((f) => importsOf(f, fs.readFileSync(f, 'utf8')).map((e) => ({ ...e, to: e.to.replace(/\.js$/, '.ts') })));
}

describe('layers', () => {
  it('every import in src/ follows the layer order', () => {
    const edges = graph();
    expect(edges.length).toBeGreaterThan(200);
    expect(violations(edges)).toEqual([]);
  });

  it('every folder under src/ has a layer', () => {
    const folders = fs.readdirSync('src', { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.filter((f) => !rank.has(f))).toEqual([]);
  });

  it('catches an import against the order, a sibling import, a face past commands/ and @actions/* below the faces', () => {
    const text = [
      "import { launchVm } from '../commands/run.js';",
      "import type { VmState } from '../runtime/state.js';",
      "const m = await import('../net/cni.js');",
      "export { x } from '../guest/prepare.js';",
      "import * as core from '@actions/core';",
    ].join('\n');
    expect(violations(importsOf('src/vmm/qemu.ts', text))).toEqual([
      'src/vmm/qemu.ts -> src/commands/run.js: vmm (layer 8) imports commands above it (layer 1)',
      'src/vmm/qemu.ts -> src/runtime/state.js: vmm (layer 8) imports runtime above it (layer 7)',
      'src/vmm/qemu.ts -> src/net/cni.js: vmm and net are siblings of one layer',
      'src/vmm/qemu.ts -> src/guest/prepare.js: vmm and guest are siblings of one layer',
      'src/vmm/qemu.ts -> @actions/core: only actions/ imports @actions/*',
    ]);
    const face = "import { runVm } from '../runtime/launch.js';\nimport type { VmState } from '../runtime/state.js';\nimport { build } from '../commands/build.js';";
    expect(violations(importsOf('src/cli/program.ts', face))).toEqual(['src/cli/program.ts -> src/runtime/launch.js: a face reaches past commands/ (call a use case)']);
    expect(violations(importsOf('src/store/tag.ts', "import { exec } from '../util/exec.js';"))).toEqual([]);
  });
});
