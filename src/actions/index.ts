/**
 * The one bundle entry of the actions (dist/core/index.js, built by scripts/bundle-actions.sh).
 * Each action's runs.main/post is a generated stub (dist/<action>/index.js, dist/<action>/post/index.js)
 * that calls `main(action, phase)`: the actions share one copy of the core instead of one each, and each
 * step loads only its own program. That program is the action's main.ts or post.ts, which runs its step
 * when imported (as it did when it was a bundle entry of its own): `import()` here, so ncc splits each
 * into a chunk of its own and the modules they share into shared chunks.
 */
export const ACTIONS = {
  setup: { main: () => import('./setup/main.js'), post: () => import('./setup/post.js') },
  'build-rootfs': { main: () => import('./build-rootfs/main.js'), post: () => import('./build-rootfs/post.js') },
  'build-baseos': { main: () => import('./build-baseos/main.js') },
  'smoke-test': { main: () => import('./smoke-test/main.js'), post: () => import('./smoke-test/post.js') },
  publish: { main: () => import('./publish/main.js') },
  discover: { main: () => import('./discover/main.js') },
} as const satisfies Record<string, { main: () => Promise<unknown>; post?: () => Promise<unknown> }>;

export type ActionName = keyof typeof ACTIONS;
export type Phase = 'main' | 'post';

/** Run one step of one action; a name or phase the table lacks (a stale stub) fails the step with one line. */
export async function main(action: string, phase: Phase): Promise<void> {
  const steps: Partial<Record<Phase, () => Promise<unknown>>> | undefined = Object.hasOwn(ACTIONS, action) ? ACTIONS[action as ActionName] : undefined;
  const step = steps?.[phase];
  if (!step) {
    // The runner's annotation syntax, without loading @actions/core for a step that cannot run.
    process.stdout.write(`::error::firebuild has no ${phase} step for the action '${action}': dist/ is stale, rebuild it with npm run bundle\n`);
    process.exitCode = 1;
    return;
  }
  await step();
}
