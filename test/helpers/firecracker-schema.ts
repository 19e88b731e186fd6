import * as fs from 'node:fs';
import * as path from 'node:path';
import AjvModule from 'ajv';
import { parse as parseYaml } from 'yaml';
import { REPO } from './cli.js';

/**
 * The official Firecracker API schema (test/fixtures/firecracker-api/firecracker.yaml, copied with its license) as validators,
 * with unknown properties made errors so a misspelled field fails.
 */
export const SCHEMA = path.join(REPO, 'test', 'fixtures', 'firecracker-api', 'firecracker.yaml');
export const swagger = parseYaml(fs.readFileSync(SCHEMA, 'utf8')) as {
  definitions: Record<string, unknown>;
  paths: Record<string, Record<string, { parameters?: { in: string; schema?: { $ref?: string } }[] }>>;
};

function closed(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(closed);
  if (node && typeof node === 'object') {
    const o = Object.fromEntries(Object.entries(node as Record<string, unknown>).map(([k, v]) => [k, closed(v)]));
    if (o.type === 'object' && o.properties && o.additionalProperties === undefined) o.additionalProperties = false;
    return o;
  }
  return node;
}
const definitions = closed(swagger.definitions) as Record<string, unknown>;
const Ajv = ((AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule) as unknown as new (o: object) => { compile(s: object): ((d: unknown) => boolean) & { errors?: unknown } };
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const validators = new Map<string, ReturnType<typeof ajv.compile>>();

/** null when `body` satisfies the definition, else ajv's errors. */
export function validate(definition: string, body: unknown): unknown {
  let v = validators.get(definition);
  if (!v) {
    v = ajv.compile({ definitions, $ref: `#/definitions/${definition}` });
    validators.set(definition, v);
  }
  return v(body) ? null : v.errors;
}

/** The body definition the API declares for a request (method + concrete path), or undefined. */
export function bodyDefinition(method: string, reqPath: string): string | undefined {
  const template = Object.keys(swagger.paths).find((p) => new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(reqPath));
  if (!template) return undefined;
  const ref = swagger.paths[template]?.[method.toLowerCase()]?.parameters?.find((p) => p.in === 'body')?.schema?.$ref;
  return ref?.replace('#/definitions/', '');
}
