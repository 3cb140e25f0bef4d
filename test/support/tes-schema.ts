// Checks a TES response body against the official TES 1.1 schema, kept offline as a fixture
// (test/fixtures/tes-1.1/schemas.json, transcribed from ga4gh/task-execution-schemas), and
// against what the spec's `view` parameter says a returned task holds in each view.
import { readFileSync } from 'node:fs';
import { Ajv2020, type ErrorObject, type SchemaObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

export type TesSchemaKind =
  | 'tesTask'
  | 'tesListTasksResponse'
  | 'tesCreateTaskResponse'
  | 'tesCancelTaskResponse'
  | 'tesServiceInfo';
export type TesSchemaView = 'MINIMAL' | 'BASIC' | 'FULL';

type Defs = Record<string, SchemaObject>;

const official = JSON.parse(
  readFileSync(new URL('../fixtures/tes-1.1/schemas.json', import.meta.url), 'utf8'),
) as { $schema: string; $defs: Defs };

// strictTypes would refuse the published schema: it gives booleans a format (below).
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false });
addFormats.default(ajv);
// OpenAPI's data formats, which JSON Schema does not define. size_bytes is the one int64 and is
// a string, as protobuf's JSON writes an int64.
ajv.addFormat('int32', {
  type: 'number',
  validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31,
});
ajv.addFormat('int64', {
  type: 'string',
  validate: (s) => /^-?\d+$/.test(s) && BigInt(s) >= -(2n ** 63n) && BigInt(s) < 2n ** 63n,
});
ajv.addFormat('double', { type: 'number', validate: () => true });
// tesResources gives two booleans `format: boolean`, which says nothing more.
ajv.addFormat('boolean', true);

/**
 * The $defs a task in `view` is checked with. The spec's view parameter: MINIMAL holds ONLY id
 * and state; BASIC all fields except executor logs' stdout and stderr, inputs' content and
 * task logs' system_logs; FULL all fields. Every view thus holds id and state, which the
 * published tesTask leaves optional only because it is also CreateTask's request body.
 */
function defsFor(view: TesSchemaView | undefined): Defs {
  const defs = structuredClone(official.$defs);
  if (view === undefined) return defs;
  const task = defs.tesTask as SchemaObject;
  if (view === 'MINIMAL') {
    defs.tesTask = {
      ...task,
      required: ['id', 'state'],
      properties: { id: task.properties.id, state: task.properties.state },
      additionalProperties: false,
    };
    return defs;
  }
  task.required = [...task.required, 'id', 'state'];
  if (view === 'BASIC') {
    const leaveOut = (name: string, ...fields: string[]) => {
      for (const field of fields) (defs[name] as SchemaObject).properties[field] = false;
    };
    leaveOut('tesExecutorLog', 'stdout', 'stderr');
    leaveOut('tesInput', 'content');
    leaveOut('tesTaskLog', 'system_logs');
  }
  return defs;
}

const compiled = new Map<string, ValidateFunction>();

function validatorFor(kind: TesSchemaKind, view: TesSchemaView | undefined): ValidateFunction {
  const key = `${kind} ${view ?? ''}`;
  let validate = compiled.get(key);
  if (validate === undefined) {
    validate = ajv.compile({ $schema: official.$schema, $defs: defsFor(view), $ref: `#/$defs/${kind}` });
    compiled.set(key, validate);
  }
  return validate;
}

function violation(error: ErrorObject, view: TesSchemaView | undefined): string {
  const at = error.instancePath === '' ? '(body)' : error.instancePath;
  if (error.keyword === 'false schema') return `${at} is left out of the ${view} view`;
  // The published schemas allow any other field; only a MINIMAL task is closed.
  if (error.keyword === 'additionalProperties') {
    const field = `${at === '(body)' ? '' : at}/${error.params.additionalProperty}`;
    return `${field} is left out of the MINIMAL view (only id and state)`;
  }
  if (error.keyword === 'enum') return `${at} ${error.message}: ${error.params.allowedValues.join(', ')}`;
  return `${at} ${error.message}`;
}

/**
 * Throws, listing every violation, unless `body` is a TES 1.1 `kind`. Tasks (alone or in a
 * list) are checked in `view` when given: pass the view the request asked for, MINIMAL when it
 * asked for none (the spec's default). Without a view a task is checked against tesTask as
 * published, which requires executors.
 */
export function expectTesShape(
  kind: TesSchemaKind,
  body: unknown,
  options: { readonly view?: TesSchemaView } = {},
): void {
  const { view } = options;
  if (view !== undefined && kind !== 'tesTask' && kind !== 'tesListTasksResponse') {
    throw new Error(`a view applies to tasks, not to ${kind}`);
  }
  const validate = validatorFor(kind, view);
  if (validate(body)) return;
  const violations = [...new Set((validate.errors ?? []).map((error) => violation(error, view)))];
  throw new Error(
    `not a TES 1.1 ${kind}${view === undefined ? '' : ` in the ${view} view`}:\n${violations
      .map((v) => `  - ${v}`)
      .join('\n')}`,
  );
}
