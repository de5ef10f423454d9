// Reads the shards of a save_to_disk directory with Apache Arrow JS and
// prints {"schema": [...], "rows": {column: [...]}} as JSON, so a C++ test can
// compare the writer's output with what an independent Arrow implementation
// decodes.
// Usage: node read_prepared.mjs DIR
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';

const dir = process.argv[2];
const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));

// BigInt values (int64) do not survive JSON.stringify; they are small here.
const plain = (value) => {
  if (typeof value === 'bigint') return Number(value);
  if (value !== null && typeof value === 'object' && typeof value[Symbol.iterator] === 'function') {
    return Array.from(value, plain);
  }
  return value;
};

let schema = null;
const rows = {};
for (const { filename } of state._data_files) {
  const table = tableFromIPC(readFileSync(join(dir, filename)));
  const fields = table.schema.fields.map((field) => ({
    name: field.name,
    type: String(field.type),
    nullable: field.nullable,
    children: (field.type.children ?? []).map((child) => child.name),
  }));
  schema ??= { fields, metadata: Object.fromEntries(table.schema.metadata) };
  for (const field of table.schema.fields) {
    const column = table.getChild(field.name);
    rows[field.name] ??= [];
    for (let i = 0; i < column.length; i++) rows[field.name].push(plain(column.get(i)));
  }
}
process.stdout.write(JSON.stringify({ schema, rows }));
