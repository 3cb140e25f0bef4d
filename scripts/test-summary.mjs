// Prints one closing line for one or more vitest JSON reports ("Tests: N passed, N failed, N skipped"),
// so whoever reads the end of a CI log sees what ran, in words any test runner would use.
import fs from 'node:fs';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/test-summary.mjs REPORT.json…');
  process.exit(2);
}
let passed = 0;
let failed = 0;
let skipped = 0;
let total = 0;
let success = true;
for (const file of files) {
  const report = JSON.parse(fs.readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  total += report.numTotalTests;
  success &&= report.success === true;
}
console.log(`Tests: ${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
process.exit(total > 0 && success ? 0 : 1);
