import { UserError } from '../util/errors.js';
import type { Ext4Image } from './ext4-read.js';
import { allOf, licenseExpression, type LicenseExpression } from './spdx-license.js';

/**
 * The packages installed in a root file system, read from its package databases inside the ext4 image
 * (`Ext4Image`: nothing is mounted or extracted): dpkg (`/var/lib/dpkg/status`, and distroless'
 * `/var/lib/dpkg/status.d/*`) and apk (`/lib/apk/db/installed`). rpm's databases (SQLite, Berkeley DB,
 * ndb) are not read: an image that has one gets a note saying so. The image is untrusted: every file is
 * read only up to a cap (a larger one is a one-line error, or for a copyright file, skipped), a database
 * with NUL bytes is refused, and an entry whose name or version is not one the package manager allows is
 * skipped and counted.
 */
export interface OsRelease { id: string; versionId?: string; prettyName?: string }

export interface InstalledPackage {
  manager: 'deb' | 'apk';
  name: string;
  version: string;
  arch?: string;
  /** The source package (dpkg `Source`, apk origin), when it differs from the name. */
  source?: string;
  maintainer?: string;
  homepage?: string;
  summary?: string;
  license?: LicenseExpression;
}

export interface PackageInventory {
  os?: OsRelease;
  packages: InstalledPackage[];
  /** What was not read, for the document's comment (and the log). */
  notes: string[];
}

/** At most this much of a package database is read (a large desktop's dpkg status is a few MiB). */
export const MAX_DB_BYTES = 64 << 20;
/** Per copyright file, and over all of them. */
export const MAX_COPYRIGHT_BYTES = 1 << 20;
const MAX_COPYRIGHT_TOTAL = 256 << 20;
const MAX_OS_RELEASE = 64 << 10;
const MAX_PACKAGES = 200_000;
const MAX_STATUS_D_FILES = 20_000;

const DPKG_STATUS = '/var/lib/dpkg/status';
const DPKG_STATUS_D = '/var/lib/dpkg/status.d';
const APK_DBS = ['/lib/apk/db/installed', '/usr/lib/apk/db/installed'];
const RPM_DBS = ['/var/lib/rpm/rpmdb.sqlite', '/var/lib/rpm/Packages', '/var/lib/rpm/Packages.db', '/usr/lib/sysimage/rpm/rpmdb.sqlite', '/usr/lib/sysimage/rpm/Packages.db'];

const DEB_NAME = /^[a-z0-9][a-z0-9+.-]{0,254}$/;
const DEB_VERSION = /^[A-Za-z0-9][A-Za-z0-9.+~:-]{0,255}$/;
const ARCH = /^[A-Za-z0-9_-]{1,32}$/;
const APK_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$/;
const APK_VERSION = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,255}$/;
/** dpkg states in which the package's files are on disk. */
const ON_DISK = new Set(['installed', 'half-configured', 'unpacked', 'half-installed', 'triggers-awaiting', 'triggers-pending']);

/** Text of a database, refused when it holds NUL bytes (binary: not a text database). */
function dbText(data: Buffer, what: string): string {
  if (data.includes(0)) throw new UserError(`${what} holds binary data (NUL bytes), not a package database firebuild can read: rebuild the image, or publish it without an SBOM`);
  return data.toString('utf8');
}

/** A printable one-line value, at most `max` characters (control characters dropped). */
function clean(s: string | undefined, max = 256): string | undefined {
  if (s === undefined) return undefined;
  // eslint-disable-next-line no-control-regex
  const v = s.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().slice(0, max);
  return v || undefined;
}

function httpUrl(s: string | undefined): string | undefined {
  const v = clean(s, 2048);
  if (!v || !/^https?:\/\/[^\s]+$/i.test(v)) return undefined;
  try {
    const u = new URL(v);
    return u.username || u.password ? undefined : u.toString();
  } catch {
    return undefined;
  }
}

/**
 * deb822 paragraphs (dpkg status, DEP-5 copyright files): `Field: value` lines, continuation lines
 * starting with a space or tab, paragraphs separated by blank lines. Field names are case-insensitive
 * (kept lower-case); a line that is neither is ignored.
 */
export function deb822(text: string, maxParagraphs = MAX_PACKAGES): Map<string, string>[] {
  const out: Map<string, string>[] = [];
  let cur: Map<string, string> | undefined;
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (/^\s*$/.test(line)) {
      if (cur?.size) out.push(cur);
      if (out.length >= maxParagraphs) return out;
      cur = undefined;
      last = undefined;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (cur && last) cur.set(last, `${cur.get(last)}\n${line.slice(1)}`);
      continue;
    }
    const m = /^([\x21-\x39\x3b-\x7e]+):(.*)$/.exec(line);
    if (!m) continue;
    cur ??= new Map();
    last = m[1]!.toLowerCase();
    if (!cur.has(last)) cur.set(last, m[2]!.trim());
    else last = undefined;
  }
  if (cur?.size && out.length < maxParagraphs) out.push(cur);
  return out;
}

