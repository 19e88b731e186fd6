import * as fsp from 'node:fs/promises';

/**
 * Docker's ADD extracts a local file when it is a tar archive, plain or compressed with gzip, bzip2 or
 * xz; it decides by content, not by name.
 */
export async function isArchive(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    const b = buf.subarray(0, bytesRead);
    if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return true; // gzip
    if (b.length >= 3 && b.toString('latin1', 0, 3) === 'BZh') return true; // bzip2
    if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true; // xz
    if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return true; // zstd
    return b.length >= 262 && b.toString('latin1', 257, 262) === 'ustar'; // tar
  } finally {
    await fh.close();
  }
}
