import { createHash } from 'node:crypto';
import { Ext4Image } from '../rootfs/ext4-read.js';
import { readInventory, type InstalledPackage, type PackageInventory } from '../rootfs/package-db.js';
import type { StoredImage } from './provider.js';
import { parseTag } from './tag.js';

/**
 * An SPDX 2.3 JSON SBOM of a stored image's root file system: the packages its package databases list
 * (rootfs/package-db.ts, read from the ext4 image in-process), each with its name, version, package URL
 * (purl) and, where the image says, its declared license. The document describes one package, the
 * rootfs (its sha256 as checksum), which CONTAINS every listed package. It is deterministic: the same
 * image and `created` give the same bytes (a re-publish adds no second SBOM to a registry).
 */
export const SPDX_MEDIA_TYPE = 'application/spdx+json';
export const SBOM_FILE = 'sbom.spdx.json';

interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  supplier?: string;
  downloadLocation: string;
  filesAnalyzed: false;
  homepage?: string;
  sourceInfo?: string;
  licenseConcluded: string;
  licenseDeclared: string;
  copyrightText: string;
  summary?: string;
  description?: string;
  packageFileName?: string;
  checksums?: { algorithm: 'SHA256'; checksumValue: string }[];
  externalRefs?: { referenceCategory: 'PACKAGE_MANAGER'; referenceType: 'purl'; referenceLocator: string }[];
  primaryPackagePurpose?: string;
}

export interface SpdxDocument {
  spdxVersion: 'SPDX-2.3';
  dataLicense: 'CC0-1.0';
  SPDXID: 'SPDXRef-DOCUMENT';
  name: string;
  documentNamespace: string;
  comment?: string;
  creationInfo: { created: string; creators: string[] };
  packages: SpdxPackage[];
  relationships: { spdxElementId: string; relationshipType: 'DESCRIBES' | 'CONTAINS'; relatedSpdxElement: string }[];
  hasExtractedLicensingInfos?: { licenseId: string; name: string; extractedText: string }[];
}

