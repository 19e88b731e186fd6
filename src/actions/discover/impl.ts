import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import * as core from '@actions/core';
import { discoverReport, gitRangeProblem, type DiscoverReport, type RangeProblem } from '../../commands/discover.js';
import { UserError } from '../../util/errors.js';
import { ActionsLogger, boolInput, input } from '../common.js';
import { summaryInput, writeSummary, type Cell } from '../summary.js';

/**
 * The discover action: `firebuild discover` (commands/discover.ts) with the change taken from the event
 * (a pull request's base.sha...head.sha, a push's before...after, a merge group's base_sha...head_sha;
 * any other event: every image), its matrix as outputs and a job summary of every image and why it is
 * affected. It never fetches: a commit the clone lacks is one annotation asking for fetch-depth: 0.
 */
export interface DiscoverInputs {
  /** The repository directory (default the workspace). */
  path: string;
  manifest: string;
  base: string;
  head: string;
  all: boolean;
  summary: boolean;
}

const REF = /^[A-Za-z0-9._/@^~{}-]+$/;
const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
const ZERO = /^0+$/;

export function getInputs(env: NodeJS.ProcessEnv = process.env): DiscoverInputs {
  const base = input('base');
  const head = input('head');
  for (const [name, v] of [['base', base], ['head', head]] as const) {
    if (v && (v.startsWith('-') || !REF.test(v))) throw new UserError(`input '${name}' is '${v}', not a git ref: give a branch, tag or commit`);
  }
  if (head && !base) throw new UserError("input 'head' needs 'base': the change is base...head");
  return { path: input('path', { default: env.GITHUB_WORKSPACE || '.' }), manifest: input('manifest'), base, head, all: boolInput('all'), summary: summaryInput() };
}

/** The change to compare: a git range (and where its ends came from), or every image (and why). */
export type Change =
  | { kind: 'range'; base: string; head: string; source: string; push?: boolean }
  | { kind: 'all'; reason: string };

interface Payload {
  pull_request?: { base?: { sha?: unknown }; head?: { sha?: unknown } };
  merge_group?: { base_sha?: unknown; head_sha?: unknown };
  before?: unknown;
  after?: unknown;
  ref?: unknown;
}

/** A commit the event names: a full sha, else one line naming the field. */
function sha(v: unknown, field: string): string {
  if (typeof v !== 'string' || !SHA.test(v)) throw new UserError(`the event's ${field} is ${JSON.stringify(v) ?? 'missing'}, not a commit: give inputs base and head, or all: true`);
  return v;
}

/**
 * What to compare, from the inputs and the event: `all` first, then `base`/`head` as given, then the
 * event's commits (pull_request, pull_request_target and the other events with a pull request;
 * merge_group; push, where a new branch or tag, before = 0000..., is every image); any other event
 * (workflow_dispatch, schedule, release, none) is every image.
 */
export function changeFor(i: Pick<DiscoverInputs, 'base' | 'head' | 'all'>, eventName: string | undefined, payload: unknown): Change {
  if (i.all) return { kind: 'all', reason: 'input all: every image' };
  if (i.base) return { kind: 'range', base: i.base, head: i.head || 'HEAD', source: i.head ? 'inputs base and head' : 'input base, head HEAD' };
  const p = (payload && typeof payload === 'object' ? payload : {}) as Payload;
  if (p.pull_request && typeof p.pull_request === 'object') {
    return { kind: 'range', base: sha(p.pull_request.base?.sha, 'pull_request.base.sha'), head: sha(p.pull_request.head?.sha, 'pull_request.head.sha'), source: "the pull request's base.sha and head.sha" };
  }
  if (eventName === 'merge_group' && p.merge_group && typeof p.merge_group === 'object') {
    return { kind: 'range', base: sha(p.merge_group.base_sha, 'merge_group.base_sha'), head: sha(p.merge_group.head_sha, 'merge_group.head_sha'), source: "the merge group's base_sha and head_sha" };
  }
  if (eventName === 'push') {
    const ref = typeof p.ref === 'string' ? p.ref : 'a ref';
    const after = sha(p.after, 'after');
    if (ZERO.test(after)) return { kind: 'all', reason: `push deleting ${ref}: every image` };
    if (p.before === undefined || (typeof p.before === 'string' && ZERO.test(p.before))) return { kind: 'all', reason: `push creating ${ref}: every image` };
    return { kind: 'range', base: sha(p.before, 'before'), head: after, source: "the push's before and after", push: true };
  }
  return { kind: 'all', reason: `event ${eventName || '(none)'}: every image (no change to compare)` };
}

