import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';
import { MAX_DB_BYTES, dep5License, parseApkInstalled, parseDpkgStatus, parseOsRelease, readInventory, type PackageInventory } from '../../src/rootfs/package-db.js';
import { licenseExpression } from '../../src/rootfs/spdx-license.js';
import { purlOf, spdxDocument, spdxTime } from '../../src/store/sbom.js';
import { UserError } from '../../src/util/errors.js';
import { mkfsFromDir } from '../helpers/ext4-craft.js';

/**
 * The SBOM's parts: the package database parsers (dpkg status, apk installed, DEP-5 copyright files,
 * os-release), license names as SPDX expressions, purls, the SPDX document; and the inventory read from
 * real ext4 images (mkfs.ext4 -d), hostile ones included: a huge database is refused before a byte of
 * it is read, binary garbage is one line, printable garbage lists nothing, nothing crashes.
 */
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbom-test-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const STATUS = `Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy.
 .
 More text.

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Homepage: https://www.gnu.org/software/libc/libc.html
Description: GNU C Library: Shared libraries

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: never-there
Status: purge ok not-installed
Architecture: amd64
Version: 1.0-1

Package: Bad/Name
Status: install ok installed
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
Source: tzdata (2024a-0+deb12u1)
`;

describe('package databases', () => {
  test('dpkg status: installed packages with name, version, arch, source; config-files and not-installed left out; a bad name skipped and counted', () => {
    const r = parseDpkgStatus(STATUS);
    expect(r.skipped).toBe(1);
    expect(r.packages.map((p) => [p.name, p.version, p.arch, p.source])).toEqual([
      ['base-files', '12.4+deb12u5', 'amd64', undefined],
      ['libc6', '2.36-9+deb12u4', 'amd64', 'glibc'],
      ['tzdata', '2024a-0+deb12u1', 'all', undefined],
    ]);
    expect(r.packages[0]).toMatchObject({ maintainer: 'Santiago Vila <sanvila@debian.org>', summary: 'Debian base system miscellaneous files' });
    expect(r.packages[1]!.homepage).toBe('https://www.gnu.org/software/libc/libc.html');
  });

  test('apk installed: P, V, A, L, o; the license read as SPDX', () => {
    const db = 'C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nI:622592\nT:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\no:musl\nm:Timo Teräs <timo.teras@iki.fi>\nF:lib\nR:ld-musl-x86_64.so.1\n\n'
      + 'P:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\nP:ssl_client\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only AND (MIT OR Apache-2.0)\no:busybox\n\nP:../evil\nV:1\n';
    const r = parseApkInstalled(db);
    expect(r.skipped).toBe(1);
    expect(r.packages.map((p) => [p.name, p.version, p.arch, p.source, p.license?.expression])).toEqual([
      ['musl', '1.2.4-r2', 'x86_64', undefined, 'MIT'],
      ['busybox', '1.36.1-r15', 'x86_64', undefined, 'GPL-2.0-only'],
      ['ssl_client', '1.36.1-r15', 'x86_64', 'busybox', 'GPL-2.0-only AND (MIT OR Apache-2.0)'],
    ]);
  });

  test.each([
    ['GPL-2+', 'GPL-2.0-or-later'],
    ['GPL-2', 'GPL-2.0-only'],
    ['LGPL-2.1+', 'LGPL-2.1-or-later'],
    ['GPLv3+', 'GPL-3.0-or-later'],
    ['Expat', 'MIT'],
    ['BSD-3-clause', 'BSD-3-Clause'],
    ['GPL-1+ or Artistic', 'GPL-1.0-or-later OR Artistic-1.0-Perl'],
    ['LGPL-3+ or GPL-2+', 'LGPL-3.0-or-later OR GPL-2.0-or-later'],
    ['GPL-1+ or Artistic, and Unicode', '(GPL-1.0-or-later OR Artistic-1.0-Perl) AND LicenseRef-unicode'],
    ['GPL-3+ with Bison exception', 'GPL-3.0-or-later WITH Bison-exception-2.2'],
    ['GPL-2+ with Texinfo exception', 'LicenseRef-gpl-2-plus-with-texinfo-exception'],
    ['ISC and/or LGPL-2.1+', 'ISC OR LGPL-2.1-or-later'],
    ['MIT AND (Apache-2.0 OR BSD-2-Clause)', 'MIT AND (Apache-2.0 OR BSD-2-Clause)'],
    ['GPL-2.0-only WITH Linux-syscall-note', 'GPL-2.0-only WITH Linux-syscall-note'],
    ['GPL-2.0-or-later LGPL-2.1-or-later', 'GPL-2.0-or-later AND LGPL-2.1-or-later'],
    ['custom', 'LicenseRef-custom'],
    ['public-domain', 'LicenseRef-public-domain'],
  ])('license %j is %j', (text, want) => {
    expect(licenseExpression(text)?.expression).toBe(want);
  });

  test.each(['', '(MIT', 'MIT)', 'MIT OR', 'AND MIT', 'x'.repeat(5000)])('license %j does not read as an expression', (text) => {
    expect(licenseExpression(text)).toBeUndefined();
  });

  test('DEP-5 copyright: the AND of the Files paragraphs, repeated ones once; a free-text file is not guessed at', () => {
    const text = 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\n'
      + 'Files: *\nCopyright: 2020 A\nLicense: GPL-2+\n\nFiles: lib/*\nCopyright: B\nLicense: LGPL-2.1+ or BSD-3-clause\n\nFiles: doc/*\nLicense: GPL-2+\n\n'
      + 'License: GPL-2+\n This program is free software...\n';
    expect(dep5License(text)?.expression).toBe('GPL-2.0-or-later AND (LGPL-2.1-or-later OR BSD-3-Clause)');
    expect(dep5License('This is the Debian prepackaged version of the Debian Base System\n\nLicense: GPL\n')).toBeUndefined();
  });

  test('os-release', () => {
    expect(parseOsRelease('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n')).toEqual({ id: 'debian', versionId: '12', prettyName: 'Debian GNU/Linux 12 (bookworm)' });
    expect(parseOsRelease('ID=alpine\nVERSION_ID=3.19.1\n')).toEqual({ id: 'alpine', versionId: '3.19.1' });
    expect(parseOsRelease('ID="../../x"\n')).toBeUndefined();
  });
});

