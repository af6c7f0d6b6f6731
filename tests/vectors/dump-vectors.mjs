// Writes every C2SP/CCTV age test vector exported by the npm package cctv-age to a directory,
// one file per vector, named as in the package. Vectors stored zlib-compressed (key
// "compressed: zlib") are written inflated, without that key, so the C++ test needs no zlib.
// Usage: node dump-vectors.mjs <output-dir>
import * as vectors from 'cctv-age';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const out = process.argv[2];
if (!out) {
  console.error('usage: node dump-vectors.mjs <output-dir>');
  process.exit(2);
}
fs.mkdirSync(out, { recursive: true });

let count = 0;
for (const [name, bytes] of Object.entries(vectors)) {
  if (!(bytes instanceof Uint8Array) || !/^[a-z0-9_]+$/.test(name)) continue;
  const data = Buffer.from(bytes);
  const split = data.indexOf('\n\n');
  if (split < 0) throw new Error(`vector ${name}: no blank line after its header`);
  const lines = data.subarray(0, split).toString('utf8').split('\n');
  let body = data.subarray(split + 2);
  const compressed = lines.find((l) => l.startsWith('compressed: '));
  if (compressed !== undefined) {
    if (compressed !== 'compressed: zlib') throw new Error(`vector ${name}: ${compressed}`);
    body = zlib.inflateSync(body);
  }
  const header = lines.filter((l) => !l.startsWith('compressed: ')).join('\n');
  fs.writeFileSync(path.join(out, name), Buffer.concat([Buffer.from(header + '\n\n'), body]));
  count++;
}
if (count === 0) throw new Error('cctv-age exported no vectors');
console.log(`wrote ${count} age test vectors to ${out}`);
