/**
 * One error taxonomy for the whole product.
 *
 * - UserError: the user can fix it (bad flag, bad tag, missing file, no KVM). The faces print one line
 *   saying what is wrong and how to fix it, and exit 2 (the CLI) or fail the step with that line (actions).
 * - Anything else is an internal failure: exit 1 with the cause chain.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
  /** Where in a user's file the problem is, when there is one (becomes an annotation in Actions). */
  readonly file?: string;
  readonly line?: number;

  constructor(message: string, options: { cause?: unknown; file?: string; line?: number } = {}) {
    super(oneLine(message), options.cause === undefined ? undefined : { cause: options.cause });
    if (options.file !== undefined) this.file = options.file;
    if (options.line !== undefined) this.line = options.line;
  }
}

/** An internal failure with context; keeps its cause. */
export class InternalError extends Error {
  override readonly name = 'InternalError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
}

export const EXIT_USER = 2;
export const EXIT_INTERNAL = 1;

export function isUserError(err: unknown): err is UserError {
  return err instanceof UserError;
}

export function exitCodeFor(err: unknown): number {
  return isUserError(err) ? EXIT_USER : EXIT_INTERNAL;
}

/** The messages of an error and its causes, outermost first. */
export function causeChain(err: unknown): string[] {
  const out: string[] = [];
  const seen = new Set<unknown>();
  let cur: unknown = err;
  while (cur !== undefined && cur !== null && !seen.has(cur)) {
    seen.add(cur);
    if (cur instanceof Error) {
      out.push(cur.message);
      cur = (cur as Error & { cause?: unknown }).cause;
    } else {
      out.push(String(cur));
      break;
    }
  }
  return out;
}

/** The text a face prints for an error: one line for user errors, the cause chain for internal ones. */
export function formatError(err: unknown): string {
  if (isUserError(err)) {
    const where = err.file ? `${err.file}${err.line ? `:${err.line}` : ''}: ` : '';
    return `error: ${where}${err.message}`;
  }
  const chain = causeChain(err);
  const [head, ...rest] = chain;
  return [`internal error: ${head ?? 'unknown'}`, ...rest.map((c) => `  caused by: ${c}`)].join('\n');
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Node's errno code of an error, if any. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}
