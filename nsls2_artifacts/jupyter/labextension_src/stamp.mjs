// After `jupyter-builder build`: record which sources the committed build was made from,
// so tests/test_labextension.py can tell a stale build (same recipe in Python there).
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// every input of the build (the lock too: a bumped dependency makes the build stale)
const SOURCES = ['package.json', 'package-lock.json', 'rspack.config.js', 'tsconfig.json', 'src', 'style'];
const OUT = '../labextensions/nsls2-artifacts-lab/build-sources.json';

function files(path) {
  try {
    return readdirSync(path, { withFileTypes: true })
      .flatMap(entry => files(join(path, entry.name)));
  } catch {
    return [path];
  }
}

const hash = createHash('sha256');
for (const file of SOURCES.flatMap(files).sort()) {
  hash.update(file + '\0');
  hash.update(readFileSync(file));
  hash.update('\0');
}
const version = JSON.parse(readFileSync('package.json', 'utf8')).version;
writeFileSync(OUT, JSON.stringify({ version, sources_sha256: hash.digest('hex') }, null, 2) + '\n');
