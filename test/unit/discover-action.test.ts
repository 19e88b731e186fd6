import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { changeFor, getInputs, rangeMessage } from '../../src/actions/discover/impl.js';

/**
 * The discover action's change (docs/discover.md, P134): what it compares, from its inputs and the event
 * the runner hands it. The action itself, run as the runner runs it against real git repositories, is
 * test/integration/discover-action.itg.test.ts.
 */
const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const Z = '0'.repeat(40);
const none = { base: '', head: '', all: false };

describe('changeFor', () => {
  test("a pull request (pull_request, pull_request_target, a review): its base.sha...head.sha", () => {
    for (const ev of ['pull_request', 'pull_request_target', 'pull_request_review']) {
      expect(changeFor(none, ev, { pull_request: { base: { sha: A }, head: { sha: B } } })).toEqual({ kind: 'range', base: A, head: B, source: "the pull request's base.sha and head.sha" });
    }
  });

  test('a push: before...after; a new branch or tag (before 000...) and a deletion are every image', () => {
    expect(changeFor(none, 'push', { ref: 'refs/heads/main', before: A, after: B })).toEqual({ kind: 'range', base: A, head: B, source: "the push's before and after", push: true });
    expect(changeFor(none, 'push', { ref: 'refs/tags/v1.0.0', before: Z, after: B })).toEqual({ kind: 'all', reason: 'push creating refs/tags/v1.0.0: every image' });
    expect(changeFor(none, 'push', { ref: 'refs/heads/x', before: A, after: Z })).toEqual({ kind: 'all', reason: 'push deleting refs/heads/x: every image' });
  });

  test('a merge group: base_sha...head_sha; other events: every image', () => {
    expect(changeFor(none, 'merge_group', { merge_group: { base_sha: A, head_sha: B } })).toMatchObject({ kind: 'range', base: A, head: B });
    expect(changeFor(none, 'workflow_dispatch', {})).toEqual({ kind: 'all', reason: 'event workflow_dispatch: every image (no change to compare)' });
    expect(changeFor(none, 'schedule', undefined)).toMatchObject({ kind: 'all' });
    expect(changeFor(none, undefined, undefined)).toEqual({ kind: 'all', reason: 'event (none): every image (no change to compare)' });
  });

  test('the inputs beat the event: all first, then base (head default HEAD)', () => {
    const pr = { pull_request: { base: { sha: A }, head: { sha: B } } };
    expect(changeFor({ ...none, all: true, base: 'main' }, 'pull_request', pr)).toEqual({ kind: 'all', reason: 'input all: every image' });
    expect(changeFor({ ...none, base: 'main' }, 'pull_request', pr)).toEqual({ kind: 'range', base: 'main', head: 'HEAD', source: 'input base, head HEAD' });
    expect(changeFor({ ...none, base: 'main', head: 'topic' }, 'pull_request', pr)).toMatchObject({ base: 'main', head: 'topic', source: 'inputs base and head' });
  });

  test('an event commit that is not a full sha is one line naming the field', () => {
    expect(() => changeFor(none, 'pull_request', { pull_request: { base: { sha: '--upload-pack=x' }, head: { sha: B } } })).toThrow(/^the event's pull_request\.base\.sha is "--upload-pack=x", not a commit: give inputs base and head, or all: true$/);
    expect(() => changeFor(none, 'push', { before: A })).toThrow(/^the event's after is missing, not a commit/);
  });
});

describe('rangeMessage', () => {
  const c = { kind: 'range' as const, base: A, head: B, source: "the pull request's base.sha and head.sha" };
  test('a shallow clone: fetch-depth 0; a full one: fetch the commit; no merge base', () => {
    expect(rangeMessage(c, { missing: ['base'], noMergeBase: false, shallow: true }, '.')).toBe(`the base commit ${A.slice(0, 12)} (the pull request's base.sha and head.sha) is not in the shallow clone at .: check out with actions/checkout's fetch-depth: 0 (or fetch the history before this step)`);
    expect(rangeMessage(c, { missing: ['base', 'head'], noMergeBase: false, shallow: false }, 'repo')).toMatch(/^the base commit a{12} and the head commit b{12} .* are not in the repository at repo: fetch it before this step/);
    expect(rangeMessage(c, { missing: [], noMergeBase: true, shallow: true }, '.')).toMatch(/^the shallow clone at \. lacks the merge base of a{12} and b{12} .*fetch-depth: 0/);
    expect(rangeMessage(c, { missing: [], noMergeBase: true, shallow: false }, '.')).toMatch(/have no common history in the repository at \.: give inputs base and head, or all: true$/);
  });
});

describe('getInputs', () => {
  const saved = { ...process.env };
  beforeEach(() => {
    for (const k of Object.keys(process.env)) if (k.startsWith('INPUT_')) delete process.env[k];
  });
  afterEach(() => {
    process.env = { ...saved };
  });
  test('path defaults to the workspace; refs that are options, or head without base, are one line', () => {
    expect(getInputs({ GITHUB_WORKSPACE: '/w' })).toEqual({ path: '/w', manifest: '', base: '', head: '', all: false, summary: true });
    process.env.INPUT_BASE = '--output=/etc/x';
    expect(() => getInputs({})).toThrow(/^input 'base' is '--output=\/etc\/x', not a git ref/);
    process.env.INPUT_BASE = '';
    process.env.INPUT_HEAD = 'topic';
    expect(() => getInputs({})).toThrow(/^input 'head' needs 'base'/);
    process.env.INPUT_ALL = 'maybe';
    delete process.env.INPUT_HEAD;
    expect(() => getInputs({})).toThrow(/^input 'all' is 'maybe': use true or false$/);
  });
});