describe('the SPDX document', () => {
  const inv: PackageInventory = {
    os: { id: 'debian', versionId: '12' },
    packages: [
      { manager: 'deb', name: 'bsdutils', version: '1:2.38.1-5+b1', arch: 'amd64', source: 'util-linux', maintainer: 'util-linux packagers <util-linux@packages.debian.org>', license: licenseExpression('GPL-2+ or custom')! },
      { manager: 'deb', name: 'base-files', version: '12.4+deb12u5', arch: 'amd64' },
    ],
    notes: ['a note'],
  };

  test('purls: namespace from os-release, version percent-encoded (epoch, +), arch and distro qualifiers', () => {
    expect(purlOf(inv.packages[0]!, inv.os)).toBe('pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bb1?arch=amd64&distro=debian-12&upstream=util-linux');
    expect(purlOf({ manager: 'apk', name: 'musl', version: '1.2.4-r2', arch: 'x86_64' }, { id: 'alpine', versionId: '3.19.1' })).toBe('pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1');
  });

  test('one package per database entry, CONTAINed by the rootfs the document DESCRIBES; LicenseRefs carried; deterministic', () => {
    const sha = 'a'.repeat(64);
    const doc = spdxDocument({ tag: 'acme/app:1.0', rootfsSha256: sha }, inv, '2024-05-01T10:11:12.345Z');
    expect(doc).toMatchObject({ spdxVersion: 'SPDX-2.3', dataLicense: 'CC0-1.0', SPDXID: 'SPDXRef-DOCUMENT', name: 'acme/app:1.0', comment: 'a note', creationInfo: { created: '2024-05-01T10:11:12Z' } });
    expect(doc.packages[0]).toMatchObject({ SPDXID: 'SPDXRef-Rootfs', name: 'acme/app', versionInfo: '1.0', checksums: [{ algorithm: 'SHA256', checksumValue: sha }] });
    // Sorted by name; every SPDXID an idstring and unique.
    expect(doc.packages.slice(1).map((p) => [p.name, p.versionInfo, p.licenseDeclared, p.supplier])).toEqual([
      ['base-files', '12.4+deb12u5', 'NOASSERTION', undefined],
      ['bsdutils', '1:2.38.1-5+b1', 'GPL-2.0-or-later OR LicenseRef-custom', 'Person: util-linux packagers (util-linux@packages.debian.org)'],
    ]);
    const ids = doc.packages.map((p) => p.SPDXID);
    for (const id of ids) expect(id).toMatch(/^SPDXRef-[A-Za-z0-9.-]+$/);
    expect(new Set(ids).size).toBe(ids.length);
    expect(doc.relationships).toEqual([
      { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: 'SPDXRef-Rootfs' },
      ...ids.slice(1).map((id) => ({ spdxElementId: 'SPDXRef-Rootfs', relationshipType: 'CONTAINS', relatedSpdxElement: id })),
    ]);
    expect(doc.hasExtractedLicensingInfos?.map((x) => x.licenseId)).toEqual(['LicenseRef-custom']);
    expect(JSON.stringify(spdxDocument({ tag: 'acme/app:1.0', rootfsSha256: sha }, { ...inv, packages: [...inv.packages].reverse() }, '2024-05-01T10:11:12.345Z'))).toBe(JSON.stringify(doc));
    expect(spdxTime('2024-05-01T10:11:12Z')).toBe('2024-05-01T10:11:12Z');
  });
});

