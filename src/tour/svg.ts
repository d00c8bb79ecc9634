// A ring snapshot drawn as SVG: the same tables as the text view, changed
// cells shaded. Deterministic: the same ring state gives the same file.
import { ringTables, type RingSnapshot } from './snapshot.js';

const CHAR = 7.2; // width of one monospace character at FONT px
const FONT = 12;
const ROW = 18;
const PAD = 6;
const GAP = 24;

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** One SVG document: a caption, then the queue's tables side by side. */
export function renderRingSvg(s: RingSnapshot, caption: string, before?: RingSnapshot): string {
  const tables = ringTables(s, before);
  const parts: string[] = [];
  let x = PAD;
  const top = PAD + 2 * ROW + 4;
  let height = 0;
  for (const t of tables) {
    const widths = t.header.map((h, ci) => (Math.max(h.length, ...t.rows.map((r) => r[ci]!.length)) + 2) * CHAR);
    const w = Math.max(
      widths.reduce((a, b) => a + b, 0),
      (t.title.length + 1) * CHAR,
    );
    if (w > widths.reduce((a, b) => a + b, 0)) widths[widths.length - 1]! += w - widths.reduce((a, b) => a + b, 0);
    parts.push(`<text x="${x}" y="${top - 6}" class="title">${escapeXml(t.title)}</text>`);
    const rows = [t.header, ...t.rows];
    rows.forEach((r, ri) => {
      let cx = x;
      const y = top + ri * ROW;
      r.forEach((c, ci) => {
        const changed = ri > 0 && t.changed[ri - 1]![ci] === true;
        const cls = ri === 0 ? 'head' : changed ? 'changed' : 'cell';
        parts.push(`<rect x="${cx.toFixed(1)}" y="${y}" width="${widths[ci]!.toFixed(1)}" height="${ROW}" class="${cls}"/>`);
        parts.push(`<text x="${(cx + CHAR).toFixed(1)}" y="${y + ROW - 5}"${ri === 0 ? ' class="bold"' : ''}>${escapeXml(c)}</text>`);
        cx += widths[ci]!;
      });
    });
    height = Math.max(height, top + rows.length * ROW);
    x += w + GAP;
  }
  const width = Math.ceil(Math.max(x - GAP + PAD, (caption.length + 2) * CHAR * 1.1));
  const h = height + PAD + ROW;
  const legend = before !== undefined ? 'shaded: changed since the previous step' : '';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h}" viewBox="0 0 ${width} ${h}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="${FONT}">`,
    '<style>.cell{fill:#fff;stroke:#999}.head{fill:#e8eef7;stroke:#999}.changed{fill:#ffe58a;stroke:#b08800}.title{font-weight:bold}.bold{font-weight:bold}.caption{font-size:13px;font-weight:bold}.legend{fill:#555}</style>',
    `<rect x="0" y="0" width="${width}" height="${h}" fill="#fafafa"/>`,
    `<text x="${PAD}" y="${PAD + 13}" class="caption">${escapeXml(caption)}</text>`,
    `<text x="${PAD}" y="${h - 6}" class="legend">${escapeXml(`${s.name}, ${s.layout} layout, size ${s.addresses.size}. ${legend}`)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
