// Prints one closing line for a vitest JSON report ("Tests: N passed, N failed, N skipped"),
// so whoever reads the end of a CI log sees what ran, in words any test runner would use.
import fs from 'node:fs';

const file = process.argv[2];
if (file === undefined) {
  console.error('usage: node scripts/test-summary.mjs REPORT.json');
  process.exit(2);
}
const report = JSON.parse(fs.readFileSync(file, 'utf8'));
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
console.log(
  `Tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`,
);
process.exit(report.numTotalTests > 0 && report.success ? 0 : 1);