describe('the inventory of an ext4 image (read in-process)', () => {
  const image = (name: string, files: Record<string, string | Buffer>, links: Record<string, string> = {}, sparse: Record<string, number> = {}): string => {
    const tree = path.join(dir, `${name}-tree`);
    for (const [p, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
      fs.writeFileSync(path.join(tree, p), data);
    }
    for (const [p, target] of Object.entries(links)) {
      fs.mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
      fs.symlinkSync(target, path.join(tree, p));
    }
    for (const [p, size] of Object.entries(sparse)) {
      fs.mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
      const fd = fs.openSync(path.join(tree, p), 'w');
      fs.writeSync(fd, Buffer.from('Package: x\n'), 0, 11, 0);
      fs.ftruncateSync(fd, size);
      fs.closeSync(fd);
    }
    const img = path.join(dir, `${name}.img`);
    mkfsFromDir(tree, img, { sizeMiB: 16 });
    return img;
  };
  const inventory = async (img: string): Promise<PackageInventory> => {
    const e = await Ext4Image.open(img, 'test');
    try {
      return await readInventory(e, 'image t/t:1');
    } finally {
      await e.close();
    }
  };

  test('Debian: dpkg status, status.d, licenses from copyright files, os-release through its symlink', async () => {
    const img = image('deb', {
      'usr/lib/os-release': 'ID=debian\nVERSION_ID="12"\n',
      'var/lib/dpkg/status': STATUS,
      'var/lib/dpkg/status.d/extra': 'Package: distroless-pkg\nArchitecture: amd64\nVersion: 3.0\n',
      'var/lib/dpkg/status.d/extra.md5sums': 'not a paragraph\n',
      'usr/share/doc/libc6/copyright': 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: LGPL-2.1+\n',
    }, { 'etc/os-release': '../usr/lib/os-release' });
    const inv = await inventory(img);
    expect(inv.os).toEqual({ id: 'debian', versionId: '12' });
    expect(inv.packages.map((p) => [p.name, p.license?.expression])).toEqual([
      ['base-files', undefined], ['libc6', 'LGPL-2.1-or-later'], ['tzdata', undefined], ['distroless-pkg', undefined],
    ]);
    expect(inv.notes).toEqual([expect.stringMatching(/^1 package database entry with a name, version or architecture the package manager does not allow were skipped/)]);
  });

  test('Alpine: the apk database; an rpm database is named in a note, not read', async () => {
    const img = image('apk', {
      'etc/os-release': 'ID=alpine\nVERSION_ID=3.19.1\n',
      'lib/apk/db/installed': 'P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\n',
      'var/lib/rpm/rpmdb.sqlite': 'SQLite format 3\0',
    });
    const inv = await inventory(img);
    expect(inv.packages.map((p) => `${p.manager}:${p.name}@${p.version}`)).toEqual(['apk:musl@1.2.4-r2']);
    expect(inv.notes).toEqual([expect.stringMatching(/rpm database \(\/var\/lib\/rpm\/rpmdb\.sqlite\).*not listed/)]);
  });

  test('hostile: a dpkg status over the cap is one line, refused from its size (nothing of it read)', async () => {
    const img = image('huge', {}, {}, { 'var/lib/dpkg/status': MAX_DB_BYTES + 1 });
    const started = Date.now();
    await expect(inventory(img)).rejects.toThrow(UserError);
    await expect(inventory(img)).rejects.toThrow(/^image t\/t:1: \/var\/lib\/dpkg\/status is larger than 64 MiB, more than firebuild reads from a package database: rebuild the image, or publish it without an SBOM$/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test('hostile: binary garbage is one line; printable garbage lists nothing; a huge copyright file is skipped with a note', async () => {
    const bin = image('bin', { 'var/lib/dpkg/status': randomBytes(256 * 1024) });
    await expect(inventory(bin)).rejects.toThrow(/^image t\/t:1: \/var\/lib\/dpkg\/status holds binary data \(NUL bytes\), not a package database firebuild can read/);
    const apkBin = image('apkbin', { 'lib/apk/db/installed': Buffer.concat([Buffer.from('P:x\nV:1\n'), Buffer.alloc(10)]) });
    await expect(inventory(apkBin)).rejects.toThrow(/\/lib\/apk\/db\/installed holds binary data/);
    const text = randomBytes(512 * 1024).toString('base64').replace(/(.{60})/g, '$1\n');
    const printable = image('printable', {
      'var/lib/dpkg/status': `${text}\n\n${STATUS}`,
      'usr/share/doc/libc6/copyright': `Format: x\n\nFiles: *\nLicense: MIT\n${'x'.repeat(1100 * 1024)}`,
    });
    const inv = await inventory(printable);
    expect(inv.packages.map((p) => [p.name, p.license])).toEqual([['base-files', undefined], ['libc6', undefined], ['tzdata', undefined]]);
    expect(inv.notes).toContainEqual(expect.stringMatching(/^1 Debian copyright file\(s\) over 1 MiB/));
  });

  test('no package database: an empty inventory, not an error', async () => {
    const inv = await inventory(image('none', { 'etc/hostname': 'x\n' }));
    expect(inv).toEqual({ packages: [], notes: [] });
  });
});
