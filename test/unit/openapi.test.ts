import { describe, expect, it } from 'vitest';
import { routes } from '../../functions/api.ts';
import { documentedRoutes, openApiDocument } from '../../shared/http/openapi.ts';
import { buildTestCore } from '../support/core.ts';

describe('OpenAPI document', () => {
  it('lists exactly the routes the API serves', async () => {
    const { core } = await buildTestCore();
    const served = routes(core).map((r) => `${r.method} ${r.path}`);
    expect(documentedRoutes().sort()).toEqual(served.sort());
  });

  it('describes the job spec from the schema that validates it', () => {
    const spec = openApiDocument().components.schemas.JobSpec as {
      required?: string[];
      additionalProperties?: unknown;
      properties: Record<string, { additionalProperties?: unknown }>;
    };
    expect(spec.required).toEqual(['image', 'command']);
    expect(spec.additionalProperties).toBe(false);
    expect(spec.properties.resources?.additionalProperties).toBe(false);
    expect(Object.keys(spec.properties)).toContain('outputLimits');
  });
});
