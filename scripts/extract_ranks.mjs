// Writes the BPE ranks that the npm package js-tiktoken ships as plain files lowart
// reads: "<base64 token> <rank>" per line, plus "<name>.pattern" with the
// pre-tokenizer regex. Usage: node extract_ranks.mjs <js-tiktoken dir> <out dir> <names...>
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkgDir, outDir, ...names] = process.argv.slice(2);
if (!pkgDir || !outDir || names.length === 0) {
  console.error('usage: extract_ranks.mjs <js-tiktoken dir> <out dir> <encoding...>');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
for (const name of names) {
  const mod = await import(pathToFileURL(path.join(pkgDir, 'dist', 'ranks', `${name}.js`)).href);
  const { bpe_ranks: packed, pat_str: pattern, special_tokens: special } = mod.default;
  // The package's packed form: "! <first rank> <token> <token> ..." groups; ranks count up.
  const lines = [];
  let rank = 0;
  const words = packed.split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    if (words[i] === '!') {
      rank = Number.parseInt(words[++i], 10);
      continue;
    }
    lines.push(`${words[i]} ${rank++}`);
  }
  fs.writeFileSync(path.join(outDir, `${name}.tiktoken`), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(outDir, `${name}.pattern`), pattern);
  fs.writeFileSync(path.join(outDir, `${name}.special.json`), JSON.stringify(special));
  console.log(`${name}: ${lines.length} ranks`);
}
