// The guided tour: runs start to finish without a terminal, its diagrams are
// well-formed SVG, the ones in docs/ are what the tour draws today, and its
// ring snapshots show what the spec says each step changes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { describe, expect, it } from 'vitest';

import { recordTour } from '../src/tour/tour.js';

const root = resolve(import.meta.dirname, '..');

describe('virtio-tap tour', () => {
  it('runs start to finish without a terminal (--no-pause) and writes well-formed SVGs, the same as docs/img', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vt-tour-'));
    try {
      const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
      const r = spawnSync(process.execPath, [tsx, 'src/cli/main.ts', 'tour', '--no-pause', '--svg', dir], {
        cwd: root,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 60_000,
      });
      expect(r.stderr).not.toMatch(/Error/);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('The split ring: one frame out of the guest, one frame in');
      expect(r.stdout).toContain('The packed ring: one frame out of the guest, one frame in');
      expect(r.stdout.match(/Step 12\/12:/g)?.length).toBe(2);
      const files = readdirSync(dir).filter((f) => f.endsWith('.svg')).sort();
      expect(files.length).toBeGreaterThanOrEqual(12);
      // Well-formed: a real XML parser reads every file, and the root is an <svg> with a size.
      const check = spawnSync(
        'python3',
        ['-c', 'import sys, xml.etree.ElementTree as E\nfor f in sys.argv[1:]:\n  r = E.parse(f).getroot()\n  assert r.tag.endswith("svg") and float(r.get("width")) > 0, f\nprint(len(sys.argv) - 1)', ...files.map((f) => join(dir, f))],
        { encoding: 'utf8' },
      );
      expect(check.stderr).toBe('');
      expect(check.stdout.trim()).toBe(String(files.length));
      // docs/ shows today's ring state: `npm run docs` remakes these files.
      const docs = readdirSync(join(root, 'docs', 'img')).filter((f) => f.startsWith('tour-')).sort();
      expect(docs).toEqual(files);
      for (const f of files) expect(readFileSync(join(root, 'docs', 'img', f), 'utf8'), `${f}: run npm run docs`).toBe(readFileSync(join(dir, f), 'utf8'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('split: the snapshots change as §2.7 says, step by step', async () => {
    const steps = await recordTour('split');
    const ring = (title: RegExp) => {
      const s = steps.find((x) => title.test(x.title))?.ring?.snapshot;
      if (s?.layout !== 'split') throw new Error(`no split snapshot for ${title}`);
      return s;
    };
    const posted = ring(/posts receive buffers/);
    expect(posted.avail.idx).toBe(4);
    expect(posted.desc.every((d) => d.len === 2048 && d.flags === 2)).toBe(true); // VIRTQ_DESC_F_WRITE
    const available = ring(/makes a chain available/);
    expect(available.avail.idx).toBe(1);
    expect(available.used.idx).toBe(0);
    expect(available.desc[0]!.len).toBe(12); // the header, then the frame
    expect(available.desc[0]!.flags & 1).toBe(1);
    const used = ring(/^Out: the device returns/);
    expect(used.used.idx).toBe(1);
    expect(used.used.ring[0]).toEqual({ id: 0, len: 0 });
    const rxUsed = ring(/^In: the device returns/);
    expect(rxUsed.used.ring[0]!.len).toBe(12 + 42); // header and the 42-byte ARP reply
    const reposted = ring(/posts the buffer again/);
    expect(reposted.avail.idx).toBe(5); // past the ring size: free-running
  });

  it('packed: the used descriptor and the second lap of the wrap counter', async () => {
    const steps = await recordTour('packed');
    const ring = (title: RegExp) => {
      const s = steps.find((x) => title.test(x.title))?.ring?.snapshot;
      if (s?.layout !== 'packed') throw new Error(`no packed snapshot for ${title}`);
      return s;
    };
    const AVAIL = 1 << 7;
    const USED = 1 << 15;
    const used = ring(/^In: the device returns/);
    expect(used.desc[0]!.flags & (AVAIL | USED)).toBe(AVAIL | USED); // used on lap 1
    expect(used.desc[0]!.len).toBe(54);
    const reposted = ring(/posts the buffer again/);
    expect(reposted.desc[0]!.flags & (AVAIL | USED)).toBe(USED); // available on lap 2: AVAIL=0, USED=1
  });
});