/** The one line for a range this clone cannot diff. */
export function rangeMessage(c: Extract<Change, { kind: 'range' }>, p: RangeProblem, dir: string): string {
  const short = (r: string): string => (SHA.test(r) ? r.slice(0, 12) : r);
  const where = p.shallow ? `the shallow clone at ${dir}` : `the repository at ${dir}`;
  const fix = p.shallow ? "check out with actions/checkout's fetch-depth: 0 (or fetch the history before this step)" : 'fetch it before this step (git fetch origin <commit>), or give inputs base and head';
  if (p.missing.length) {
    const what = p.missing.map((m) => `the ${m} commit ${short(m === 'base' ? c.base : c.head)}`).join(' and ');
    return `${what} (${c.source}) ${p.missing.length > 1 ? 'are' : 'is'} not in ${where}: ${fix}`;
  }
  if (p.shallow) return `${where} lacks the merge base of ${short(c.base)} and ${short(c.head)} (${c.source}): ${fix}`;
  return `${short(c.base)} and ${short(c.head)} (${c.source}) have no common history in ${where}: give inputs base and head, or all: true`;
}

async function readEvent(file: string | undefined): Promise<unknown> {
  if (!file) return undefined;
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read the event file ${file} (GITHUB_EVENT_PATH; ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): run this step in a workflow, or give inputs base and head`, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UserError(`the event file ${file} (GITHUB_EVENT_PATH) is not JSON: run this step in a workflow, or give inputs base and head`, { cause: err });
  }
}

export async function run(): Promise<void> {
  const i = getInputs();
  const log = new ActionsLogger('discover');
  const dir = path.resolve(i.path);
  if (!(await fsp.stat(dir).catch(() => undefined))?.isDirectory()) throw new UserError(`input 'path' (${i.path}) is not a directory: give the repository's directory (the checkout)`);
  const eventName = process.env.GITHUB_EVENT_NAME;
  // Inputs that decide alone need no event.
  let change = changeFor(i, eventName, i.all || i.base ? undefined : await readEvent(process.env.GITHUB_EVENT_PATH));
  if (change.kind === 'range') {
    const problem = await gitRangeProblem(dir, change.base, change.head);
    if (problem) {
      // A force push: before is gone from a full clone; nothing to compare with, so every image.
      if (change.push && !problem.shallow && problem.missing.length === 1 && problem.missing[0] === 'base') {
        core.warning(`the push's before commit ${change.base.slice(0, 12)} is not in the repository (a force push?): every image is affected`);
        change = { kind: 'all', reason: 'push whose before commit is gone (a force push?): every image' };
      } else throw new UserError(rangeMessage(change, problem, i.path));
    }
  }
  if (change.kind === 'range') core.info(`changes: ${change.base}...${change.head} (${change.source})`);
  else core.info(change.reason);
  const report = await discoverReport({
    dir,
    ...(i.manifest ? { manifest: i.manifest } : {}),
    ...(change.kind === 'range' ? { base: change.base, head: change.head } : { all: true, allReason: change.reason }),
  }, log);
  const matrix = JSON.stringify(report.result);
  const count = report.result.include.length;
  core.info(`matrix: ${matrix}`);
  // Set last: a failure above leaves no output at all.
  core.setOutput('matrix', matrix);
  core.setOutput('count', String(count));
  core.setOutput('any', count > 0 ? 'true' : 'false');
  await writeSummary(summaryOf(i.path, change, report), i.summary);
}

function summaryOf(dir: string, change: Change, r: DiscoverReport): Parameters<typeof writeSummary>[0] {
  const short = (s: string): string => (SHA.test(s) ? s.slice(0, 12) : s);
  const affected = r.images.filter((x) => x.why !== undefined).length;
  const facts: [string, Cell][] = [
    ['repository', { code: dir }],
    ['images from', r.manifest !== undefined ? { code: r.manifest } : 'every Dockerfile (no firebuild.yml)'],
    ['change', change.kind === 'range' ? `${short(change.base)}...${short(change.head)} (${change.source}): ${r.changed?.length ?? 0} file(s) changed` : change.reason],
    ['affected', `${affected} of ${r.images.length} image(s)`],
  ];
  return {
    title: affected ? `firebuild discover: ${affected} image(s) to build` : 'firebuild discover: nothing to build',
    facts,
    tables: r.images.length ? [{ title: 'Images', header: ['image', 'Dockerfile', 'context', 'affected', 'why'], rows: r.images.map((x) => [{ code: x.tag }, { code: x.dockerfile }, { code: x.context }, x.why !== undefined ? 'yes' : 'no', x.why ?? 'nothing it reads changed']) }] : [],
  };
}
