import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { REPO } from '../helpers/cli.js';

interface DocsActions {
  ACTION_DIRS: string[];
  ACTIONS_START: string;
  actionsReference(repo: string): string;
  spliceActionsReference(doc: string, ref: string): string;
}
interface Licenses {
  bundledPackageDirs(stats: unknown, root: string): string[];
  licensesText(dirs: string[]): string;
}
const load = async <T>(file: string): Promise<T> => (await import(pathToFileURL(path.join(REPO, 'scripts', file)).href)) as T;

describe('docs/actions.md reference', () => {
  test('is generated from the action.yml files and current (npm run docs:actions)', async () => {
    const m = await load<DocsActions>('docs-actions.mjs');
    const doc = fs.readFileSync(path.join(REPO, 'docs', 'actions.md'), 'utf8');
    expect(doc).toContain(m.ACTIONS_START);
    expect(m.spliceActionsReference(doc, m.actionsReference(REPO))).toBe(doc);
  });

  test('covers every action folder, every input and output, with a uses: line and a permissions table', async () => {
    const m = await load<DocsActions>('docs-actions.mjs');
    const dirs = fs.readdirSync(REPO).filter((d) => d !== 'node_modules' && fs.existsSync(path.join(REPO, d, 'action.yml')));
    expect([...m.ACTION_DIRS].sort()).toEqual(dirs.sort());
    const ref = m.actionsReference(REPO);
    for (const d of dirs) {
      const yml = parseYaml(fs.readFileSync(path.join(REPO, d, 'action.yml'), 'utf8')) as { inputs: Record<string, unknown>; outputs: Record<string, unknown> };
      const section = ref.slice(ref.indexOf(`### \`${d}\``)).split(/\n### /)[0]!;
      expect(section).toContain(`- uses: firebuild/firebuild/${d}@v1`);
      for (const k of [...Object.keys(yml.inputs), ...Object.keys(yml.outputs)]) expect([d, k, section.includes(`| \`${k}\` |`)]).toEqual([d, k, true]);
      expect(section).toMatch(/\| permission \| why \|\n\| --- \| --- \|\n\| (none|`[a-z-]+: (read|write)`) \|/);
    }
    // A changed description shows: the check compares real text.
    expect(m.spliceActionsReference(fs.readFileSync(path.join(REPO, 'docs', 'actions.md'), 'utf8'), ref.replace('The stored tag', 'Another tag'))).not.toBe(fs.readFileSync(path.join(REPO, 'docs', 'actions.md'), 'utf8'));
  });

  test('every action.yml has branding (icon and color) and names its permissions', () => {
    for (const d of ['.', 'discover', 'setup', 'build-rootfs', 'build-baseos', 'smoke-test', 'publish']) {
      const text = fs.readFileSync(path.join(REPO, d, 'action.yml'), 'utf8');
      const yml = parseYaml(text) as { branding?: { icon?: string; color?: string } };
      expect([d, typeof yml.branding?.icon, yml.branding?.color]).toEqual([d, 'string', expect.stringMatching(/^(white|black|yellow|blue|green|orange|red|purple|gray-dark)$/)]);
      expect([d, /^# permission: /m.test(text)]).toEqual([d, true]);
    }
  });
});

describe('scripts/licenses.mjs (dist/licenses.txt)', () => {
  test('lists each bundled package once per version and text, sorted, whatever order the stats name them in', async () => {
    const m = await load<Licenses>('licenses.mjs');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'licenses-'));
    try {
      const pkg = (dir: string, name: string, version: string, license: string, text?: string): void => {
        fs.mkdirSync(path.join(root, dir), { recursive: true });
        fs.writeFileSync(path.join(root, dir, 'package.json'), JSON.stringify({ name, version, license }));
        if (text) fs.writeFileSync(path.join(root, dir, 'LICENSE'), text);
        fs.writeFileSync(path.join(root, dir, 'index.js'), '');
      };
      pkg('node_modules/zeta', 'zeta', '1.0.0', 'MIT', 'MIT zeta text\n');
      pkg('node_modules/@scope/alpha', '@scope/alpha', '2.0.0', 'Apache-2.0', 'Apache text');
      pkg('node_modules/zeta/node_modules/isarray', 'isarray', '1.0.0', 'MIT', 'isarray text A');
      pkg('node_modules/isarray', 'isarray', '1.0.0', 'MIT', 'isarray text A');
      pkg('node_modules/nolicense', 'nolicense', '0.1.0', 'ISC');
      pkg('node_modules/unused', 'unused', '9.9.9', 'GPL-3.0', 'not bundled');
      const stats = (order: string[]): unknown => ({ modules: order.map((p) => ({ identifier: `/loader.js!${path.join(root, p)}`, name: `./${p}` })) });
      const files = ['node_modules/zeta/index.js', 'node_modules/@scope/alpha/index.js', 'node_modules/zeta/node_modules/isarray/index.js', 'node_modules/isarray/index.js', 'node_modules/nolicense/index.js'];
      const a = m.licensesText(m.bundledPackageDirs(stats(files), root));
      const b = m.licensesText(m.bundledPackageDirs(stats([...files].reverse()), root));
      expect(a).toBe(b);
      const ids = [...a.matchAll(/^(\S+@\d\S*)\nLicense: (.+)$/gm)].map((x) => `${x[1]} ${x[2]}`);
      expect(ids).toEqual(['@scope/alpha@2.0.0 Apache-2.0', 'isarray@1.0.0 MIT', 'nolicense@0.1.0 ISC', 'zeta@1.0.0 MIT']);
      expect(a).toContain('MIT zeta text');
      expect(a).toContain("(no license file in the package; package.json says ISC)");
      expect(a).not.toContain('unused');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
