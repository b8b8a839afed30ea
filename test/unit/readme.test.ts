import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { readmeWithSettings } from '../../scripts/settings-doc.ts';

test('README configuration reference matches the settings table (node scripts/settings-doc.ts --write)', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  assert.equal(readme, readmeWithSettings(readme));
});
