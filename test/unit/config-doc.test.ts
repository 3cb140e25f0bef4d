// The settings tables in the README and docs/aws.md are the ones shared/config-doc.ts renders,
// and each documented default is the schema's own: neither can drift from the settings Ferry reads.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DOCUMENTS, withTable } from '../../scripts/settings-table.ts';
import { EnvSchema, loadConfig } from '../../shared/config.ts';
import { SETTINGS, type SettingName } from '../../shared/config-doc.ts';

describe('the settings tables', () => {
  it.each(DOCUMENTS)(
    '$file holds the table rendered from the settings (npm run docs writes it)',
    ({ file, deployment }) => {
      const text = fs.readFileSync(file, 'utf8');

      expect(text).toBe(withTable(text, deployment));
    },
  );

  it('documents each default the schema gives, as the schema gives it', () => {
    const defaults = (Object.keys(EnvSchema.shape) as SettingName[]).flatMap((name) => {
      const parsed = EnvSchema.shape[name].safeParse(undefined);
      return parsed.success && parsed.data !== undefined ? [[name, parsed.data] as const] : [];
    });

    expect(defaults.length).toBeGreaterThan(10);
    for (const [name, value] of defaults) {
      const shown = Array.isArray(value) ? value.join(',') : String(value);
      const documented = SETTINGS[name].default;
      // An empty list is no default at all.
      if (shown === '') expect(documented, name).toBe('—');
      else if (name === 'FERRY_MAX_OUTPUT_BYTES') expect(documented).toBe('`256MiB`');
      else expect(documented, name).toContain(`\`${shown}\``);
    }
    expect(loadConfig({}).policy.maxOutputBytes).toBe(256 * 1024 * 1024);
  });
});