/** dpkg's status file (or the paragraphs of status.d): the packages whose files are on disk. */
export function parseDpkgStatus(text: string): { packages: InstalledPackage[]; skipped: number } {
  const packages: InstalledPackage[] = [];
  let skipped = 0;
  for (const p of deb822(text)) {
    const status = (p.get('status') ?? 'install ok installed').split(/\s+/);
    if (!ON_DISK.has(status[2] ?? '')) continue;
    const name = p.get('package') ?? '';
    const version = p.get('version') ?? '';
    const arch = p.get('architecture');
    if (!DEB_NAME.test(name) || !DEB_VERSION.test(version) || (arch !== undefined && !ARCH.test(arch))) {
      skipped++;
      continue;
    }
    const source = /^([a-z0-9][a-z0-9+.-]*)/.exec(p.get('source') ?? '')?.[1];
    const maintainer = clean(p.get('maintainer'));
    const homepage = httpUrl(p.get('homepage'));
    const summary = clean(p.get('description')?.split('\n')[0]);
    packages.push({
      manager: 'deb', name, version, ...(arch ? { arch } : {}), ...(source && source !== name ? { source } : {}),
      ...(maintainer ? { maintainer } : {}), ...(homepage ? { homepage } : {}), ...(summary ? { summary } : {}),
    });
  }
  return { packages, skipped };
}

/** apk's installed database: `K:value` lines, packages separated by blank lines. */
export function parseApkInstalled(text: string): { packages: InstalledPackage[]; skipped: number } {
  const packages: InstalledPackage[] = [];
  let skipped = 0;
  for (const block of text.split(/\n\s*\n/)) {
    const f = new Map<string, string>();
    for (const line of block.split('\n')) {
      const m = /^([A-Za-z]):(.*)$/.exec(line);
      if (m && !f.has(m[1]!)) f.set(m[1]!, m[2]!);
    }
    if (!f.has('P') && !f.has('V')) continue;
    if (packages.length + skipped >= MAX_PACKAGES) break;
    const name = f.get('P') ?? '';
    const version = f.get('V') ?? '';
    const arch = f.get('A');
    if (!APK_NAME.test(name) || !APK_VERSION.test(version) || (arch !== undefined && !ARCH.test(arch))) {
      skipped++;
      continue;
    }
    const origin = /^([A-Za-z0-9_][A-Za-z0-9_.+-]*)$/.exec(f.get('o') ?? '')?.[1];
    const license = licenseExpression(f.get('L') ?? '');
    const maintainer = clean(f.get('m'));
    const homepage = httpUrl(f.get('U'));
    const summary = clean(f.get('T'));
    packages.push({
      manager: 'apk', name, version, ...(arch ? { arch } : {}), ...(origin && origin !== name ? { source: origin } : {}),
      ...(maintainer ? { maintainer } : {}), ...(homepage ? { homepage } : {}), ...(summary ? { summary } : {}), ...(license ? { license } : {}),
    });
  }
  return { packages, skipped };
}

/**
 * The license of a Debian package from its machine-readable copyright file (DEP-5; others have free
 * text, and are not guessed at): the AND of the licenses of its `Files` paragraphs.
 */
export function dep5License(text: string): LicenseExpression | undefined {
  if (!/^Format(-Specification)?:/i.test(text)) return undefined;
  const exprs: LicenseExpression[] = [];
  for (const p of deb822(text, 10_000)) {
    if (!p.has('files')) continue;
    const first = (p.get('license') ?? '').split('\n')[0]!;
    const e = licenseExpression(first);
    if (e) exprs.push(e);
  }
  return allOf(exprs);
}

