// The API reference, rendered from the server's own OpenAPI document: every operation with its
// parameters, body and answers, and the schemas they name, so it can never describe another
// version than the one answering.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, getJson } from '../api.ts';

interface Schema {
  readonly $ref?: string;
  readonly type?: string | readonly string[];
  readonly items?: Schema;
  readonly enum?: readonly unknown[];
  readonly description?: string;
  readonly [key: string]: unknown;
}

interface Parameter {
  readonly name: string;
  readonly in: string;
  readonly required?: boolean;
  readonly description?: string;
  readonly schema?: Schema;
}

interface Operation {
  readonly operationId?: string;
  readonly summary?: string;
  readonly tags?: readonly string[];
  readonly parameters?: readonly Parameter[];
  readonly requestBody?: {
    readonly description?: string;
    readonly content?: Record<string, { schema?: Schema }>;
  };
  readonly responses?: Record<
    string,
    { readonly description?: string; readonly content?: Record<string, { schema?: Schema }> }
  >;
}

interface Document {
  readonly info: { readonly title: string; readonly version: string; readonly description?: string };
  readonly paths: Record<string, Record<string, Operation>>;
  readonly components?: { readonly schemas?: Record<string, Schema> };
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

const refName = (ref: string): string => ref.slice(ref.lastIndexOf('/') + 1);

/** A schema in a few words: its name when it has one, else its type. */
function typeOf(schema: Schema | undefined): ComponentChildren {
  if (schema === undefined) return '';
  if (schema.$ref !== undefined) {
    const name = refName(schema.$ref);
    return <a href={`#/reference?schema=${encodeURIComponent(name)}`}>{name}</a>;
  }
  if (schema.enum !== undefined) return schema.enum.map((value) => JSON.stringify(value)).join(' | ');
  if (schema.type === 'array') return <>array of {typeOf(schema.items)}</>;
  return Array.isArray(schema.type) ? schema.type.join(' | ') : String(schema.type ?? 'any');
}

function OperationView({ method, path, operation }: { method: string; path: string; operation: Operation }) {
  const body = operation.requestBody?.content?.['application/json']?.schema;
  return (
    <details class="operation" id={operation.operationId}>
      <summary>
        <span class={`method method-${method}`}>{method.toUpperCase()}</span> <code>{path}</code>{' '}
        <span class="hint">{operation.summary}</span>
      </summary>
      {(operation.parameters ?? []).length > 0 && (
        <table>
          <caption>Parameters</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">In</th>
              <th scope="col">Type</th>
              <th scope="col">Description</th>
            </tr>
          </thead>
          <tbody>
            {(operation.parameters ?? []).map((parameter) => (
              <tr>
                <td>
                  <code>{parameter.name}</code>
                  {parameter.required ? ' (required)' : ''}
                </td>
                <td>{parameter.in}</td>
                <td>{typeOf(parameter.schema)}</td>
                <td>{parameter.description ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {body !== undefined && (
        <p>
          Body: {typeOf(body)}{' '}
          {operation.requestBody?.description ? `— ${operation.requestBody.description}` : ''}
        </p>
      )}
      <table>
        <caption>Answers</caption>
        <tbody>
          {Object.entries(operation.responses ?? {}).map(([status, response]) => {
            const schema = Object.values(response.content ?? {})[0]?.schema;
            return (
              <tr>
                <td class="number">{status}</td>
                <td>{response.description ?? ''}</td>
                <td>{typeOf(schema)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </details>
  );
}

export function ReferencePage({ query }: { query: URLSearchParams }) {
  const [document, setDocument] = useState<Document | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useEffect(() => {
    getJson<Document>('/v1/openapi.json')
      .then(setDocument)
      .catch((failure) => setError((failure as ApiError).message));
  }, []);
  if (error !== undefined) {
    return (
      <p class="error" role="alert">
        {error}
      </p>
    );
  }
  if (document === undefined) return <p aria-busy="true">Loading the API document…</p>;
  const schemaName = query.get('schema');
  const schema = schemaName === null ? undefined : document.components?.schemas?.[schemaName];
  const operations = Object.entries(document.paths).flatMap(([path, item]) =>
    METHODS.filter((method) => item[method] !== undefined).map((method) => ({
      path,
      method,
      operation: item[method] as Operation,
    })),
  );
  const groups = new Map<string, typeof operations>();
  for (const entry of operations) {
    const tag = entry.operation.tags?.[0] ?? 'Ferry';
    groups.set(tag, [...(groups.get(tag) ?? []), entry]);
  }
  return (
    <section aria-labelledby="reference-title">
      <h1 id="reference-title">
        {document.info.title} <span class="hint">{document.info.version}</span>
      </h1>
      <p>
        {operations.length} operations, from this server's <code>GET /v1/openapi.json</code> (OpenAPI 3.1).
      </p>
      {schemaName !== null && (
        <section class="schema" aria-labelledby="schema-title">
          <h2 id="schema-title">Schema {schemaName}</h2>
          {schema === undefined ? (
            <p class="error">No schema named {schemaName}.</p>
          ) : (
            <pre class="json">{JSON.stringify(schema, null, 2)}</pre>
          )}
          <a href="#/reference">Close</a>
        </section>
      )}
      {[...groups.entries()].map(([tag, entries]) => (
        <section aria-label={tag}>
          <h2>{tag}</h2>
          {entries.map((entry) => (
            <OperationView {...entry} />
          ))}
        </section>
      ))}
    </section>
  );
}
