import type { Command } from 'commander';
import { parseTag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { humanBytes, json, table } from '../format.js';
import { intFlag, withProfileOptions, type CliContext, type SettingsCliOpts } from '../options.js';

/** image ls, inspect, push, pull, rm, prune. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  const image = program.command('image').description('manage stored images (tags org/name:version)');
  withProfileOptions(image.command('ls').description('list stored images').option('--json', 'print JSON'), ctx.env, { storage: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { storage } = await ctx.load(o);
      const { imageList } = await import('../../commands/image.js');
      const rows = await imageList(storage, ctx.logger.child('store'));
      if (o.json) return out(json(rows));
      out(table(
        ['TAG', 'TYPE', 'SIZE', 'APPARENT', 'CREATED', 'PARENT'],
        rows.map((r) => [r.tag, r.error ? 'CORRUPT' : r.type, humanBytes(r.sizeOnDisk), humanBytes(r.apparentSize), r.created, r.error ? r.error : r.parent]),
      ));
    });
  withProfileOptions(image.command('inspect').description('print an image\'s metadata as JSON').argument('<tag>', 'org/name:version'), ctx.env, { storage: true })
    .action(async (tag: string, o: SettingsCliOpts) => {
      const { storage } = await ctx.load(o);
      const { imageInspect } = await import('../../commands/image.js');
      const img = await imageInspect(storage, parseTag(tag));
      out(json({ tag: img.tag, path: img.dir, rootfs: img.rootfsPath, metadata: img.metadata }));
    });
  type RegistryCli = SettingsCliOpts & { username?: string; passwordStdin?: boolean; insecure?: boolean };
  const registryOpts = (c: Command): Command => c
    .option('--username <user>', 'registry user (default: the Docker config\'s credentials for that registry)')
    .option('--password-stdin', 'read the registry password or token from stdin')
    .option('--insecure', 'plain HTTP to the registry (always for localhost and 127.0.0.1)');
  const registryCreds = async (o: RegistryCli): Promise<{ credentials?: { username: string; password: string }; insecure?: boolean }> => {
    if (o.passwordStdin && !o.username) throw new UserError('--password-stdin needs --username');
    if (o.username && !o.passwordStdin) throw new UserError('--username needs --password-stdin (passwords never go on the command line)');
    let password = '';
    if (o.passwordStdin) {
      for await (const chunk of process.stdin) password += String(chunk);
      password = password.replace(/\r?\n$/, '');
      if (!password) throw new UserError('--password-stdin read an empty password');
    }
    return { ...(o.username ? { credentials: { username: o.username, password } } : {}), ...(o.insecure ? { insecure: true } : {}) };
  };
  type PushCli = RegistryCli & { source?: string; revision?: string; includeBuildArgs?: boolean; sbom: boolean };
  withProfileOptions(registryOpts(image.command('push').description('push a stored image to an OCI registry as a firebuild artifact (rootfs.ext4 zstd + metadata.json), with its SBOM attached as an OCI referrer')
    .argument('<tag>', 'org/name:version').argument('<ref>', 'registry/repository:tag')
    .option('--source <url>', "org.opencontainers.image.source: the repository's web address (default: the https form of the image's git source, when it was built from one; else none)")
    .option('--revision <commit>', 'org.opencontainers.image.revision (default: the commit of the git source --source defaults to)')
    .option('--include-build-args', "keep the build args (and the digests over them) in the pushed metadata.json (default: left out, they may be secrets)")
    .option('--no-sbom', 'do not make and attach the SPDX SBOM')), ctx.env, { storage: true })
    .action(async (tag: string, ref: string, o: PushCli) => {
      const { storage } = await ctx.load(o);
      const { imagePush } = await import('../../commands/image.js');
      const publish = { ...(o.source !== undefined ? { source: o.source } : {}), ...(o.revision !== undefined ? { revision: o.revision } : {}), includeBuildArgs: o.includeBuildArgs ?? false, sbom: o.sbom };
      const r = await imagePush(storage, parseTag(tag), ref, await registryCreds(o), publish, ctx.logger.child('oci'));
      out(json({ ref: r.ref, digest: r.digest, rootfsSha256: r.rootfsSha256, compressedSize: r.compressedSize, ...(r.sbom ? { sbom: r.sbom.digest } : {}) }));
    });
  withProfileOptions(image.command('sbom').description("print the SPDX 2.3 JSON SBOM of a stored image: the packages of its dpkg and apk databases, read from the ext4 image without mounting it")
    .argument('<tag>', 'org/name:version'), ctx.env, { storage: true })
    .action(async (tag: string, o: SettingsCliOpts) => {
      const { storage } = await ctx.load(o);
      const { imageSbom } = await import('../../commands/image.js');
      out((await imageSbom(storage, parseTag(tag), ctx.logger.child('sbom'))).toString('utf8'));
    });
  withProfileOptions(registryOpts(image.command('pull').description('pull a firebuild artifact from an OCI registry into the store, verifying every digest')
    .argument('<ref>', 'registry/repository:tag or @sha256:digest')
    .option('--tag <org/name:version>', 'store it under this tag (default: the tag it was pushed from)')
    .option('--overwrite', 'replace an image with the same tag')), ctx.env, { storage: true })
    .action(async (ref: string, o: RegistryCli & { tag?: string; overwrite?: boolean }) => {
      const { storage } = await ctx.load(o);
      const { imagePull } = await import('../../commands/image.js');
      const img = await imagePull(storage, ref, { ...(await registryCreds(o)), ...(o.tag ? { tag: parseTag(o.tag) } : {}), overwrite: o.overwrite ?? false }, ctx.logger.child('oci'));
      out(json({ tag: img.tag, rootfs: img.rootfsPath, sha256: img.metadata.rootfs.sha256, source: img.metadata.source.ref }));
    });
  withProfileOptions(image.command('rm').description('remove a stored image').argument('<tag>', 'org/name:version'), ctx.env, { storage: true })
    .action(async (tag: string, o: SettingsCliOpts) => {
      const { storage } = await ctx.load(o);
      const { imageRemove } = await import('../../commands/image.js');
      await imageRemove(storage, parseTag(tag), ctx.logger.child('store'));
    });
  withProfileOptions(image.command('prune').description('remove all but the newest images of each repository whose tag matches (per-PR images on a runner)')
    .requiredOption('--match <glob>', "tags to consider: * and ? wildcards; without ':' every version (e.g. 'pr/*')")
    .requiredOption('--keep <n>', 'how many of the newest (by creation time) to keep per repository')
    .option('--dry-run', 'print what would be removed, remove nothing')
    .option('--json', 'print JSON'), ctx.env, { storage: true })
    .action(async (o: SettingsCliOpts & { match: string; keep: string; dryRun?: boolean; json?: boolean }) => {
      const { imagePrune, tagGlob } = await import('../../commands/image.js');
      const match = tagGlob(o.match);
      const keep = intFlag(o.keep, '--keep');
      const { storage } = await ctx.load(o);
      const removed = await imagePrune(storage, { match, keep, dryRun: o.dryRun ?? false }, ctx.logger.child('store'));
      out(o.json ? json(removed) : removed.map((t) => `${t}\n`).join(''));
    });
}
