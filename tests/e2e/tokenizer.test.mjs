// lowart's BPE tokenizer against js-tiktoken, token id for token id, on a multilingual
// corpus (CJK, emoji, code, right-to-left scripts, whitespace and digit runs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getEncoding } from 'js-tiktoken';
import { spawnSync } from 'node:child_process';
import { LOWART_BIN, TIME_SCALE } from './harness.mjs';

const corpus = [
  'Hello, world! How are you today?',
  "It's a test: we'll see, they're sure, I'd say, you've got it, I'm in, she'll go.",
  'The capital of France is Paris. It sits on the Seine river and has about 2.1 million inhabitants.',
  '你好，世界！今天天气很好。我们去公园散步吧。',
  '日本語のテキストとカタカナ、ひらがな、漢字が混ざっています。',
  '한국어 문장도 토큰화되어야 합니다.',
  'Привет, мир! Это тест токенизатора.',
  'مرحبا بالعالم، هذا اختبار.',
  'שלום עולם',
  'Emoji: 🎉🚀👍🏽 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'for (int i = 0; i < 10; ++i) { std::cout << i << "\\n"; }',
  '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"temperature":0.7}',
  'Numbers 1234567890 3.14159 1e-9 0x1F 12,345,678',
  '   leading spaces, trailing spaces   \n\n\n  and\ttabs\t\tand\r\nwindows lines\r\n',
  'MiXeD CaSe WORDS and ALLCAPS and lowercase and CamelCaseIdentifiers',
  'Ünïcödé àccents: naïve café résumé façade — “quotes” ‘single’ … ellipsis',
  'https://example.com/path?query=1&x=y#frag user@example.com',
  '',
  'a',
  '\n',
  ' '.repeat(17) + 'x',
];

function lowartIds(encoding, text) {
  const r = spawnSync(LOWART_BIN, ['tokenize', '--encoding', encoding, '--ids'], { input: text, timeout: 20000 * TIME_SCALE });
  assert.equal(r.status, 0, r.stderr.toString());
  return JSON.parse(r.stdout.toString());
}

for (const encoding of ['o200k_base', 'cl100k_base']) {
  test(`${encoding}: token ids equal js-tiktoken's on the multilingual corpus`, () => {
    const enc = getEncoding(encoding);
    // One process per encoding: the corpus joined by a separator the pattern splits on,
    // plus each sample alone (pieces never cross sample boundaries that way).
    const mismatches = [];
    for (const text of corpus) {
      const expected = enc.encode(text);
      const got = lowartIds(encoding, text);
      if (JSON.stringify(got) !== JSON.stringify(expected))
        mismatches.push(`${JSON.stringify(text)}\n  expected ${JSON.stringify(expected)}\n  got      ${JSON.stringify(got)}`);
    }
    assert.deepEqual(mismatches, []);
  });
}

test('token counts agree on a long mixed document', () => {
  const enc = getEncoding('o200k_base');
  const doc = Array.from({ length: 50 }, (_, i) => corpus[i % corpus.length]).join('\n');
  const r = spawnSync(LOWART_BIN, ['tokenize', '--encoding', 'o200k_base'], { input: doc, timeout: 20000 * TIME_SCALE });
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(Number(r.stdout.toString().trim()), enc.encode(doc).length);
});

test('very long words (a hostile prompt) tokenize exactly and in linear-ish time', () => {
  // Pieces over 64 bytes take the heap-based merge; it must agree with tiktoken's order.
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; };
  const letters = 'abcdefghijklmnopqrstuvwxyzäöüßéèñ';
  const words = [
    'x'.repeat(5000),
    'ab'.repeat(3000),
    Array.from({ length: 4000 }, () => letters[rnd() % letters.length]).join(''),
    'Supercalifragilisticexpialidocious'.repeat(40),
    '東京'.repeat(700),
  ];
  for (const encoding of ['o200k_base', 'cl100k_base']) {
    const enc = getEncoding(encoding);
    for (const w of words) {
      const t0 = Date.now();
      const got = lowartIds(encoding, w);
      assert.ok(Date.now() - t0 < 5000 * TIME_SCALE, `${w.length}-char word took ${Date.now() - t0} ms`);
      assert.deepEqual(got, enc.encode(w), `${encoding}: ${w.slice(0, 20)}... (${w.length} chars)`);
    }
  }
});
