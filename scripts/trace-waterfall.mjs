// Draws one trace as an SVG waterfall (the picture in the README's "Traces" section):
//   node scripts/trace-waterfall.mjs <spans.json> <out.svg>
// <spans.json> is a list of spans as test/support/otlp-receiver.ts collects them ({service, spanId, parentSpanId,
// name, startMs, endMs, status}); test/integration/traces.test.ts leaves one beside its processes' logs (trace.json).
import { readFileSync, writeFileSync } from 'node:fs';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node scripts/trace-waterfall.mjs <spans.json> <out.svg>');
  process.exit(2);
}
const spans = JSON.parse(readFileSync(input, 'utf8'));
const byId = new Map(spans.map((s) => [s.spanId, s]));
const children = new Map();
for (const s of spans) {
  const parent = byId.has(s.parentSpanId) ? s.parentSpanId : '';
  children.set(parent, [...(children.get(parent) ?? []), s]);
}
const rows = [];
const walk = (parent, depth) => {
  for (const s of (children.get(parent) ?? []).sort((a, b) => a.startMs - b.startMs || a.endMs - b.endMs)) {
    rows.push({ s, depth });
    walk(s.spanId, depth + 1);
  }
};
walk('', 0);

const t0 = Math.min(...spans.map((s) => s.startMs));
const t1 = Math.max(...spans.map((s) => s.endMs));
const ROW = 20;
const LABEL = 330;
const WIDTH = 1100;
const TOP = 44;
const plot = WIDTH - LABEL - 70;
const x = (ms) => LABEL + ((ms - t0) / Math.max(1, t1 - t0)) * plot;
const height = TOP + rows.length * ROW + 30;
const colour = { 'imgbuilder-api': '#4c78a8', 'imgbuilder-worker': '#f58518' };
const esc = (t) => String(t).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const out = [];
out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="DejaVu Sans Mono, monospace" font-size="12">`);
out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
out.push(`<text x="8" y="18" font-weight="bold">One Build, one trace: ${spans.length} spans, ${((t1 - t0) / 1000).toFixed(2)} s</text>`);
let lx = LABEL;
for (const [svc, c] of Object.entries(colour)) {
  out.push(`<rect x="${lx}" y="8" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="18">${svc}</text>`);
  lx += 170;
}
out.push(`<rect x="${lx}" y="8" width="12" height="12" fill="#d62728"/><text x="${lx + 16}" y="18">error</text>`);
const step = [100, 200, 250, 500, 1000, 2000, 5000].find((s) => (t1 - t0) / s <= 10) ?? 10000;
for (let t = 0; t <= t1 - t0; t += step) {
  const gx = x(t0 + t);
  out.push(`<line x1="${gx}" y1="${TOP - 6}" x2="${gx}" y2="${height - 24}" stroke="#e5e5e5"/>`);
  out.push(`<text x="${gx}" y="${height - 10}" text-anchor="middle" fill="#666">${(t / 1000).toFixed(step < 1000 ? 1 : 0)} s</text>`);
}
rows.forEach(({ s, depth }, i) => {
  const y = TOP + i * ROW;
  if (i % 2) out.push(`<rect x="0" y="${y - 2}" width="${WIDTH}" height="${ROW}" fill="#f7f7f7"/>`);
  const name = s.name.length > 40 - depth ? `${s.name.slice(0, 38 - depth)}…` : s.name;
  out.push(`<text x="${8 + depth * 12}" y="${y + 12}">${esc(name)}</text>`);
  const bx = x(s.startMs);
  const bw = Math.max(1.5, x(s.endMs) - bx);
  const fill = s.status?.code === 2 ? '#d62728' : (colour[s.service] ?? '#999');
  out.push(`<rect x="${bx.toFixed(1)}" y="${y + 2}" width="${bw.toFixed(1)}" height="${ROW - 6}" rx="2" fill="${fill}"><title>${esc(`${s.service}: ${s.name} — ${s.endMs - s.startMs} ms`)}</title></rect>`);
  out.push(`<text x="${(bx + bw + 4).toFixed(1)}" y="${y + 12}" fill="#555">${s.endMs - s.startMs} ms</text>`);
});
out.push('</svg>');
writeFileSync(output, `${out.join('\n')}\n`);
console.log(`wrote ${output}: ${rows.length} spans`);