/** SPDX's timestamp form: `YYYY-MM-DDThh:mm:ssZ` (UTC, no fraction). */
export function spdxTime(iso: string): string {
  return new Date(iso).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A purl component: percent-encoded (purl-spec), `:` and `+` included. */
function enc(s: string): string {
  return encodeURIComponent(s);
}

/** pkg:deb/debian/NAME@VERSION?arch=..&distro=debian-12, pkg:apk/alpine/NAME@VERSION?arch=..&distro=alpine-3.19.1. */
export function purlOf(p: InstalledPackage, os: PackageInventory['os']): string {
  const namespace = os?.id ?? (p.manager === 'deb' ? 'debian' : 'alpine');
  const q: string[] = [];
  if (p.arch) q.push(`arch=${enc(p.arch)}`);
  if (os?.versionId) q.push(`distro=${enc(`${os.id}-${os.versionId}`)}`);
  if (p.source && p.manager === 'deb') q.push(`upstream=${enc(p.source)}`);
  return `pkg:${p.manager}/${enc(namespace)}/${enc(p.name)}@${enc(p.version)}${q.length ? `?${q.join('&')}` : ''}`;
}

/** An SPDXID for a package: its name made an idstring, and a digest of its identity (unique in the document). */
function packageId(p: InstalledPackage): string {
  const h = createHash('sha256').update(`${p.manager}\0${p.name}\0${p.version}\0${p.arch ?? ''}`).digest('hex').slice(0, 12);
  return `SPDXRef-Package-${p.manager}-${p.name.replace(/[^A-Za-z0-9.-]/g, '-')}-${h}`;
}

/** SPDX 2.3's supplier: `Person: name (email)`. */
function supplier(maintainer: string | undefined): string | undefined {
  if (!maintainer) return undefined;
  const m = /^(.*?)\s*<([^<>\s]+)>\s*$/.exec(maintainer);
  const name = (m ? m[1]! : maintainer).replace(/[()]/g, '').trim();
  return name ? `Person: ${name}${m ? ` (${m[2]})` : ''}` : undefined;
}

export function spdxDocument(image: { tag: string; rootfsSha256: string }, inv: PackageInventory, created: string): SpdxDocument {
  const tag = parseTag(image.tag);
  const rootId = 'SPDXRef-Rootfs';
  const refs = new Map<string, string>();
  const packages: SpdxPackage[] = [{
    SPDXID: rootId,
    name: `${tag.org}/${tag.name}`,
    versionInfo: tag.version,
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
    description: `firebuild root file system (ext4) ${image.tag}${inv.os?.prettyName ? `: ${inv.os.prettyName}` : ''}`,
    packageFileName: 'rootfs.ext4',
    checksums: [{ algorithm: 'SHA256', checksumValue: image.rootfsSha256 }],
    primaryPackagePurpose: 'OPERATING_SYSTEM',
  }];
  const sorted = [...inv.packages].sort((a, b) => a.manager.localeCompare(b.manager) || a.name.localeCompare(b.name) || a.version.localeCompare(b.version) || (a.arch ?? '').localeCompare(b.arch ?? ''));
  for (const p of sorted) {
    for (const [k, v] of p.license?.refs ?? []) if (!refs.has(k)) refs.set(k, v);
    const sup = supplier(p.maintainer);
    packages.push({
      SPDXID: packageId(p),
      name: p.name,
      versionInfo: p.version,
      ...(sup ? { supplier: sup } : {}),
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      ...(p.homepage ? { homepage: p.homepage } : {}),
      ...(p.source ? { sourceInfo: `built from the ${p.manager === 'deb' ? 'source package' : 'origin'} ${p.source}` } : {}),
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: p.license?.expression ?? 'NOASSERTION',
      copyrightText: 'NOASSERTION',
      ...(p.summary ? { summary: p.summary } : {}),
      externalRefs: [{ referenceCategory: 'PACKAGE_MANAGER', referenceType: 'purl', referenceLocator: purlOf(p, inv.os) }],
    });
  }
  const doc: SpdxDocument = {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: image.tag,
    documentNamespace: `https://spdx.org/spdxdocs/firebuild-${tag.org}-${tag.name}-${tag.version}-${image.rootfsSha256}`,
    ...(inv.notes.length ? { comment: inv.notes.join('; ') } : {}),
    creationInfo: { created: spdxTime(created), creators: ['Tool: firebuild'] },
    packages,
    relationships: [
      { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: rootId },
      ...packages.slice(1).map((p) => ({ spdxElementId: rootId, relationshipType: 'CONTAINS' as const, relatedSpdxElement: p.SPDXID })),
    ],
  };
  if (refs.size) {
    doc.hasExtractedLicensingInfos = [...refs].sort(([a], [b]) => a.localeCompare(b)).map(([licenseId, name]) => ({
      licenseId, name, extractedText: `The license named "${name}" by the package's own metadata; its text is in the package's copyright file in the image.`,
    }));
  }
  return doc;
}

/** The SBOM of a stored image, read from its rootfs.ext4 in-process, as the document and its JSON bytes. */
export async function imageSbom(image: StoredImage, created: string): Promise<{ doc: SpdxDocument; bytes: Buffer; notes: string[] }> {
  const img = await Ext4Image.open(image.rootfsPath, `${image.tag} (rootfs.ext4)`);
  let inv: PackageInventory;
  try {
    inv = await readInventory(img, `image ${image.tag}`);
  } finally {
    await img.close();
  }
  const doc = spdxDocument({ tag: image.tag, rootfsSha256: image.metadata.rootfs.sha256 }, inv, created);
  return { doc, bytes: Buffer.from(JSON.stringify(doc, null, 2) + '\n'), notes: inv.notes };
}
