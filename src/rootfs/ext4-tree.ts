import { UserError } from '../util/errors.js';
import type { Ext4Time, Extents, Kind } from './ext4-layout.js';

/**
 * The in-memory inode tree of the userspace ext4 writer: nodes (one per inode; hard links share one),
 * directories as ordered name maps, layer generations for opaque directories, and path resolution with
 * chroot semantics (parent symlinks resolve inside the image, `..` stops at its root; in a layer, a
 * symlink an earlier layer made is not followed but replaced by a directory, as Docker's overlay2 does). Names are image
 * names only: nothing here touches the host file system.
 */
export interface NodeMeta {
  /** Permission bits incl. setuid/setgid/sticky (& 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Ext4Time;
  atime?: Ext4Time;
  ctime?: Ext4Time;
  /** Full names: 'security.capability', 'user.x', 'trusted.x', 'system.posix_acl_access' (VFS format). */
  xattrs?: Map<string, Buffer>;
}

export interface Node {
  kind: Kind;
  meta: NodeMeta;
  /** Names (directory entries) pointing at this node. */
  names: number;
  /** Assigned in finish(). */
  ino: number;
  /** Regular files: byte size and data extents (directories get theirs in finish()). */
  size: number;
  ext: Extents;
  children?: Map<string, Child>;
  target?: Buffer;
  rdev?: { major: number; minor: number };
}

export interface Child { node: Node; gen: number }

const MAX_SYMLINKS = 40;

/** Shared by nodes without extents yet; never written to (the first extent makes a node its own array). */
const NO_EXTENTS: Extents = Object.freeze([]) as unknown as Extents;

export function newNode(kind: Kind, meta: NodeMeta): Node {
  const n: Node = { kind, meta, names: 0, ino: 0, size: 0, ext: NO_EXTENTS };
  if (kind === 'dir') n.children = new Map();
  return n;
}

/** Path components: '/'-separated, leading '/' optional, '' and '.' dropped; '..', NUL and over-long names refused. */
export function components(p: string): string[] {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw new UserError(`the image path ${JSON.stringify(p.slice(0, 200))} has a '..' component: image paths stay inside the image`);
    if (c.includes('\0')) throw new UserError(`the image path ${JSON.stringify(p.slice(0, 200))} holds a NUL byte`);
    if (Buffer.byteLength(c, 'utf8') > 255) throw new UserError(`the name ${JSON.stringify(c.slice(0, 80))}... in ${JSON.stringify(p.slice(0, 200))} is longer than ext4's 255 bytes`);
    out.push(c);
  }
  return out;
}

export class Tree {
  readonly root: Node;
  gen = 0;
  /** Data extents of files that lost their last name: finish() zeroes them, so no removed content stays in the image. */
  readonly freed: Extents[] = [];

  constructor(rootMeta: NodeMeta) {
    this.root = newNode('dir', rootMeta);
    this.root.names = 1;
  }

  /**
   * The directory that holds the last component of `p`, and that name. Parents resolve through symlinks
   * inside the image; missing ones are created (0755 root:root) when `create`, else undefined.
   */
  parentOf(p: string, create: boolean): { dir: Node; name: string } | undefined {
    const comps = components(p);
    const name = comps.pop();
    if (name === undefined) return undefined;
    const dir = this.walk(comps, create, p);
    return dir ? { dir, name } : undefined;
  }

  /** Follows `comps` from the root (every component, symlinks included) to a directory. */
  private walk(comps: string[], create: boolean, p: string): Node | undefined {
    let stack: Node[] = [this.root];
    const queue = [...comps];
    let links = 0;
    while (queue.length > 0) {
      const c = queue.shift() as string;
      const cur = stack[stack.length - 1] as Node;
      if (c === '.' || c === '') continue;
      if (c === '..') { if (stack.length > 1) stack.pop(); continue; }
      const child = cur.children?.get(c);
      if (!child) {
        if (!create) return undefined;
        const d = newNode('dir', { mode: 0o755, uid: 0, gid: 0, mtime: this.root.meta.mtime });
        this.link(cur, c, d);
        stack.push(d);
        continue;
      }
      const n = child.node;
      if (n.kind === 'dir') { stack.push(n); continue; }
      if (n.kind === 'symlink' && this.gen > 0 && child.gen < this.gen) {
        // A layer's path through a lower layer's symlink: Docker's overlay2 unpacks each layer into a
        // directory of its own, where `lib/x` makes a directory `lib` that hides the lower symlink.
        if (!create) return undefined;
        const d = newNode('dir', { mode: 0o755, uid: 0, gid: 0, mtime: this.root.meta.mtime });
        this.link(cur, c, d);
        stack.push(d);
        continue;
      }
      if (n.kind === 'symlink') {
        if (++links > MAX_SYMLINKS) throw new UserError(`too many levels of symbolic links resolving the image path ${JSON.stringify(p.slice(0, 200))}`);
        const t = (n.target as Buffer).toString('utf8');
        if (t.startsWith('/')) stack = [this.root];
        queue.unshift(...t.split('/'));
        continue;
      }
      if (!create) return undefined;
      throw new UserError(`cannot write the image path ${JSON.stringify(p.slice(0, 200))}: its parent ${JSON.stringify(c)} is not a directory`);
    }
    return stack[stack.length - 1];
  }

  /** The entry at `p` (last component not followed); the root for '/'. */
  lookup(p: string): Node | undefined {
    const at = this.parentOf(p, false);
    if (!at) return components(p).length === 0 ? this.root : undefined;
    return at.dir.children?.get(at.name)?.node;
  }

  /** Puts `node` at `name` in `dir`, replacing what was there (a directory's subtree goes with it). */
  link(dir: Node, name: string, node: Node): void {
    const kids = dir.children as Map<string, Child>;
    const old = kids.get(name);
    if (old?.node === node) { old.gen = this.gen; return; }
    if (old) { kids.delete(name); this.drop(old.node); }
    node.names++;
    kids.set(name, { node, gen: this.gen });
  }

  remove(p: string): void {
    const at = this.parentOf(p, false);
    const kids = at?.dir.children;
    const old = at ? kids?.get(at.name) : undefined;
    if (!at || !kids || !old) return;
    kids.delete(at.name);
    this.drop(old.node);
  }

  /** Opaque directory: everything under `p` not added in the current generation goes (Docker's rule). */
  clearDir(p: string): void {
    const n = this.lookup(p);
    if (n?.kind === 'dir') this.clear(n);
  }

  // clear() and drop() keep their own stacks: a tree may be far deeper than the JS stack (an archive
  // nests 70,000+ directories with a few dozen entries by paths through symlinks).
  private clear(top: Node): void {
    const todo = [top];
    for (let dir = todo.pop(); dir; dir = todo.pop()) {
      for (const [name, c] of [...(dir.children as Map<string, Child>)]) {
        if (c.gen < this.gen) {
          dir.children?.delete(name);
          this.drop(c.node);
        } else if (c.node.kind === 'dir') {
          todo.push(c.node);
        }
      }
    }
  }

  /** One name of `top` is gone; a directory's children lose theirs with it. */
  private drop(top: Node): void {
    const todo = [top];
    for (let n = todo.pop(); n; n = todo.pop()) {
      n.names--;
      if (n.names > 0) continue;
      if (n.kind === 'dir') {
        for (const c of (n.children as Map<string, Child>).values()) todo.push(c.node);
        n.children?.clear();
      } else if (n.ext.length > 0) {
        this.freed.push(n.ext);
      }
    }
  }
}
