// `npm run docs`: writes the settings tables into README.md and docs/aws.md, between their
// `<!-- settings: … -->` and `<!-- settings:end -->` markers, from shared/config-doc.ts.
// test/unit/config-doc.test.ts fails when a table differs from what this would write.
import fs from 'node:fs';
import { settingsTable } from '../shared/config-doc.ts';

export const DOCUMENTS = [
  { file: 'README.md', deployment: false },
  { file: 'docs/aws.md', deployment: true },
] as const;

const START = /<!-- settings: [^\n]*-->\n/;
const END = '<!-- settings:end -->';

/** The document with its settings table as it should be. */
export function withTable(text: string, deployment: boolean): string {
  const start = START.exec(text);
  const end = text.indexOf(END);
  if (start === null || end < 0) throw new Error('no <!-- settings: --> … <!-- settings:end --> markers');
  const from = start.index + start[0].length;
  return `${text.slice(0, from)}${settingsTable(deployment)}\n${text.slice(end)}`;
}

if (process.argv[1]?.endsWith('settings-table.ts')) {
  for (const { file, deployment } of DOCUMENTS) {
    fs.writeFileSync(file, withTable(fs.readFileSync(file, 'utf8'), deployment));
    console.log(`wrote the settings table of ${file}`);
  }
}