/** os-release: KEY=value lines, values optionally quoted. */
export function parseOsRelease(text: string): OsRelease | undefined {
  const v: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let val = m[2]!.trim();
    if (/^(["']).*\1$/.test(val)) val = val.slice(1, -1).replace(/\\(["$`\\])/g, '$1');
    v[m[1]!] = val;
  }
  const id = /^[a-z0-9._-]{1,64}$/.test(v.ID ?? '') ? v.ID! : undefined;
  if (!id) return undefined;
  const versionId = /^[A-Za-z0-9._~-]{1,64}$/.test(v.VERSION_ID ?? '') ? v.VERSION_ID : undefined;
  const prettyName = clean(v.PRETTY_NAME);
  return { id, ...(versionId ? { versionId } : {}), ...(prettyName ? { prettyName } : {}) };
}

/**
 * A regular file of the image (symlinks followed inside it), at most `max` bytes: undefined when it does
 * not exist or is not a regular file, `'too large'` past the cap (nothing of it read).
 */
export async function readCapped(img: Ext4Image, p: string, max: number): Promise<Buffer | undefined | 'too large'> {
  const e = await img.stat(p, { follow: true });
  if (!e || e.type !== 'file') return undefined;
  if (e.size > max) return 'too large';
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of img.readFile(e.ino, p)) {
    n += c.length;
    if (n > max) return 'too large';
    parts.push(c);
  }
  return Buffer.concat(parts);
}

const mib = (n: number): string => `${n >> 20} MiB`;

/** Every package of every database the image has (see the top of this file). */
export async function readInventory(img: Ext4Image, what: string): Promise<PackageInventory> {
  const notes: string[] = [];
  const packages: InstalledPackage[] = [];
  const db = async (p: string): Promise<Buffer | undefined> => {
    const b = await readCapped(img, p, MAX_DB_BYTES);
    if (b === 'too large') throw new UserError(`${what}: ${p} is larger than ${mib(MAX_DB_BYTES)}, more than firebuild reads from a package database: rebuild the image, or publish it without an SBOM`);
    return b;
  };

  const osText = await readCapped(img, '/etc/os-release', MAX_OS_RELEASE).then((b) => b ?? readCapped(img, '/usr/lib/os-release', MAX_OS_RELEASE));
  const os = Buffer.isBuffer(osText) && !osText.includes(0) ? parseOsRelease(osText.toString('utf8')) : undefined;

  // dpkg: the status file, and distroless' status.d (one file per package).
  const status = await db(DPKG_STATUS);
  const deb: InstalledPackage[] = [];
  let skipped = 0;
  if (status) {
    const r = parseDpkgStatus(dbText(status, `${what}: ${DPKG_STATUS}`));
    deb.push(...r.packages);
    skipped += r.skipped;
  }
  const statusD = await img.stat(DPKG_STATUS_D, { follow: true });
  if (statusD?.type === 'dir') {
    let files = 0;
    let bytes = 0;
    for await (const e of img.walk(DPKG_STATUS_D)) {
      if (e.type !== 'file' || e.path.endsWith('.md5sums') || e.path.split('/').length !== DPKG_STATUS_D.split('/').length + 1) continue;
      if (++files > MAX_STATUS_D_FILES) throw new UserError(`${what}: ${DPKG_STATUS_D} holds more than ${MAX_STATUS_D_FILES} files: rebuild the image, or publish it without an SBOM`);
      const b = await db(e.path);
      if (!b) continue;
      bytes += b.length;
      if (bytes > MAX_DB_BYTES) throw new UserError(`${what}: ${DPKG_STATUS_D} holds more than ${mib(MAX_DB_BYTES)}: rebuild the image, or publish it without an SBOM`);
      const r = parseDpkgStatus(dbText(b, `${what}: ${e.path}`));
      deb.push(...r.packages);
      skipped += r.skipped;
    }
  }
  // Licenses from the packages' machine-readable copyright files (shared by a package's architectures).
  let copyrightBytes = 0;
  const licenses = new Map<string, LicenseExpression | undefined>();
  let unread = 0;
  for (const p of deb) {
    if (!licenses.has(p.name)) {
      let lic: LicenseExpression | undefined;
      if (copyrightBytes < MAX_COPYRIGHT_TOTAL) {
        const b = await readCapped(img, `/usr/share/doc/${p.name}/copyright`, MAX_COPYRIGHT_BYTES);
        if (b === 'too large') unread++;
        else if (b && !b.includes(0)) {
          copyrightBytes += b.length;
          lic = dep5License(b.toString('utf8'));
        }
      } else unread++;
      licenses.set(p.name, lic);
    }
    const lic = licenses.get(p.name);
    packages.push(lic ? { ...p, license: lic } : p);
  }
  if (unread) notes.push(`${unread} Debian copyright file(s) over ${mib(MAX_COPYRIGHT_BYTES)} (or past ${mib(MAX_COPYRIGHT_TOTAL)} in all) were not read for licenses`);

  for (const p of APK_DBS) {
    const b = await db(p);
    if (!b) continue;
    const r = parseApkInstalled(dbText(b, `${what}: ${p}`));
    packages.push(...r.packages);
    skipped += r.skipped;
    break;
  }
  if (skipped) notes.push(`${skipped} package database entr${skipped === 1 ? 'y' : 'ies'} with a name, version or architecture the package manager does not allow were skipped`);
  for (const p of RPM_DBS) {
    if (await img.stat(p, { follow: true })) {
      notes.push(`the image has an rpm database (${p}); firebuild reads dpkg and apk databases only, so rpm packages are not listed`);
      break;
    }
  }
  if (packages.length > MAX_PACKAGES) throw new UserError(`${what}: more than ${MAX_PACKAGES} packages in its databases: rebuild the image, or publish it without an SBOM`);
  // One entry per package: a database listing one twice (a hostile one) keeps the first.
  const seen = new Set<string>();
  const uniq = packages.filter((p) => {
    const k = `${p.manager}\0${p.name}\0${p.version}\0${p.arch ?? ''}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return { ...(os ? { os } : {}), packages: uniq, notes };
}
