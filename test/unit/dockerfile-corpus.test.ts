import { describe, expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalContext } from '../../src/source/context.js';
import { KEYWORDS, parseDockerfile } from '../../src/dockerfile/parse.js';
import { buildPlan } from '../../src/dockerfile/plan.js';
import { PlanSchema } from '../../src/dockerfile/plan-schema.js';
import { UserError, formatError } from '../../src/util/errors.js';

/**
 * The corpus: Dockerfiles written for the tests (each directory is a build context), each with its
 * expected plan (<name>.expected.json) or its expected error (<name>.case.json "error"). Regenerate expected plans after an intended change with
 * UPDATE_GOLDEN=1 and review the diff.
 */
const CORPUS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dockerfiles');
const cases = fs.readdirSync(CORPUS).filter((d) => fs.statSync(path.join(CORPUS, d)).isDirectory()).sort();

interface Case {
  buildArgs?: Record<string, string>;
  target?: string;
  dockerfile?: string;
  error?: string;
}

function readCase(name: string): Case {
  const f = path.join(CORPUS, `${name}.case.json`);
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as Case) : {};
}

async function planOf(name: string) {
  const c = readCase(name);
  const dir = path.join(CORPUS, name);
  const dfName = c.dockerfile ?? 'Dockerfile';
  const context = await LocalContext.open(dir, path.join(dir, dfName));
  return buildPlan(fs.readFileSync(path.join(dir, dfName), 'utf8'), {
    ...(c.buildArgs ? { buildArgs: c.buildArgs } : {}),
    ...(c.target ? { target: c.target } : {}),
    context,
    source: { kind: 'local', ref: name, dockerfile: dfName, context: name },
  });
}

test('the corpus has at least 30 Dockerfiles', () => {
  expect(cases.filter((c) => !readCase(c).error).length).toBeGreaterThanOrEqual(30);
});

describe('corpus plans', () => {
  test.each(cases.filter((c) => !readCase(c).error))('%s', async (name) => {
    const plan = await planOf(name);
    expect(PlanSchema.parse(plan)).toEqual(plan);
    const golden = path.join(CORPUS, `${name}.expected.json`);
    if (process.env.UPDATE_GOLDEN === '1') fs.writeFileSync(golden, JSON.stringify(plan, null, 2) + '\n');
    expect(plan).toEqual(JSON.parse(fs.readFileSync(golden, 'utf8')));
  });
});

describe('corpus errors: one line with file:line', () => {
  test.each(cases.filter((c) => readCase(c).error))('%s', async (name) => {
    const err = await planOf(name).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    const text = formatError(err);
    expect(text.includes('\n')).toBe(false);
    expect(text).toContain(readCase(name).error as string);
  });
});

test('together the corpus uses every instruction, flag and heredoc form', () => {
  const keywords = new Set<string>();
  const flags = new Set<string>();
  const heredocs = new Set<string>();
  let directives = '';
  for (const name of cases) {
    const dir = path.join(CORPUS, name);
    for (const f of fs.readdirSync(dir).filter((x) => /Dockerfile$/.test(x))) {
      let df;
      try {
        df = parseDockerfile(fs.readFileSync(path.join(dir, f), 'utf8'), f);
      } catch {
        continue;
      }
      if (df.syntax) directives += 'syntax ';
      if (df.escape === '`') directives += 'escape ';
      for (const i of df.instructions) {
        keywords.add(i.keyword);
        for (const fl of i.flags) flags.add(`${i.keyword} --${fl.name}`);
        if (i.json) flags.add(`${i.keyword} json`);
        for (const h of i.heredocs) heredocs.add(`${i.keyword} ${h.chomp ? '<<-' : '<<'} ${h.expand ? 'unquoted' : 'quoted'}`);
      }
    }
  }
  expect([...keywords].sort()).toEqual([...KEYWORDS].sort());
  for (const f of ['COPY --from', 'COPY --chown', 'COPY --chmod', 'COPY --link', 'FROM --platform', 'RUN --mount', 'RUN --network', 'RUN --security', 'HEALTHCHECK --interval', 'HEALTHCHECK --retries', 'COPY json', 'RUN json', 'CMD json', 'ENTRYPOINT json', 'VOLUME json', 'SHELL json']) {
    expect(flags).toContain(f);
  }
  for (const h of ['RUN << unquoted', 'RUN <<- quoted', 'COPY << unquoted', 'COPY << quoted']) expect(heredocs).toContain(h);
  expect(directives).toContain('syntax');
  expect(directives).toContain('escape');
});
