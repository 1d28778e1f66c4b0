import { readFileSync } from 'node:fs';

/** Self size (bytes) and count of one kind of heap object: V8's node type and its constructor or function name. */
export interface HeapGroup {
  what: string;
  count: number;
  bytes: number;
}

export interface HeapSummary {
  totalBytes: number;
  nodes: number;
  /** Every group, biggest self size first. */
  all: HeapGroup[];
}

/**
 * Groups a `.heapsnapshot` (V8's JSON format) by node type and name, summing self sizes: where the live heap goes,
 * without DevTools. A snapshot of a big heap outgrows V8's longest string, so the node array is read from the bytes
 * directly and only the header and the string table go through JSON.parse.
 */
export function summarizeHeapSnapshot(file: string): HeapSummary {
  const buf = readFileSync(file);
  const nodesAt = buf.indexOf('"nodes":[');
  const edgesAt = buf.indexOf('"edges":[', nodesAt);
  const stringsAt = buf.indexOf('"strings":[', edgesAt);
  if (nodesAt < 0 || edgesAt < 0 || stringsAt < 0) throw new Error(`${file}: not a V8 heap snapshot`);
  const header = JSON.parse(buf.subarray(0, nodesAt).toString('utf8').replace(/,\s*$/, '') + '}') as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  };
  const fields = header.snapshot.meta.node_fields;
  const types = header.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeF, nameF, sizeF] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const end = buf.lastIndexOf(']', buf.lastIndexOf('}'));
  const strings = JSON.parse(buf.subarray(stringsAt + '"strings":'.length, end + 1).toString('utf8')) as string[];

  const groups = new Map<string, HeapGroup>();
  let totalBytes = 0;
  let nodes = 0;
  let field = 0;
  let num = -1;
  const row: number[] = new Array<number>(width).fill(0);
  const flush = () => {
    row[field++] = num;
    num = -1;
    if (field < width) return;
    field = 0;
    nodes++;
    const type = types[row[typeF]] ?? 'unknown';
    // Strings and numbers group by type alone: their "names" are their contents.
    const what = type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'number' ? type : `${type} ${strings[row[nameF]] ?? '?'}`;
    let g = groups.get(what);
    if (!g) groups.set(what, (g = { what, count: 0, bytes: 0 }));
    g.count++;
    g.bytes += row[sizeF];
    totalBytes += row[sizeF];
  };
  for (let i = nodesAt + '"nodes":['.length; i < edgesAt; i++) {
    const c = buf[i];
    if (c >= 48 && c <= 57) num = (num < 0 ? 0 : num * 10) + (c - 48);
    else if (num >= 0) flush();
    if (c === 93) break; // ']'
  }
  return { totalBytes, nodes, all: [...groups.values()].sort((a, b) => b.bytes - a.bytes) };
}
